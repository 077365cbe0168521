using System.Diagnostics;
using Corral.Client;
using Corral.Interop;
using Corral.IntegrationTests.Infrastructure;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>The real daemon (`corral serve`), started from its build output on a temp socket and state dir.</summary>
public sealed class DaemonProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Task<string> _output;
    private bool _keepRoot;

    private DaemonProcess(Process process, string root, Task<string> output)
    {
        _process = process;
        _output = output;
        Root = root;
    }

    public string Root { get; }

    public string SocketPath => Path.Combine(Root, "corral.sock");

    public string StateDir => Path.Combine(Root, "state");

    public int Pid => _process.Id;

    public CorralClient Client { get; private set; } = null!;

    /// <summary>The daemon's own stderr and stdout, once it exited.</summary>
    public Task<string> Output => _output;

    public static string DaemonDll
    {
        get
        {
            var configuration = AppContext.BaseDirectory.Contains("/bin/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";
            return Path.Combine(CorralProcess.RepoRoot, "src", "Corral.Daemon", "bin", configuration, "net10.0", "Corral.Daemon.dll");
        }
    }

    /// <summary>
    /// `corral serve` that is expected to refuse its options and exit at once, on a socket and state dir
    /// of its own: how it ended, and whether it left its socket behind.
    /// </summary>
    public static async Task<(CorralResult Result, bool SocketLeft)> RefuseAsync(params string[] args)
    {
        var root = Directory.CreateTempSubdirectory("corral-refused-").FullName;
        try
        {
            var socket = Path.Combine(root, "corral.sock");
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
            foreach (var arg in (string[])[DaemonDll, "--socket", socket, "--state-dir", Path.Combine(root, "state"), "--shim", CorralProcess.Cli, .. args])
            {
                info.ArgumentList.Add(arg);
            }

            using var process = Process.Start(info)!;
            process.StandardInput.Close();
            var result = await CorralProcess.CollectAsync(process, Stopwatch.StartNew(), TimeSpan.FromSeconds(60));
            return (result, File.Exists(socket));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>Starts a daemon; with <paramref name="root"/>, on the socket and state of an earlier one (a restart).</summary>
    /// <param name="extraArgs">More `corral serve` options (--listen, --capacity-cpus, --data-dir ...).</param>
    public static Task<DaemonProcess> StartAsync(params string[] extraArgs) => StartInAsync(null, extraArgs);

    public static async Task<DaemonProcess> StartInAsync(string? root, params string[] extraArgs)
    {
        RuntimeCheck.Require("runc");
        RuntimeCheck.Require("runsc");
        root ??= Path.Combine(Path.GetTempPath(), "corral-daemon-test-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // A slower host (the emulated cgroup v2 guest) gets a start deadline scaled like the tests' own.
        string[] scaled = TestHost.TimeScale > 1 && !extraArgs.Contains("--start-timeout") ? ["--start-timeout", $"{(int)(60 * TestHost.TimeScale)}s"] : [];
        foreach (var arg in (string[])[DaemonDll, "--socket", Path.Combine(root, "corral.sock"), "--state-dir", Path.Combine(root, "state"), "--shim", CorralProcess.Cli, .. scaled, .. extraArgs])
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["DOTNET_NOLOGO"] = "1";
        var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        var daemon = new DaemonProcess(process, root, Task.WhenAll(stdout, stderr).ContinueWith(t => string.Concat(t.Result), TaskScheduler.Default));
        daemon.Client = CorralClient.Connect(daemon.SocketPath);
        var deadline = Stopwatch.StartNew();
        while (!await daemon.Client.IsServingAsync(TestContext.Current.CancellationToken))
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"the daemon exited with {process.ExitCode}: {await daemon.Output}");
            }

            if (deadline.Elapsed > TestHost.Scaled(TimeSpan.FromSeconds(30)))
            {
                await daemon.DisposeAsync();
                throw new TimeoutException("the daemon did not serve within 30s");
            }

            await Task.Delay(50, TestContext.Current.CancellationToken);
        }

        return daemon;
    }

    /// <summary>SIGKILL, as a crash would end it: its sandboxes' shims go on; the root is kept for a restart.</summary>
    public async Task KillHardAsync()
    {
        _keepRoot = true;
        _ = LibC.kill(_process.Id, 9);
        await _process.WaitForExitAsync(TestContext.Current.CancellationToken);
    }

    /// <summary>SIGTERM, as a service manager stops it; returns its exit code.</summary>
    public async Task<int> StopAsync(TimeSpan bound)
    {
        if (!_process.HasExited)
        {
            _ = LibC.kill(_process.Id, 15);
        }

        using var cts = new CancellationTokenSource(bound);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
            throw new TimeoutException($"the daemon did not stop within {bound.TotalSeconds}s of SIGTERM: {await Output}");
        }

        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        if (!_process.HasExited)
        {
            await StopAsync(TimeSpan.FromSeconds(60));
        }

        _process.Dispose();
        if (!_keepRoot)
        {
            // Sandboxes a test did not remove keep their roots mounted (their files can still be copied
            // out): detached first, so the delete never walks into an overlay or a disk.
            foreach (var mount in File.ReadAllLines("/proc/self/mountinfo").Select(l => l.Split(' ')[4]).Where(m => m.StartsWith(Root + "/", StringComparison.Ordinal)).OrderByDescending(m => m.Length))
            {
                _ = LibC.umount2(mount, LibC.MNT_DETACH);
            }

            Directory.Delete(Root, recursive: true);
        }
    }
}

