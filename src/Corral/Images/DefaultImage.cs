using System.Diagnostics;
using Corral.Common;

namespace Corral.Images;

/// <summary>
/// The image `corral run` uses when given no rootfs: a real Debian root filesystem with python3,
/// built once with debootstrap into Corral's data directory and reused.
/// </summary>
public sealed class DefaultImage(string dataDir)
{
    public const string Suite = "bookworm";

    public string Directory => Path.Combine(dataDir, "images", "default");

    public string RootfsPath => Path.Combine(Directory, "rootfs");

    private string ReadyMarker => Path.Combine(Directory, "ready");

    public bool IsReady => File.Exists(ReadyMarker) && System.IO.Directory.Exists(RootfsPath);

    /// <summary>Builds the image unless it is there; concurrent callers wait for one build.</summary>
    public async Task<string> EnsureAsync(IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        if (IsReady)
        {
            return RootfsPath;
        }

        System.IO.Directory.CreateDirectory(Directory);
        using var buildLock = await AcquireLockAsync(cancellationToken).ConfigureAwait(false);
        if (IsReady)
        {
            return RootfsPath;
        }

        if (RuntimeLocate("debootstrap") is null)
        {
            throw new CorralException("debootstrap is needed to build the default image: apt-get install debootstrap");
        }

        var partial = RootfsPath + ".partial";
        if (System.IO.Directory.Exists(partial))
        {
            System.IO.Directory.Delete(partial, recursive: true);
        }

        var info = new ProcessStartInfo("debootstrap")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "--variant=minbase", "--include=python3-minimal", Suite, partial })
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info) ?? throw new CorralException("could not start debootstrap");
        var errors = new List<string>();
        var stderrTask = Task.Run(async () =>
        {
            while (await process.StandardError.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
            {
                lock (errors)
                {
                    errors.Add(line);
                }
            }
        }, cancellationToken);
        while (await process.StandardOutput.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
        {
            progress?.Report(line);
        }

        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        await stderrTask.ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            var tail = string.Join(" | ", errors.TakeLast(3));
            System.IO.Directory.Delete(partial, recursive: true);
            throw new CorralException($"debootstrap failed with exit code {process.ExitCode}: {tail}");
        }

        if (System.IO.Directory.Exists(RootfsPath))
        {
            System.IO.Directory.Delete(RootfsPath, recursive: true);
        }

        System.IO.Directory.Move(partial, RootfsPath);
        await File.WriteAllTextAsync(ReadyMarker, $"debootstrap --variant=minbase --include=python3-minimal {Suite}\n", cancellationToken).ConfigureAwait(false);
        return RootfsPath;
    }

    private static string? RuntimeLocate(string binary) => Runtimes.RuntimeCommandRunner.Locate(binary);

    private async Task<FileStream> AcquireLockAsync(CancellationToken cancellationToken)
    {
        var path = Path.Combine(Directory, ".lock");
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                await Task.Delay(500, cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
