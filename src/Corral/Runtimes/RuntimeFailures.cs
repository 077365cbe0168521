using System.Text.Json;

namespace Corral.Runtimes;

/// <summary>
/// Tells "the runtime failed" from "the workload exited": runc's and crun's own errors go to their JSON
/// log in the bundle (`--log`), gVisor's to stderr as a FATAL line with exit 128, a status no workload can give.
/// </summary>
public static class RuntimeFailures
{
    /// <summary>The log runc writes its own errors to, in the bundle.</summary>
    public const string RuncLogName = "runtime.log";

    private const int MaxMessage = 400;

    /// <summary>
    /// The runtime's own error (one line) when it, not the workload, decided <paramref name="exitCode"/>;
    /// null when the code is the workload's.
    /// </summary>
    public static string? Find(RuntimeKind kind, string? bundleDir, int exitCode, string stderrTail)
    {
        if (exitCode > 128)
        {
            // 128+S: the workload's PID 1 was killed by signal S.
            return null;
        }

        // crun takes runc's --log/--log-format json and writes its own errors there the same way.
        return kind is RuntimeKind.Runc or RuntimeKind.Crun ? FromRuncLog(bundleDir) : exitCode == 128 ? FromRunscStderr(stderrTail) : null;
    }

    private static string? FromRuncLog(string? bundleDir)
    {
        if (bundleDir is null)
        {
            return null;
        }

        string[] lines;
        try
        {
            var path = Path.Combine(bundleDir, RuncLogName);
            if (!File.Exists(path) || new FileInfo(path).Length > 1 << 20)
            {
                return null;
            }

            lines = File.ReadAllLines(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        string? error = null;
        foreach (var line in lines)
        {
            try
            {
                using var entry = JsonDocument.Parse(line);
                if (entry.RootElement.TryGetProperty("level", out var level) && level.GetString() is "error" or "fatal" or "panic"
                    && entry.RootElement.TryGetProperty("msg", out var msg))
                {
                    error = msg.GetString();
                }
            }
            catch (JsonException)
            {
            }
        }

        return error is null ? null : OneLine(error);
    }

    private static string FromRunscStderr(string stderrTail)
    {
        var lines = stderrTail.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var line in lines.Reverse())
        {
            var fatal = line.IndexOf("FATAL ERROR:", StringComparison.Ordinal);
            if (fatal >= 0)
            {
                return OneLine(line[(fatal + "FATAL ERROR:".Length)..]);
            }
        }

        return lines.Length > 0 ? OneLine(lines[^1]) : "runsc exited 128 without a message";
    }

    internal static string OneLine(string text)
    {
        var line = string.Join(' ', text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Trim();
        return line.Length > MaxMessage ? line[..MaxMessage] + "…" : line;
    }
}