/// <summary>One daemon shared by the daemon tests; at the end it must stop cleanly and have left nothing.</summary>
public sealed class DaemonFixture : IAsyncLifetime
{
    private readonly List<string> _ids = [];

    public DaemonProcess Daemon { get; private set; } = null!;


    public CorralClient Client => Daemon.Client;

    public string Rootfs { get; private set; } = null!;

    /// <summary>Records an id for the final leak check.</summary>
    public string Track(string id)
    {
        lock (_ids)
        {
            _ids.Add(id);
        }

        return id;
    }

    public async ValueTask InitializeAsync()
    {
        Rootfs = await TestHost.RootfsAsync();
        Daemon = await DaemonProcess.StartAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (Daemon is null)
        {
            return;
        }

        var exitCode = await Daemon.StopAsync(TimeSpan.FromSeconds(60));
        var output = await Daemon.Output;
        await Daemon.DisposeAsync();

        // The daemon's log, for a failure that only its side explains.
        var logDir = Path.Combine(CorralProcess.RepoRoot, ".build", "test-results");
        Directory.CreateDirectory(logDir);
        await File.WriteAllTextAsync(Path.Combine(logDir, $"daemon-{Environment.ProcessId}.log"), output);
        if (exitCode != 0)
        {
            throw new InvalidOperationException($"the daemon exited with {exitCode} on SIGTERM: {output}");
        }

        var leaks = new List<string>();
        foreach (var id in _ids)
        {
            leaks.AddRange(await TestHost.LeaksAsync(id));
        }

        if (leaks.Count > 0)
        {
            throw new InvalidOperationException("left behind after the daemon stopped: " + string.Join("; ", leaks));
        }
    }
}

[CollectionDefinition(Name)]
public sealed class DaemonCollection : ICollectionFixture<DaemonFixture>
{
    public const string Name = "daemon";
}

/// <summary>
/// Tests that load the whole machine (a hundred sandboxes, timing against the bare runtime) get a
/// daemon of their own and run after every parallel collection, so they neither perturb nor are
/// perturbed by the timing-sensitive tests.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DaemonLoadCollection : ICollectionFixture<DaemonFixture>
{
    public const string Name = "daemon-load";
}
