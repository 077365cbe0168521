using System.Diagnostics;

namespace Corral.Runtimes;

public sealed record RuntimeCommandResult(int ExitCode, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;

    public string Message => Stderr.Trim().Length > 0 ? Stderr.Trim() : Stdout.Trim();
}

/// <summary>Runs short commands (runtime kill, delete, list; `ip`, `nft`) to completion, never longer than a deadline.</summary>
public static class RuntimeCommandRunner
{
    /// <param name="stdin">Written to the command's stdin before it is closed (a script for `ip -batch -`, `nft -f -`).</param>
    public static async Task<RuntimeCommandResult> RunAsync(RuntimeInvocation invocation, TimeSpan deadline, CancellationToken cancellationToken = default, string? stdin = null)
    {
        using var process = Process.Start(invocation.StartInfo()) ?? throw new InvalidOperationException($"could not start {invocation.FileName}");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin.AsMemory(), cancellationToken).ConfigureAwait(false);
        }

        process.StandardInput.Close();
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
