using System.Diagnostics;
using System.Globalization;
using Corral.Cgroups;
using Corral.Common;
using Corral.Images;
using Corral.Logging;
using Corral.Oci;
using Corral.Oom;
using Corral.Runtimes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Corral.Supervision;

public sealed class SupervisorOptions
{
    /// <summary>Bundles and live-container records; on tmpfs so a host restart clears them.</summary>
    public string StateDir { get; set; } = "/run/corral";

    /// <summary>The runtime must have started the workload by then (runsc on a spinning platform never does).</summary>
    public TimeSpan StartTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>After PID 1 died, how long output still in flight may take to arrive.</summary>
    public TimeSpan OutputDrainGrace { get; set; } = TimeSpan.FromSeconds(2);

    public int OutputTailBytes { get; set; } = 4096;

    /// <summary>How long the runtime may take for kill and delete calls.</summary>
    public TimeSpan RuntimeCommandDeadline { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Grace between SIGTERM and SIGKILL when the caller cancels the run.</summary>
    public TimeSpan CancelGrace { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Memory gVisor's own sandbox (sentry, gofer) needs on top of what the user asked for: the cgroup
    /// around a gVisor sandbox is limited to --memory plus this, so the program gets what it asked.
    /// Measured here: the same python workload peaked 14-15 MiB higher under runsc than under runc
    /// (idle 19 vs 5 MiB, 20 MB buffer 40 vs 25 MiB, 200 MB buffer 220 vs 205 MiB); 24 MiB leaves margin.
    /// </summary>
    public long GvisorMemoryAllowanceBytes { get; set; } = 24L << 20;

    /// <summary>Below this a runtime cannot even start its init.</summary>
    public long MinimumMemoryBytes { get; set; } = 8L << 20;
}

/// <summary>Callbacks a caller gets while a container runs, in order: started, oom*, exited.</summary>
public interface IContainerObserver
{
    void OnStarted(string id, int pid)
    {
    }

    void OnOom(string id, OomEvent oom)
    {
    }

    void OnExited(ExitRecord record)
    {
    }
}

/// <summary>Where the container's stdout and stderr go; null discards (the tail is still kept).</summary>
public sealed record ContainerIo(Stream? Stdout, Stream? Stderr)
{
    public static ContainerIo Discard { get; } = new(null, null);
}

/// <summary>
/// Runs one container from request to exit record: validates, owns its cgroup, starts the runtime
/// inside it, watches for OOM, decides the exit from the process (never from pipe EOF), and leaves
/// nothing behind.
/// </summary>
public sealed class ContainerSupervisor(
    SupervisorOptions options,
    RuntimeOptions runtimeOptions,
    ICgroupDriver? cgroupDriver,
    IOomWatcherFactory? oomWatchers,
    TimeProvider time,
    ILogger<ContainerSupervisor>? logger = null)
{
    private readonly ILogger _logger = logger ?? (ILogger)NullLogger.Instance;

    public ContainerStateStore Store { get; } = new(options.StateDir);

    public async Task<ExitRecord> RunAsync(ContainerRequest request, ContainerIo io, IContainerObserver? observer = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(io);
        observer ??= NullObserver.Instance;
        var id = request.Id ?? ContainerId.Generate();
        var runtime = ContainerRuntimes.Create(request.Runtime, runtimeOptions);
        var command = Validate(request, id, runtime);

        var startedAt = time.GetUtcNow();
        var startTimestamp = time.GetTimestamp();
        Store.Claim(new ContainerState
        {
            Id = id,
            Runtime = runtime.Name,
            RuntimeRoot = runtime.Root,
            SupervisorPid = Environment.ProcessId,
            CreatedAt = startedAt,
            Command = request.Command,
            MemoryLimitBytes = request.Limits.MemoryBytes,
        });

        var run = new ContainerRun(id, runtime, request, command);
        try
        {
            return await RunClaimedAsync(run, io, observer, startedAt, startTimestamp, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await CleanupAsync(run).ConfigureAwait(false);
        }
    }

    /// <summary>Signals a container this host runs, then SIGKILLs it if it is still alive after <paramref name="grace"/>.</summary>
    public async Task KillAsync(string id, int signal, TimeSpan grace, CancellationToken cancellationToken = default)
    {
        ContainerId.Validate(id);
        var state = Store.Get(id) ?? throw new CorralException($"no such container: {id}", 1);
        var runtime = RuntimeFor(state);
        await SignalAsync(runtime, id, signal, cgroup: null, cancellationToken).ConfigureAwait(false);
        if (signal == Signals.SIGKILL)
        {
            return;
        }

        var deadline = time.GetTimestamp() + (long)(grace.TotalSeconds * time.TimestampFrequency);
        while (time.GetTimestamp() < deadline)
        {
            if (Store.Get(id) is null || !runtime.HasState(id))
            {
                return;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), time, cancellationToken).ConfigureAwait(false);
        }

        if (Store.Get(id) is not null && runtime.HasState(id))
        {
            await SignalAsync(runtime, id, Signals.SIGKILL, cgroupDriver?.Open(id), cancellationToken).ConfigureAwait(false);
        }
    }

    public CgroupStats? ReadStats(string id) => cgroupDriver?.Open(ContainerId.Validate(id))?.ReadStats();

    /// <summary>
    /// Checks a request as <see cref="RunAsync"/> would, creating nothing: for a caller that runs the
    /// container elsewhere (the daemon's per-sandbox shim) and must refuse bad input at once.
    /// </summary>
    public void Validate(ContainerRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        _ = Validate(request, request.Id ?? ContainerId.Generate(), ContainerRuntimes.Create(request.Runtime, runtimeOptions));
    }

    /// <summary>
    /// Removes what the supervisor of <paramref name="id"/> left when it died without cleaning up
    /// (SIGKILL, a crash): the runtime's container and state, the overlay, the cgroup with every process
    /// in it, the bundle and the claim. Safe to call when some or all of it is already gone.
    /// </summary>
    public async Task ReclaimAsync(string id, RuntimeKind kind)
    {
        ContainerId.Validate(id);
        var runtime = ContainerRuntimes.Create(kind, runtimeOptions);
        var bundle = Path.Combine(options.StateDir, "bundles", id);
        var run = new ContainerRun(id, runtime, null, [])
        {
            BundleDir = bundle,
            OverlayTarget = Path.Combine(bundle, "rootfs"),
            Cgroup = cgroupDriver?.Open(id),
        };
        Log.Reclaiming(_logger, id, runtime.Name);
        await ForceStopAsync(run).ConfigureAwait(false);
        await CleanupAsync(run).ConfigureAwait(false);
    }

    private IContainerRuntime RuntimeFor(ContainerState state)
    {
        ContainerRuntimes.TryParse(state.Runtime, out var kind);
        return ContainerRuntimes.Create(kind, runtimeOptions);
    }

    private IReadOnlyList<string> Validate(ContainerRequest request, string id, IContainerRuntime runtime)
    {
        ContainerId.Validate(id);
        if (request.Command.Count == 0 || string.IsNullOrEmpty(request.Command[0]))
        {
            throw new CorralException("no command given: corral run [options] -- CMD [ARGS...]");
        }

        if (request.ImageLayers is { } layers)
        {
            if (layers.Count == 0 || layers.Any(l => !Directory.Exists(l)))
            {
                throw new CorralException($"image '{request.Rootfs}' has missing layers; pull it again");
            }
        }

        var rootfs = request.ImageLayers is null ? Path.GetFullPath(request.Rootfs) : null;
        if (rootfs is not null && !Directory.Exists(rootfs))
        {
            throw new CorralException($"rootfs '{request.Rootfs}' does not exist or is not a directory");
        }

        try
        {
            _ = rootfs is null || Directory.EnumerateFileSystemEntries(rootfs).Any();
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or IOException)
        {
            throw new CorralException($"rootfs '{request.Rootfs}' is not readable: {ex.Message}");
        }

        if (request.Workdir is { } workdir && !workdir.StartsWith('/'))
        {
            throw new CorralException($"invalid --workdir '{workdir}': must be an absolute path");
        }

        ValidateEnvNames(request.Env);

        if (request.Limits.MemoryBytes is { } memory && memory < options.MinimumMemoryBytes)
        {
            throw new CorralException($"invalid --memory {ByteSize.Format(memory)}: at least {ByteSize.Format(options.MinimumMemoryBytes)} is needed to start a container");
        }

        if (request.Limits.Cpus is { } cpus && (cpus < 0.01 || cpus > Environment.ProcessorCount * 64 || double.IsNaN(cpus)))
        {
            throw new CorralException($"invalid --cpus {cpus.ToString(CultureInfo.InvariantCulture)}: must be between 0.01 and the host's CPUs");
        }

        if (request.Limits.Pids is { } pids && pids < 1)
        {
            throw new CorralException($"invalid --pids {pids}: must be at least 1");
        }

        var binary = runtime.Kind == RuntimeKind.Runc ? runtimeOptions.RuncPath : runtimeOptions.RunscPath;
        if (RuntimeCommandRunner.Locate(binary) is null)
        {
            throw new CorralException($"runtime binary '{binary}' for {runtime.Name} not found; install it (apt-get install {(runtime.Kind == RuntimeKind.Runc ? "runc" : "runsc")}) or set its path");
        }

        if (request.Gpu)
        {
            _ = GpuDevices.Discover();
        }

        if (rootfs is not null)
        {
            ValidateInRootfs(request, rootfs);
        }

        return [.. request.Command];
    }

    private static void ValidateInRootfs(ContainerRequest request, string rootfs) =>
        ValidateInRootfs(rootfs, request.Command[0], request.Env.LastOrDefault(kv => kv.Key == "PATH").Value ?? SpecBuilder.DefaultPath, request.Workdir);

    /// <summary>
    /// The command (unless null) and working directory must exist as the container sees its root: for
    /// PID 1 (`run`) and for an exec alike.
    /// </summary>
    internal static void ValidateInRootfs(string rootfs, string? command, string path, string? workdir)
    {
        if (command is not null && RootfsResolver.FindExecutable(rootfs, command, path) is null)
        {
            throw new CorralException($"command not found in the container's root filesystem: {command}", CorralExitCodes.CommandNotFound) { BadInput = true };
        }

        if (workdir is { } dir && !IsMountedInContainer(dir) && !(RootfsResolver.Resolve(rootfs, dir) is { } hostDir && Directory.Exists(hostDir)))
        {
            throw new CorralException($"invalid --workdir '{dir}': no such directory in the container's root filesystem") { BadInput = true };
        }
    }

    internal static void ValidateEnvNames(IEnumerable<KeyValuePair<string, string>> env)
    {
        foreach (var (key, _) in env)
        {
            if (key.Length == 0 || key.Contains('=') || key.Contains('\0'))
            {
                throw new CorralException($"invalid environment variable name '{key}'");
            }
        }
    }

    /// <summary>Directories the spec mounts over the root (tmpfs /tmp, /dev, /proc, /sys): not on the host's rootfs.</summary>
    private static bool IsMountedInContainer(string dir) =>
        dir is "/tmp" or "/dev" or "/proc" or "/sys" || dir.StartsWith("/tmp/", StringComparison.Ordinal);

    private async Task<ExitRecord> RunClaimedAsync(ContainerRun run, ContainerIo io, IContainerObserver observer, DateTimeOffset startedAt, long startTimestamp, CancellationToken cancellationToken)
    {
        var request = run.Request;
        var runtime = run.Runtime;
        run.BundleDir = Path.Combine(options.StateDir, "bundles", run.Id);
        if (Directory.Exists(run.BundleDir))
        {
            OverlayRootfs.Unmount(Path.Combine(run.BundleDir, "rootfs"));
            Directory.Delete(run.BundleDir, recursive: true);
        }

        Directory.CreateDirectory(run.BundleDir);
        var pidFile = Path.Combine(run.BundleDir, "init.pid");
        var rootfsPath = Path.GetFullPath(request.Rootfs);
        if (request.ImageLayers is { } layers)
        {
            run.OverlayTarget = Path.Combine(run.BundleDir, "rootfs");
            rootfsPath = OverlayRootfs.Mount(run.BundleDir, layers);
            ValidateInRootfs(request, rootfsPath);
        }

        var cgroupLimits = request.Limits;
        if (runtime.Kind == RuntimeKind.Gvisor && cgroupLimits.MemoryBytes is { } asked)
        {
            cgroupLimits = cgroupLimits with { MemoryBytes = asked + options.GvisorMemoryAllowanceBytes };
        }

        if (cgroupDriver is not null)
        {
            run.Cgroup = cgroupDriver.Create(run.Id, cgroupLimits);
        }
        else
        {
            Log.NoCgroup(_logger, run.Id);
        }

        Log.ContainerStarting(_logger, run.Id, runtime.Name, request.Rootfs, cgroupLimits.MemoryBytes, run.Cgroup?.Version.ToString() ?? "none");

        var spec = SpecBuilder.Build(new SpecInput
        {
            RootfsPath = rootfsPath,
            Args = run.Command,
            Env = request.Env,
            Workdir = request.Workdir ?? "/",
            Hostname = run.Id.Length <= 63 ? run.Id : "corral",
            CgroupsPath = runtime.LaunchesInsideCgroup ? null : run.Cgroup?.RuntimeCgroupsPath,
            Devices = request.Gpu ? GpuDevices.Discover() : [],
        });
        // Not cancellable: a stop asked for this early is handled below like any other, with an exit record.
        await File.WriteAllTextAsync(Path.Combine(run.BundleDir, "config.json"), SpecBuilder.ToJson(spec), CancellationToken.None).ConfigureAwait(false);

        var memoryLimitMb = (cgroupLimits.MemoryBytes ?? 0) >> 20;
        run.Watcher = oomWatchers?.Create(run.Cgroup, cgroupLimits.MemoryBytes, () => run.Process?.Id);
        run.Watcher?.Start(oom =>
        {
            lock (run.OomEvents)
            {
                run.OomEvents.Add(new OomEventRecord(oom.Kind.ToString().ToLowerInvariant(), oom.At, oom.OomKills, oom.Detail));
            }

            var pid = run.Pid ?? 0;
            switch (oom.Kind)
            {
                case OomEventKind.Kill:
                    Log.OomKill(_logger, run.Id, pid, oom.OomKills, memoryLimitMb);
                    break;
                case OomEventKind.Livelock:
                    Log.OomLivelock(_logger, run.Id, pid, memoryLimitMb, oom.Detail);
                    run.Cgroup?.KillAll();
                    break;
                default:
                    Log.OomLikely(_logger, run.Id, pid, memoryLimitMb, oom.Detail);
                    break;
            }

            observer.OnOom(run.Id, oom);
        });

        var invocation = runtime.Run(run.Id, run.BundleDir, pidFile, request.Gpu);
        var process = StartRuntimeProcess(invocation, runtime.LaunchesInsideCgroup ? run.Cgroup : null);
        run.Process = process;
        var exited = new TaskCompletionSource<DateTimeOffset>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.Exited += (_, _) => exited.TrySetResult(time.GetUtcNow());
        process.EnableRaisingEvents = true;
        if (process.HasExited)
        {
            exited.TrySetResult(time.GetUtcNow());
        }

        var stdout = new OutputPump(process.StandardOutput.BaseStream, io.Stdout, options.OutputTailBytes);
        var stderr = new OutputPump(process.StandardError.BaseStream, io.Stderr, options.OutputTailBytes);

        // Started: the runtime wrote the init pid (signalled before we wait on the exit).
        var startDeadline = startTimestamp + (long)(options.StartTimeout.TotalSeconds * time.TimestampFrequency);
        var timeoutAt = request.Timeout is { } timeout ? startTimestamp + (long)(timeout.TotalSeconds * time.TimestampFrequency) : long.MaxValue;
        string? startError = null;
        while (!exited.Task.IsCompleted && run.Pid is null)
        {
            if (TryReadPid(pidFile) is { } pid)
            {
                run.Pid = pid;
                Store.Update(Store.Get(run.Id)! with { Pid = pid, Status = "running" });
                Log.ContainerStarted(_logger, run.Id, pid, time.GetElapsedTime(startTimestamp).TotalMilliseconds);
                if (run.Watcher is { } watcher)
                {
                    Log.OomWatcherStarted(_logger, run.Id, pid, memoryLimitMb, watcher.Strategy == OomStrategy.Cgroup ? "cgroup" : "process-tree");
                }

                observer.OnStarted(run.Id, pid);
                break;
            }

            var now = time.GetTimestamp();
            if (now >= startDeadline || now >= timeoutAt || cancellationToken.IsCancellationRequested)
            {
                if (now >= startDeadline)
                {
                    startError = $"the {runtime.Name} runtime did not start the workload within {options.StartTimeout.TotalSeconds:0.#}s";
                    Log.StartDeadlineMissed(_logger, run.Id, options.StartTimeout.TotalSeconds);
                }

                break;
            }

            await Task.WhenAny(exited.Task, Task.Delay(TimeSpan.FromMilliseconds(2), time, CancellationToken.None)).ConfigureAwait(false);
        }

        var timedOut = false;
        if (startError is not null || (run.Pid is null && !exited.Task.IsCompleted))
        {
            timedOut = startError is null && !cancellationToken.IsCancellationRequested;
            await ForceStopAsync(run).ConfigureAwait(false);
        }
        else if (!exited.Task.IsCompleted)
        {
            var remaining = timeoutAt == long.MaxValue ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(Math.Max(0, (timeoutAt - time.GetTimestamp()) / (double)time.TimestampFrequency));
            using var timeoutCts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var delay = Task.Delay(remaining, time, timeoutCts.Token);
            var first = await Task.WhenAny(exited.Task, delay).ConfigureAwait(false);
            if (first != exited.Task)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    run.KilledByCorral = true;
                    await SignalAsync(runtime, run.Id, Signals.SIGTERM, run.Cgroup, CancellationToken.None).ConfigureAwait(false);
                    if (await Task.WhenAny(exited.Task, Task.Delay(options.CancelGrace, time)).ConfigureAwait(false) != exited.Task)
                    {
                        await ForceStopAsync(run).ConfigureAwait(false);
                    }
                }
                else
                {
                    timedOut = true;
                    Log.ContainerTimedOut(_logger, run.Id, request.Timeout!.Value.TotalSeconds);
                    await ForceStopAsync(run).ConfigureAwait(false);
                }
            }

            timeoutCts.Cancel();
        }

        var exitedAt = await exited.Task.WaitAsync(options.RuntimeCommandDeadline).ConfigureAwait(false);
        var exitCode = process.ExitCode;

        // One last synchronous read of the kernel's counters: the OOM event precedes the exit event.
        var summary = run.Watcher?.Stop() ?? OomSummary.None;
        var stats = TryReadStats(run);

        // Decide from the process; give output still in the pipes a bounded grace.
        var drained = Task.WhenAll(stdout.Completion, stderr.Completion);
        if (await Task.WhenAny(drained, Task.Delay(options.OutputDrainGrace, time)).ConfigureAwait(false) != drained)
        {
            process.StandardOutput.BaseStream.Dispose();
            process.StandardError.BaseStream.Dispose();
        }

        if (startError is not null)
        {
            throw new CorralException(startError);
        }

        var countedKills = Math.Max(summary.OomKills, stats?.OomKills ?? 0);
        var diedOfSigkill = exitCode is 137 or 128 && !run.KilledByCorral;
        if (diedOfSigkill && countedKills == 0 && summary.OomNotified)
        {
            // cgroup v1 counts the kill only in the victim's cgroup, runc's child, which runc may have
            // removed before it could be read; the kernel's OOM notification for the container's cgroup
            // and PID 1's SIGKILL are the kernel's own account of the same kill.
            countedKills = 1;
            lock (run.OomEvents)
            {
                run.OomEvents.Add(new OomEventRecord("kill", exitedAt, 1, "kernel OOM notification for the container's cgroup and PID 1 killed by SIGKILL (the kill counter was in the runtime's child cgroup, already removed)"));
            }
        }

        var oomKilled = summary.Livelock || (diedOfSigkill && countedKills > 0);
        if (oomKilled || timedOut)
        {
            // gVisor reports 128 for a sandbox the host killed; both runtimes report 137 here.
            exitCode = 137;
        }

        var record = new ExitRecord
        {
            Id = run.Id,
            Runtime = runtime.Name,
            Command = run.Command,
            ExitCode = exitCode,
            Signal = Signals.FromExitCode(exitCode),
            Pid = run.Pid,
            StartedAt = startedAt,
            ExitedAt = exitedAt,
            DurationMs = (exitedAt - startedAt).TotalMilliseconds,
            TimedOut = timedOut,
            OomKilled = oomKilled,
            OomReason = oomKilled ? (summary.Livelock ? "livelock" : "kernel") : null,
            OomKills = countedKills,
            OomLikely = summary.Likely,
            OomStrategy = run.Watcher?.Strategy switch
            {
                OomStrategy.Cgroup => "cgroup",
                OomStrategy.ProcessTree => "process-tree",
                _ => null,
            },
            MemoryLimitBytes = request.Limits.MemoryBytes,
            PeakMemoryBytes = stats?.MemoryPeakBytes,
            CpuUsageNs = stats?.CpuUsageNs,
            OomEvents = SnapshotOomEvents(run),
            StdoutTail = stdout.Tail(),
            StderrTail = stderr.Tail(),
        };
        Log.ContainerExited(_logger, run.Id, record.ExitCode, record.Signal, record.OomKilled, record.DurationMs);
        observer.OnExited(record);
        return record;
    }

