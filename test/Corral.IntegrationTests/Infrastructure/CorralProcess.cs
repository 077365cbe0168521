using System.Diagnostics;
using System.Text;

namespace Corral.IntegrationTests.Infrastructure;

/// <summary>The outcome of one `corral` invocation, as a user's shell would see it.</summary>
public sealed record CorralResult(int ExitCode, string Stdout, string Stderr, DateTimeOffset ExitedAt, TimeSpan Elapsed);

/// <summary>Runs the real `corral` CLI (the build ./corral makes) as a child process.</summary>
public static class CorralProcess
{
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The native binary ./corral builds and runs.</summary>
    public static string Cli => Path.Combine(RepoRoot, ".build", "cli", "Corral.Cli");

    public static Process Start(IEnumerable<string> args, string? stdin = null)
    {
        var info = new ProcessStartInfo(Cli)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["DOTNET_NOLOGO"] = "1";
        var process = Process.Start(info)!;
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
        }

        process.StandardInput.Close();
        return process;
    }

    public static async Task<CorralResult> RunAsync(IEnumerable<string> args, TimeSpan? hangDeadline = null, string? stdin = null)
    {
        var watch = Stopwatch.StartNew();
        using var process = Start(args, stdin);
        return await CollectAsync(process, watch, TestHost.Scaled(hangDeadline ?? TimeSpan.FromSeconds(90)));
    }

    public static async Task<CorralResult> CollectAsync(Process process, Stopwatch watch, TimeSpan hangDeadline)
    {
        var stdout = process.StandardOutput.BaseStream.ReadToEndAsync();
        var stderr = process.StandardError.BaseStream.ReadToEndAsync();
        var exited = new TaskCompletionSource<DateTimeOffset>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => exited.TrySetResult(DateTimeOffset.UtcNow);
        if (process.HasExited)
        {
            exited.TrySetResult(DateTimeOffset.UtcNow);
        }

        if (await Task.WhenAny(exited.Task, Task.Delay(hangDeadline)) != exited.Task)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"corral did not return within {hangDeadline.TotalSeconds}s");
        }

        var exitedAt = await exited.Task;
        var elapsed = watch.Elapsed;
        await process.WaitForExitAsync();
        return new CorralResult(process.ExitCode, Encoding.UTF8.GetString(await stdout), Encoding.UTF8.GetString(await stderr), exitedAt, elapsed);
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Corral.slnx")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("repository root (Corral.slnx) not found");
    }
}

internal static class StreamExtensions
{
    public static async Task<byte[]> ReadToEndAsync(this Stream stream)
    {
        using var buffer = new MemoryStream();
        await stream.CopyToAsync(buffer);
        return buffer.ToArray();
    }
}
