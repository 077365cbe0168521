using System.Diagnostics;

namespace Corral.Runtimes;

public sealed record RuntimeCommandResult(int ExitCode, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;

    public string Message => Stderr.Trim().Length > 0 ? Stderr.Trim() : Stdout.Trim();
}

/// <summary>Runs short runtime commands (kill, delete, list) to completion, never longer than a deadline.</summary>
public static class RuntimeCommandRunner
{
    public static async Task<RuntimeCommandResult> RunAsync(RuntimeInvocation invocation, TimeSpan deadline, CancellationToken cancellationToken = default)
    {
        using var process = Process.Start(invocation.StartInfo()) ?? throw new InvalidOperationException($"could not start {invocation.FileName}");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(deadline);
        try
        {
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            return new RuntimeCommandResult(-1, string.Empty, $"{invocation} did not finish within {deadline.TotalSeconds:0.#}s");
        }

        return new RuntimeCommandResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary>Full path of <paramref name="binary"/> found on PATH, or null.</summary>
    public static string? Locate(string binary)
    {
        if (binary.Contains('/'))
        {
            return File.Exists(binary) ? binary : null;
        }

        var path = Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        return path.Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, binary))
            .FirstOrDefault(File.Exists);
    }
}