    private static OomEventRecord[] SnapshotOomEvents(ContainerRun run)
    {
        lock (run.OomEvents)
        {
            return [.. run.OomEvents];
        }
    }

    private static CgroupStats? TryReadStats(ContainerRun run)
    {
        try
        {
            return run.Cgroup?.ReadStats();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    private static int? TryReadPid(string pidFile)
    {
        try
        {
            var text = File.ReadAllText(pidFile).Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 0 ? pid : null;
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            return null;
        }
    }

    private static Process StartRuntimeProcess(RuntimeInvocation invocation, IContainerCgroup? enterCgroup)
    {
        ProcessStartInfo info;
        if (enterCgroup is null)
        {
            info = new ProcessStartInfo(invocation.FileName);
        }
        else
        {
            // The runtime must be inside the cgroup before it forks the sandbox: a shell enters
            // it, then execs the runtime, so every process the runtime makes is charged there.
            info = new ProcessStartInfo("/bin/sh");
            info.ArgumentList.Add("-c");
            info.ArgumentList.Add("n=$1; shift; while [ \"$n\" -gt 0 ]; do echo $$ > \"$1\" || { echo \"corral: cannot enter cgroup $1\" >&2; exit 125; }; shift; n=$((n-1)); done; exec \"$@\"");
            info.ArgumentList.Add("corral-launch");
            info.ArgumentList.Add(enterCgroup.ProcsFiles.Count.ToString(CultureInfo.InvariantCulture));
            foreach (var procs in enterCgroup.ProcsFiles)
            {
                info.ArgumentList.Add(procs);
            }

            info.ArgumentList.Add(invocation.FileName);
        }

        foreach (var arg in invocation.Args)
        {
            info.ArgumentList.Add(arg);
        }

        info.UseShellExecute = false;
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        info.RedirectStandardInput = false;
        return Process.Start(info) ?? throw new CorralException($"could not start {invocation.FileName}");
    }

    private async Task SignalAsync(IContainerRuntime runtime, string id, int signal, IContainerCgroup? cgroup, CancellationToken cancellationToken)
    {
        Log.Signalling(_logger, id, Signals.NameOf(signal));
        var result = await RuntimeCommandRunner.RunAsync(runtime.Kill(id, signal), options.RuntimeCommandDeadline, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded && signal == Signals.SIGKILL)
        {
            cgroup?.KillAll();
        }
    }

    /// <summary>SIGKILL through the runtime, then everything in the cgroup, then the runtime process itself.</summary>
    private async Task ForceStopAsync(ContainerRun run)
    {
        run.KilledByCorral = true;
        if (run.Runtime.HasState(run.Id))
        {
            await RuntimeCommandRunner.RunAsync(run.Runtime.Kill(run.Id, Signals.SIGKILL), TimeSpan.FromSeconds(3)).ConfigureAwait(false);
        }

        run.Cgroup?.KillAll();
        try
        {
            if (run.Process is { HasExited: false } process)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception or AggregateException)
        {
            // Already gone, or a process of the tree exited while it was being walked: the cgroup kill above holds.
            Log.CleanupFailed(_logger, run.Id, "kill-runtime-tree", ex.Message);
        }
    }

    private async Task CleanupAsync(ContainerRun run)
    {
        try
        {
            if (run.Process is { } process)
            {
                if (!process.HasExited)
                {
                    await ForceStopAsync(run).ConfigureAwait(false);
                }

                await process.WaitForExitAsync().WaitAsync(options.RuntimeCommandDeadline).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
        {
            Log.CleanupFailed(_logger, run.Id, "wait-runtime", ex.Message);
        }

        run.Watcher?.Dispose();
        await Step(run.Id, "runtime-delete", async () =>
        {
            if (run.Runtime.HasState(run.Id))
            {
                var result = await RuntimeCommandRunner.RunAsync(run.Runtime.Delete(run.Id), options.RuntimeCommandDeadline).ConfigureAwait(false);
                run.Runtime.RemoveLeftoverState(run.Id);
                if (!result.Succeeded && run.Runtime.HasState(run.Id))
                {
                    throw new IOException(result.Message);
                }
            }
        }).ConfigureAwait(false);
        await Step(run.Id, "overlay", () =>
        {
            if (run.OverlayTarget is { } overlay)
            {
                OverlayRootfs.Unmount(overlay);
            }

            return Task.CompletedTask;
        }).ConfigureAwait(false);
        await Step(run.Id, "cgroup", () =>
        {
            run.Cgroup?.Remove();
            return Task.CompletedTask;
        }).ConfigureAwait(false);
        await Step(run.Id, "bundle", () =>
        {
            if (run.BundleDir is { } bundle && Directory.Exists(bundle))
            {
                Directory.Delete(bundle, recursive: true);
            }

            return Task.CompletedTask;
        }).ConfigureAwait(false);
        await Step(run.Id, "state", () =>
        {
            Store.Release(run.Id);
            return Task.CompletedTask;
        }).ConfigureAwait(false);
        run.Process?.Dispose();
    }

    private async Task Step(string id, string name, Func<Task> action)
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Log.CleanupFailed(_logger, id, name, ex.Message);
        }
    }

    private sealed class ContainerRun(string id, IContainerRuntime runtime, ContainerRequest? request, IReadOnlyList<string> command)
    {
        public string Id => id;

        public IContainerRuntime Runtime => runtime;

        /// <summary>Null only for a reclaimed run, which never starts.</summary>
        public ContainerRequest Request => request!;

        public IReadOnlyList<string> Command => command;

        public string? BundleDir { get; set; }

        /// <summary>Where the image's overlay is mounted, once it is.</summary>
        public string? OverlayTarget { get; set; }

        public IContainerCgroup? Cgroup { get; set; }

        public IOomWatcher? Watcher { get; set; }

        public Process? Process { get; set; }

        public int? Pid { get; set; }

        public List<OomEventRecord> OomEvents { get; } = [];

        /// <summary>Corral itself signalled the container (timeout, start deadline, cancellation).</summary>
        public bool KilledByCorral { get; set; }
    }

    private sealed class NullObserver : IContainerObserver
    {
        public static NullObserver Instance { get; } = new();
    }
}

/// <summary>Chooses the OOM watcher for a container: none without a memory limit.</summary>
public interface IOomWatcherFactory
{
    /// <param name="rootPid">The runtime's pid once it runs (the process-tree fallback waits for it).</param>
    IOomWatcher? Create(IContainerCgroup? cgroup, long? memoryLimitBytes, Func<int?> rootPid);
}
