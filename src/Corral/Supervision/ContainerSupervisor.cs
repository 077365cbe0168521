using System.Diagnostics;
using System.Globalization;
using Corral.Cgroups;
using Corral.Common;
using Corral.Images;
using Corral.Logging;
using Corral.Oci;
using Corral.Networking;
using Corral.Oom;
using Corral.Rootfs;
using Corral.Runtimes;
using Corral.Users;
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

    /// <summary>
    /// The corral binary (and any arguments before its command) that parents detached runc execs
    /// (<see cref="ExecReaper"/>); null runs runc's exec in the foreground, whose processes runc kills
    /// with the SIGPIPE its stdin copy takes when they close their stdin early.
    /// </summary>
    public IReadOnlyList<string>? ExecReaper { get; set; }

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

    /// <summary>
    /// Tasks gVisor's own sandbox (sentry and gofer threads) needs on top of --pids: the cgroup around
    /// a gVisor sandbox is limited to --pids plus this. Measured here: an idle sandbox uses ~43 tasks,
    /// one running python a few more; without it `--pids 50` let python fork only twice.
    /// </summary>
    public long GvisorPidsAllowance { get; set; } = 64;

    /// <summary>Below this a runtime cannot even start its init.</summary>
    public long MinimumMemoryBytes { get; set; } = 8L << 20;

    /// <summary>Corral's host-wide bridge, for `--network bridge`.</summary>
    public NetworkOptions Network { get; set; } = new();
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

    /// <summary>A bridged sandbox's network is up (before its runtime starts).</summary>
    void OnNetwork(string id, NetworkAttachment attachment)
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
    private readonly BridgeNetwork _network = new(options.Network, logger: logger);

    public ContainerStateStore Store { get; } = new(options.StateDir);

    public async Task<ExitRecord> RunAsync(ContainerRequest request, ContainerIo io, IContainerObserver? observer = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(io);
        observer ??= NullObserver.Instance;
        var id = request.Id ?? ContainerId.Generate();
        var runtime = ContainerRuntimes.Create(request.Runtime, runtimeOptions);
        request = Validate(request, id, runtime);
        IReadOnlyList<string> command = [.. request.Command];

        var startedAt = time.GetUtcNow();
        var startTimestamp = time.GetTimestamp();
        var claim = Store.Claim(new ContainerState
        {
            Id = id,
            Runtime = runtime.Name,
            RuntimeRoot = runtime.Root,
            SupervisorPid = Environment.ProcessId,
            CreatedAt = startedAt,
            Command = request.Command,
            MemoryLimitBytes = request.Limits.MemoryBytes,
        });

        var run = new ContainerRun(id, runtime, request, command) { Claim = claim };
        try
        {
            if (runtime.Kind == RuntimeKind.Gvisor && GvisorSandboxRuns(id))
            {
                // runsc names a sandbox's control socket after its id, host-wide: another state dir's
                // sandbox of this name would make runsc fail; refused before anything is created.
                throw CorralException.Conflict($"a gVisor sandbox named '{id}' already runs on this host (another state dir's): gVisor's sandbox names are host-wide");
            }

            return await RunClaimedAsync(run, io, observer, startedAt, startTimestamp, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await CleanupAsync(run).ConfigureAwait(false);
            claim.Dispose(); // still held only when cleanup left something: then the container shows as orphaned
        }
    }

    /// <summary>Signals a container this host runs, then SIGKILLs it if it is still alive after <paramref name="grace"/>.</summary>
    public async Task KillAsync(string id, int signal, TimeSpan grace, CancellationToken cancellationToken = default)
    {
        ContainerId.Validate(id);
        var state = Store.Get(id) ?? throw new CorralException(ErrorKind.NotFound, $"no such container: {id}", 1);
        var runtime = RuntimeFor(state);
        if (!Store.IsOwned(id))
        {
            // Its supervisor died (kill -9): nothing else will clean up after this container.
            await ReclaimAsync(id, runtime.Kind).ConfigureAwait(false);
            return;
        }

        MarkSignalled(id, signal);
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
            MarkSignalled(id, Signals.SIGKILL);
            await SignalAsync(runtime, id, Signals.SIGKILL, cgroupDriver?.Open(id), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Leaves word in the container's bundle that Corral itself sent <paramref name="signal"/>: an
    /// empty file (no data blocks: it can be made on a full disk), read by the run's exit verdict.
    /// </summary>
    private void MarkSignalled(string id, int signal)
    {
        try
        {
            var bundle = Path.Combine(options.StateDir, "bundles", id);
            if (Directory.Exists(bundle))
            {
                File.Create(Path.Combine(bundle, SignalMarkerPrefix + signal.ToString(CultureInfo.InvariantCulture))).Dispose();
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Log.CleanupFailed(_logger, id, "mark-signalled", ex.Message);
        }
    }

    private const string SignalMarkerPrefix = "corral-signalled-";

    /// <summary>The strongest signal Corral sent this run (SIGKILL wins), from this process or another's marker.</summary>
    private static int? SignalSent(ContainerRun run)
    {
        var sent = run.SignalSent;
        try
        {
            if (run.BundleDir is { } bundle && Directory.Exists(bundle))
            {
                foreach (var marker in Directory.EnumerateFiles(bundle, SignalMarkerPrefix + "*"))
                {
                    if (int.TryParse(Path.GetFileName(marker)[SignalMarkerPrefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out var signal)
                        && (sent is null || signal == Signals.SIGKILL))
                    {
                        sent = signal;
                    }
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        return sent;
    }

    public CgroupStats? ReadStats(string id) => cgroupDriver?.Open(ContainerId.Validate(id))?.ReadStats();

    /// <summary>
    /// Checks a request as <see cref="RunAsync"/> would, creating nothing: for a caller that runs the
    /// container elsewhere (the daemon's per-sandbox shim) and must refuse bad input at once.
    /// </summary>
    /// <returns>The request in canonical form (mount sources resolved, network normalised).</returns>
    public ContainerRequest Validate(ContainerRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return Validate(request, request.Id ?? ContainerId.Generate(), ContainerRuntimes.Create(request.Runtime, runtimeOptions));
    }

    /// <summary>
    /// Removes what the supervisor of <paramref name="id"/> left when it died without cleaning up
    /// (SIGKILL, a crash): the runtime's container and state (by exact id), the overlay, the cgroup with
    /// every process in it, the bundle and the claim. Safe to call when some or all of it is already gone.
    /// Refused (AlreadyExists) while a live supervisor holds the claim; a step that fails is an error.
    /// </summary>
    public async Task ReclaimAsync(string id, RuntimeKind kind)
    {
        ContainerId.Validate(id);
        using var claim = Store.TryTakeOver(id)
            ?? throw CorralException.Conflict($"container {id} is still supervised (its claim is held); stop it with `corral kill {id}`");
        await ReclaimClaimedAsync(id, [kind], claim).ConfigureAwait(false);
    }

    /// <summary>
    /// `corral gc`: reclaims every container of this state dir whose supervisor died, and bundles no
    /// claim owns. Containers with a live supervisor are not touched. Returns the ids reclaimed.
    /// </summary>
    public async Task<IReadOnlyList<string>> CollectGarbageAsync()
    {
        var bundles = Path.Combine(options.StateDir, "bundles");
        var ids = Store.Ids()
            .Concat(Directory.Exists(bundles) ? Directory.EnumerateDirectories(bundles).Select(Path.GetFileName).OfType<string>() : [])
            .Where(id => ContainerId.IsValid(id, out _))
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)
            .ToList();
        var reclaimed = new List<string>();
        var failures = new List<string>();
        foreach (var id in ids)
        {
            using var claim = Store.TryTakeOver(id);
            if (claim is null)
            {
                continue; // a live supervisor owns it
            }

            // The record says which runtime; without one (died before writing it), both are checked.
            RuntimeKind[] kinds = Store.Get(id) is { } state && ContainerRuntimes.TryParse(state.Runtime, out var kind) ? [kind] : [RuntimeKind.Runc, RuntimeKind.Gvisor];
            try
            {
                await ReclaimClaimedAsync(id, kinds, claim).ConfigureAwait(false);
                reclaimed.Add(id);
            }
            catch (CorralException ex)
            {
                failures.Add(ex.Message);
            }
        }

        try
        {
            await ReconcileNetworksAsync().ConfigureAwait(false);
        }
        catch (IOException ex)
        {
            failures.Add(ex.Message);
        }

        if (failures.Count > 0)
        {
            throw CorralException.Runtime(string.Join("; ", failures));
        }

        return reclaimed;
    }

    /// <summary>
    /// Namespaces, veths, addresses and rules of bridged sandboxes whose owners died, of any state dir,
    /// and Corral's table written whole again (`corral gc`, a daemon's start). Returns the keys removed.
    /// </summary>
    public async Task<IReadOnlyList<string>> ReconcileNetworksAsync()
    {
        var removed = await _network.ReconcileAsync().ConfigureAwait(false);
        foreach (var key in removed)
        {
            Log.NetworkReclaimed(_logger, key);
        }

        return removed;
    }

    private async Task ReclaimClaimedAsync(string id, IReadOnlyList<RuntimeKind> kinds, ContainerClaim claim)
    {
        var bundle = Path.Combine(options.StateDir, "bundles", id);
        var failures = new List<string>();
        for (var i = 0; i < kinds.Count; i++)
        {
            var runtime = ContainerRuntimes.Create(kinds[i], runtimeOptions);
            var last = i == kinds.Count - 1;
            var run = new ContainerRun(id, runtime, null, [])
            {
                BundleDir = last ? bundle : null,
                RootDir = last ? bundle : null,
                Cgroup = cgroupDriver?.Open(id),
                RuntimeStarted = true,
                ReclaimNetwork = last,
            };
            Log.Reclaiming(_logger, id, runtime.Name);
            await ForceStopAsync(run).ConfigureAwait(false);
            failures.AddRange(await CleanupAsync(run).ConfigureAwait(false));
        }

        if (failures.Count > 0)
        {
            throw CorralException.Runtime($"could not remove everything of container {id}: {string.Join("; ", failures)}");
        }

        claim.Release();
    }

    private static bool GvisorSandboxRuns(string id)
    {
        try
        {
            var socket = $" @runsc-sandbox.{id}@";
            return File.ReadLines("/proc/net/unix").Any(line => line.EndsWith(socket, StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
    }

    private IContainerRuntime RuntimeFor(ContainerState state)
    {
        ContainerRuntimes.TryParse(state.Runtime, out var kind);
        return ContainerRuntimes.Create(kind, runtimeOptions);
    }

    /// <summary>The one check of a request; returns it with its network in canonical form (what the rules are written from).</summary>
    private ContainerRequest Validate(ContainerRequest request, string id, IContainerRuntime runtime)
    {
        ContainerId.Validate(id);
        if (request.Command.Count == 0 || string.IsNullOrEmpty(request.Command[0]))
        {
            throw new CorralException("no command given: corral run [options] -- CMD [ARGS...]");
        }

        InputRules.Process(request.Command, request.Env, request.Workdir);
        var network = NetworkInput.Validate(request.Network);
        if (request.Timeout is { } timeout)
        {
            InputRules.Duration("--timeout", timeout);
        }

        if (request.ImageLayers is { } layers)
        {
            if (layers.Count == 0 || layers.Any(l => !Directory.Exists(l)))
            {
                throw new CorralException($"image '{request.Rootfs}' has missing layers; pull it again");
            }
        }

        var rootfs = request.ImageLayers is null ? InputRules.Rootfs(request.Rootfs) : null;

        try
        {
            _ = rootfs is null || Directory.EnumerateFileSystemEntries(rootfs).Any();
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or IOException)
        {
            throw CorralException.Invalid($"rootfs '{request.Rootfs}' is not readable: {ex.Message}");
        }


        if (request.Limits.MemoryBytes is { } memory && memory < options.MinimumMemoryBytes)
        {
            throw new CorralException($"invalid --memory {ByteSize.Format(memory)}: at least {ByteSize.Format(options.MinimumMemoryBytes)} is needed to start a container");
        }

        if (request.Limits.Cpus is { } cpus && (cpus < 0.01 || cpus > Environment.ProcessorCount * 64 || double.IsNaN(cpus)))
        {
            throw new CorralException($"invalid --cpus {cpus.ToString(CultureInfo.InvariantCulture)}: must be between 0.01 and the host's CPUs");
        }

        if (request.Limits.Pids is { } pids)
        {
            InputRules.Pids(pids);
        }

        if (request.Limits.MemoryBytes is { } bytes && bytes > InputRules.MaxBytes)
        {
            throw CorralException.Invalid($"invalid --memory {bytes}: at most 4 EiB");
        }

        var binary = runtime.Binary;
        if (RuntimeCommandRunner.Locate(binary) is null)
        {
            throw CorralException.Host($"runtime binary '{binary}' for {runtime.Name} not found; install it (apt-get install {ContainerRuntimes.PackageOf(runtime.Kind)}) or set its path");
        }

        if (runtime.Kind == RuntimeKind.Crun)
        {
            CrunHost.EnsureSupported();
        }

        if (request.Gpu)
        {
            _ = GpuDevices.Discover();
        }

        if (rootfs is not null)
        {
            _ = ValidateInRootfs(request, rootfs);
        }
        else if (request.User is { } user)
        {
            // An image's root is there only at start (where its names are looked up): the syntax now.
            _ = Users.UserSpec.Parse(user);
        }

        if (request.ReadOnlyRoot && request.DiskBytes is not null)
        {
            throw CorralException.Invalid("--disk caps what a container writes to its root: not with --read-only");
        }

        var disk = WritableRoot.ValidateDisk(request.DiskBytes);
        if (request.KeptRootDir is { } kept)
        {
            InputRules.NoControl("root directory", kept);
        }

        // A host port another program or sandbox holds refuses the request now (ALREADY_EXISTS, exit 125);
        // the reservation at create stays the arbiter of a race.
        BridgeNetwork.EnsurePortsFree(network.Ports);

        // Last: a bind mount's missing source is created (when asked) only once everything else passed.
        var mounts = MountInput.Validate(request.Mounts);
        if (request.ReadOnlyRoot && rootfs is not null)
        {
            // Nothing is ever made in a root filesystem directory used as it is: mount points must exist.
            foreach (var mount in mounts.Where(m => RootfsResolver.Resolve(rootfs, m.Target) is null))
            {
                throw CorralException.Invalid($"invalid mount path '{mount.Target}': it does not exist in the read-only root filesystem");
            }
        }

        return request with { Network = network, Mounts = mounts, DiskBytes = disk };
    }

    /// <summary>The command, the user and (on a read-only root, where it cannot be made) the working directory.</summary>
    private static ResolvedUser ValidateInRootfs(ContainerRequest request, string rootfs)
    {
        ValidateInRootfs(rootfs, request.Command[0], request.Env.LastOrDefault(kv => kv.Key == "PATH").Value ?? SpecBuilder.DefaultPath, request.ReadOnlyRoot ? request.Workdir : null);
        return ContainerUsers.Resolve(rootfs, request.User);
    }

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
            InputRules.EnvName(key);
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
            WritableRoot.Remove(run.BundleDir);
            PrivateFiles.DeleteTree(options.StateDir, run.BundleDir);
        }

        // 0700 whatever the umask: config.json holds the environment (secrets, too).
        PrivateFiles.CreateDirectory(Path.Combine(options.StateDir, "bundles"));
        PrivateFiles.CreateOwnDirectory(run.BundleDir);
        var pidFile = Path.Combine(run.BundleDir, "init.pid");

        // The network first (a taken host port refuses the run before anything else is made), removed last.
        if (request.Network.Mode == NetworkMode.Bridge)
        {
            run.Network = await _network.AttachAsync(options.StateDir, run.Id, request.Network, cancellationToken).ConfigureAwait(false);
            observer.OnNetwork(run.Id, run.Network.Attachment);
        }

        // The root: the image's layers (or the root filesystem directory) below the container's own
        // writable layer; a --read-only directory as it is.
        var rootfsPath = Path.GetFullPath(request.Rootfs);
        if (request.HasOverlayRoot)
        {
            run.RootDir = request.KeptRootDir ?? run.BundleDir;
            if (request.KeptRootDir is { } kept && Directory.Exists(kept))
            {
                WritableRoot.Remove(kept);
            }

            rootfsPath = await WritableRoot.MountAsync(run.RootDir, request.ImageLayers ?? [rootfsPath], request.DiskBytes, options.RuntimeCommandDeadline, cancellationToken).ConfigureAwait(false);
        }

        // Looked up in the root as the container will see it (the image's own /etc/passwd and /etc/group);
        // a root filesystem directory's command was checked with the request.
        var user = request.ImageLayers is not null ? ValidateInRootfs(request, rootfsPath) : ContainerUsers.Resolve(rootfsPath, request.User);
        if (!request.ReadOnlyRoot && request.Workdir is { } workdir)
        {
            // Made when missing, as docker does (root's, 0755), in the container's own layer.
            ContainerPaths.EnsureDirectory(rootfsPath, workdir);
        }

        var hostname = run.Id.Length <= 63 ? run.Id : "corral";
        var networkMounts = run.Network is { } lease ? NetworkFiles(run.BundleDir, rootfsPath, request, lease.Attachment, hostname) : [];

        var cgroupLimits = request.Limits;
        if (runtime.Kind == RuntimeKind.Gvisor && cgroupLimits.MemoryBytes is { } asked)
        {
            cgroupLimits = cgroupLimits with { MemoryBytes = asked + options.GvisorMemoryAllowanceBytes };
        }

        if (runtime.Kind == RuntimeKind.Gvisor && cgroupLimits.Pids is { } askedPids)
        {
            cgroupLimits = cgroupLimits with { Pids = askedPids + options.GvisorPidsAllowance };
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
            Env = [new("HOME", user.Home), .. request.Env],
            User = new Oci.UserSpec { Uid = user.Uid, Gid = user.Gid, AdditionalGids = user.AdditionalGids.Count > 0 ? user.AdditionalGids : null },
            Workdir = request.Workdir ?? "/",
            Hostname = hostname,
            CgroupsPath = runtime.LaunchesInsideCgroup ? null : run.Cgroup?.RuntimeCgroupsPath,
            Devices = request.Gpu ? GpuDevices.Discover() : [],
            NetworkNamespacePath = run.Network?.NamespacePath,
            ReadonlyRoot = request.ReadOnlyRoot,
            TmpSize = request.ReadOnlyRoot ? "256m" : null,
            ExtraMounts = [.. GvisorTmp(runtime, request, rootfsPath), .. MountInput.ToSpec(request.Mounts), .. networkMounts],
        });
        // Not cancellable: a stop asked for this early is handled below like any other, with an exit record.
        try
        {
            // Renamed into place whole: a reader (runc, an exec, a status) never sees half of it.
            PrivateFiles.WriteAtomically(Path.Combine(run.BundleDir, "config.json"), SpecBuilder.ToJson(spec));
        }
        catch (IOException ex)
        {
            throw CorralException.Host($"cannot write the container's bundle in {options.StateDir}: {ex.Message}", ex);
        }

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

                    // Not here: this runs on the watcher's timer under its lock, and killing until the cgroup
                    // is empty pauses between rounds (up to seconds for a sandbox slow to die).
                    _ = Task.Run(() =>
                    {
                        try
                        {
                            run.Cgroup?.KillAll();
                        }
                        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                        {
                            // Already gone with its container: cleanup kills and removes what is left.
                            Log.CleanupFailed(_logger, run.Id, "livelock-kill", ex.Message);
                        }
                    });
                    break;
                default:
                    Log.OomLikely(_logger, run.Id, pid, memoryLimitMb, oom.Detail);
                    break;
            }

            observer.OnOom(run.Id, oom);
        });

        // The kernel log from here on names the processes its OOM killer chooses in this container.
        using var kernelLog = run.Cgroup is not null && cgroupLimits.MemoryBytes is not null ? KernelLogCursor.TryOpenAtEnd() : null;
        var invocation = runtime.Run(run.Id, run.BundleDir, pidFile, request.Gpu, network: run.Network is not null, writableRoot: !request.ReadOnlyRoot);
        run.RuntimeStarted = true;
        var process = StartRuntimeProcess(invocation, runtime.LaunchesInsideCgroup ? run.Cgroup : null, runtime.Kind == RuntimeKind.Gvisor && File.Exists(Setpriv));
        run.Process = process;
        var exited = new TaskCompletionSource<DateTimeOffset>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.Exited += (_, _) => exited.TrySetResult(time.GetUtcNow());
        process.EnableRaisingEvents = true;
        if (process.HasExited)
        {
            exited.TrySetResult(time.GetUtcNow());
        }

        using var pidsProbe = request.Limits.Pids is not null && run.Cgroup is { } pidsCgroup ? new PidsLimitProbe(pidsCgroup) : null;
        var stdout = new OutputPump(process.StandardOutput.BaseStream, io.Stdout, options.OutputTailBytes);
        var stderr = new OutputPump(process.StandardError.BaseStream, io.Stderr, options.OutputTailBytes);

        // Started: the runtime wrote the init pid (signalled before we wait on the exit).
        var startDeadline = startTimestamp + (long)(options.StartTimeout.TotalSeconds * time.TimestampFrequency);
        var timeoutAt = request.Timeout is { } timeout ? startTimestamp + (long)(timeout.TotalSeconds * time.TimestampFrequency) : long.MaxValue;
        string? startError = null;
        while (!exited.Task.IsCompleted && run.Pid is null)
        {
            if (RuntimePidFile.TryRead(pidFile) is { } pid)
            {
                run.Pid = pid;
                try
                {
                    Store.Update(Store.Get(run.Id)! with { Pid = pid, Status = "running" });
                }
                catch (IOException ex)
                {
                    // A full state dir: `corral ps` shows it without its pid; the run goes on.
                    Log.CleanupFailed(_logger, run.Id, "record-pid", ex.Message);
                }
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
                    run.SignalSent ??= Signals.SIGTERM;
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
            throw CorralException.Runtime(startError);
        }

        // The one place that decides how it ended (ExitVerdict): OOM, timeout, the runtime's own failure, the workload's code.
        var runtimeFailure = RuntimeFailures.Find(runtime.Kind, run.BundleDir, exitCode, stderr.Tail());
        var verdict = ExitVerdict.Decide(new ExitFacts
        {
            RuntimeExitCode = exitCode,
            Oom = summary,
            CgroupOomKills = stats?.OomKills,
            KilledByCorral = run.KilledByCorral,
            TimedOut = timedOut,
            RuntimeFailure = runtimeFailure,
            SignalFromCorral = runtimeFailure is null ? null : SignalSent(run),
            RuntimeName = runtime.Name,
        });
        if (verdict.KillInferred)
        {
            // cgroup v1 counts the kill only in the victim's cgroup, runc's child, which runc may have
            // removed before it could be read; the kernel's OOM notification for the container's cgroup
            // and PID 1's SIGKILL are the kernel's own account of the same kill.
            Log.OomKill(_logger, run.Id, run.Pid ?? 0, 1, (request.Limits.MemoryBytes ?? 0) >> 20);
            lock (run.OomEvents)
            {
                run.OomEvents.Add(new OomEventRecord("kill", exitedAt, 1, "kernel OOM notification for the container's cgroup and PID 1 killed by SIGKILL (the kill counter was in the runtime's child cgroup, already removed)"));
            }
        }

        if ((verdict.OomKills > 0 || summary.OomNotified) && kernelLog is not null && run.Cgroup is { } oomCgroup)
        {
            var bootedAt = time.GetUtcNow() - TimeSpan.FromMilliseconds(Environment.TickCount64);
            // The container's own cgroup covers runc's and crun's child (RuntimeCgroupsPath) and gVisor's processes in it.
            // A kill whose report the kernel rate-limited is known by pid only: the runtime's pid (runc's PID 1, gVisor's sandbox).
            var victims = kernelLog.ReadKills(oomCgroup.HierarchyPath, run.Pid).Select(victim => new OomEventRecord(
                "victim",
                bootedAt + TimeSpan.FromMicroseconds(victim.BootTimeMicroseconds),
                0,
                victim.NamesCgroups
                    ? $"the kernel's OOM killer chose pid {victim.Pid} ({victim.Process}) in memory cgroup {victim.TaskCgroup}"
                    : $"the kernel's OOM killer chose pid {victim.Pid} ({victim.Process}), the container's runtime pid (the kernel rate-limited its full report)")
            {
                VictimPid = victim.Pid,
                VictimProcess = victim.Process,
            });
            lock (run.OomEvents)
            {
                run.OomEvents.AddRange(victims);
            }
        }

        if (verdict.RuntimeFailure is { } failure)
        {
            Log.RuntimeFailed(_logger, run.Id, runtime.Name, exitCode, failure);
            // The package and its binary share the name (runc, crun, runsc).
            throw CorralException.Runtime($"{ContainerRuntimes.PackageOf(runtime.Kind)} failed to run the container: {failure}");
        }

        var dropped = stdout.DroppedBytes + stderr.DroppedBytes;
        if (dropped > 0)
        {
            Log.OutputDropped(_logger, run.Id, dropped, stdout.SinkError ?? stderr.SinkError ?? "unknown");
        }

        var pidsLimitHit = request.Limits.Pids is not null && (stats?.PidsLimitHits > 0 || pidsProbe?.Hits() > 0);

        var record = new ExitRecord
        {
            Id = run.Id,
            Runtime = runtime.Name,
            Command = run.Command,
            ExitCode = verdict.ExitCode,
            Signal = Signals.FromExitCode(verdict.ExitCode),
            Pid = run.Pid,
            StartedAt = startedAt,
            ExitedAt = exitedAt,
            DurationMs = (exitedAt - startedAt).TotalMilliseconds,
            TimedOut = timedOut,
            OomKilled = verdict.OomKilled,
            OomReason = verdict.OomReason,
            OomKills = verdict.OomKills,
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
            PidsLimit = request.Limits.Pids,
            PidsLimitHit = pidsLimitHit,
            OutputDroppedBytes = dropped,
            ExitNote = verdict.ExitNote,
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

    /// <summary>util-linux's setpriv: sets the parent-death signal, then execs the command.</summary>
    private const string Setpriv = "/usr/bin/setpriv";

    private static Process StartRuntimeProcess(RuntimeInvocation invocation, IContainerCgroup? enterCgroup, bool dieWithSupervisor)
    {
        ProcessStartInfo info;
        if (dieWithSupervisor)
        {
            // SIGKILL when this process dies (kill -9 of `corral run`): `runsc run` then ends, and the
            // sandbox it started --attached ends with it (measured). It survives exec.
            info = new ProcessStartInfo(Setpriv);
            foreach (var arg in (string[])["--pdeathsig", "KILL", "--"])
            {
                info.ArgumentList.Add(arg);
            }

            info.ArgumentList.Add(enterCgroup is null ? invocation.FileName : "/bin/sh");
        }
        else if (enterCgroup is null)
        {
            info = new ProcessStartInfo(invocation.FileName);
        }
        else
        {
            info = new ProcessStartInfo("/bin/sh");
        }

        if (enterCgroup is not null)
        {
            // The runtime must be inside the cgroup before it forks the sandbox: a shell enters
            // it, then execs the runtime, so every process the runtime makes is charged there.
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
        return dieWithSupervisor ? StartFromOwnThread(info) : Process.Start(info) ?? throw CorralException.Host($"could not start {invocation.FileName}");
    }

    /// <summary>
    /// The parent-death signal fires when the *thread* that forked the child ends, not the process, and
    /// .NET forks on the calling thread (a thread-pool thread that may retire while the container runs):
    /// the fork happens on a thread of its own that lives until the child exits.
    /// </summary>
    private static Process StartFromOwnThread(ProcessStartInfo info)
    {
        Process? started = null;
        Exception? failure = null;
        using var ready = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            try
            {
                started = Process.Start(info);
            }
            catch (Exception ex)
            {
                failure = ex;
            }
            finally
            {
                ready.Set();
            }

            try
            {
                started?.WaitForExit();
            }
            catch (InvalidOperationException)
            {
                // Disposed by the supervisor: it was waited for there.
            }
        })
        {
            IsBackground = true,
            Name = "corral-runtime-parent",
        };
        thread.Start();
        ready.Wait();
        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        }

        return started ?? throw CorralException.Host($"could not start {info.FileName}");
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

    /// <summary>
    /// The bridged sandbox's /etc/resolv.conf and /etc/hosts, written in its bundle and mounted read-only
    /// over the image's. Only over files the root filesystem has: a runtime would otherwise create the
    /// mount point, and a directory rootfs is the caller's, never written. An image's overlay (the
    /// container's own upper layer) gets an empty resolv.conf to mount over when it lacks one.
    /// </summary>
    /// <summary>
    /// runsc puts a tmpfs of its own (in the sandbox's memory) over /tmp unless the spec mounts something
    /// there: a writable root's /tmp is mounted onto itself, so that it is the root's, as under runc (in
    /// the container's layer, under its --disk cap, reached by `corral cp`).
    /// </summary>
    private static IEnumerable<MountSpec> GvisorTmp(IContainerRuntime runtime, ContainerRequest request, string rootfs)
    {
        if (runtime.Kind == RuntimeKind.Gvisor && !request.ReadOnlyRoot && !request.Mounts.Any(m => m.Target == "/tmp")
            && RootfsResolver.Resolve(rootfs, "/tmp") is { } tmp && Directory.Exists(tmp))
        {
            yield return new MountSpec("/tmp", "bind", tmp, ["rbind", "rw", "nosuid", "nodev"]);
        }
    }

    private static List<MountSpec> NetworkFiles(string bundleDir, string rootfs, ContainerRequest request, NetworkAttachment attachment, string hostname)
    {
        var mounts = new List<MountSpec>();
        string? hostResolv = null;
        try
        {
            hostResolv = File.ReadAllText("/etc/resolv.conf");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // No host resolver: the public ones below.
        }

        var files = new[]
        {
            ("/etc/resolv.conf", NetworkRules.ResolvConf(hostResolv, request.Network.Dns)),
            ("/etc/hosts", NetworkRules.Hosts(attachment.Address, hostname)),
        };
        foreach (var (target, text) in files)
        {
            var source = Path.Combine(bundleDir, Path.GetFileName(target));
            var inRoot = RootfsResolver.Resolve(rootfs, target);
            if (inRoot is null || !File.Exists(inRoot))
            {
                if (!(request.HasOverlayRoot && target == "/etc/resolv.conf" && RootfsResolver.Resolve(rootfs, "/etc") is { } etc && Directory.Exists(etc) && !PrivateFiles.Exists(Path.Combine(etc, "resolv.conf"))))
                {
                    continue;
                }

                File.WriteAllBytes(Path.Combine(etc, "resolv.conf"), []);
            }

            File.WriteAllText(source, text);
            File.SetUnixFileMode(source, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            mounts.Add(new MountSpec(target, "bind", source, ["rbind", "ro", "nosuid", "nodev", "noexec"]));
        }

        return mounts;
    }

    /// <summary>SIGKILL through the runtime, then everything in the cgroup, then the runtime process itself.</summary>
    private async Task ForceStopAsync(ContainerRun run)
    {
        run.KilledByCorral = true;
        run.SignalSent = Signals.SIGKILL;
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

    /// <summary>Undoes exactly what this run made, newest first; returns the steps that failed (each also logged).</summary>
    private async Task<List<string>> CleanupAsync(ContainerRun run)
    {
        var failures = new List<string>();
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

        // The runtime has exited: no process of the container is left in its network namespace, so the
        // network goes now, alongside the steps below (its `ip`/`nft` runs overlap the runtime's delete).
        var network = Step(run.Id, "network", async () =>
        {
            if (run.Network is { } lease)
            {
                await _network.DetachAsync(lease).ConfigureAwait(false);
                run.Network = null;
            }
            else if (run.ReclaimNetwork)
            {
                await _network.ReclaimAsync(options.StateDir, run.Id).ConfigureAwait(false);
            }
        }, failures);
        await Step(run.Id, "runtime-delete", async () =>
        {
            // Only a runtime container this run started (or reclaims) is deleted: a refused run never
            // touches a container of the same name that someone else runs.
            if (run.RuntimeStarted && run.Runtime.HasState(run.Id))
            {
                var result = await RuntimeCommandRunner.RunAsync(run.Runtime.Delete(run.Id), options.RuntimeCommandDeadline).ConfigureAwait(false);
                run.Runtime.RemoveLeftoverState(run.Id);
                if (run.Runtime.HasState(run.Id))
                {
                    // runsc resolves ids by prefix: while "gp1" exists it refuses "gp" as ambiguous, for
                    // kill and delete alike. Its sandbox runs in this container's cgroup: kill everything
                    // there, then remove exactly this id's state files.
                    run.Cgroup?.KillAll();
                    run.Runtime.RemoveStateOfStopped(run.Id);
                }

                if (run.Runtime.HasState(run.Id))
                {
                    throw new IOException($"{run.Runtime.Name} still holds state for {run.Id} after delete: {(result.Succeeded ? "(delete succeeded)" : result.Message)}");
                }
            }
        }, failures).ConfigureAwait(false);
        IReadOnlyList<string> layers = [];
        await Step(run.Id, "rootfs", () =>
        {
            // A kept root (a daemon sandbox's, read until it is removed) is unmounted, its files left
            // for its owner to remove; any other goes whole.
            if (run.RootDir is { } root)
            {
                layers = run.Request?.KeptRootDir is null ? WritableRoot.Remove(root) : WritableRoot.Unmount(root);
            }

            return Task.CompletedTask;
        }, failures).ConfigureAwait(false);
        await Step(run.Id, "layers", () =>
        {
            // Layers `rmi` had to leave because this overlay used them go now.
            ImageStore.OfLayers(layers)?.CollectReleasedLayers();
            return Task.CompletedTask;
        }, failures).ConfigureAwait(false);
        await Step(run.Id, "cgroup", () =>
        {
            run.Cgroup?.Remove();
            return Task.CompletedTask;
        }, failures).ConfigureAwait(false);
        await Step(run.Id, "bundle", () =>
        {
            if (run.BundleDir is { } bundle)
            {
                // Never through a symlink planted in the state dir: only what Corral created goes.
                PrivateFiles.DeleteTree(options.StateDir, bundle);
            }

            return Task.CompletedTask;
        }, failures).ConfigureAwait(false);
        await network.ConfigureAwait(false);
        run.Process?.Dispose();
        if (failures.Count == 0)
        {
            // The claim goes last, and only when nothing is left: otherwise the container shows as
            // orphaned (its lock is free once this process exits) and `corral gc` finishes the job.
            await Step(run.Id, "state", () =>
            {
                run.Claim?.Release();
                return Task.CompletedTask;
            }, failures).ConfigureAwait(false);
        }

        return failures;
    }

    private async Task Step(string id, string name, Func<Task> action, List<string> failures)
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Log.CleanupFailed(_logger, id, name, ex.Message);
            lock (failures)
            {
                // The network's step runs alongside the others.
                failures.Add($"{name}: {ex.Message}");
            }
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

        /// <summary>This process's hold on the name; released last, once nothing of the container is left.</summary>
        public ContainerClaim? Claim { get; set; }

        /// <summary>The runtime was started for this container (so its runtime state, if any, is this run's to delete).</summary>
        public bool RuntimeStarted { get; set; }

        /// <summary>The directory of the container's overlay root (its rootfs, layer and disk), once there is one.</summary>
        public string? RootDir { get; set; }

        public IContainerCgroup? Cgroup { get; set; }

        /// <summary>A bridged sandbox's network, held until cleanup removes it last.</summary>
        public NetworkLease? Network { get; set; }

        /// <summary>A reclaim: remove what a dead supervisor left of this id's network.</summary>
        public bool ReclaimNetwork { get; init; }

        public IOomWatcher? Watcher { get; set; }

        public Process? Process { get; set; }

        public int? Pid { get; set; }

        public List<OomEventRecord> OomEvents { get; } = [];

        /// <summary>Corral itself signalled the container (timeout, start deadline, cancellation).</summary>
        public bool KilledByCorral { get; set; }

        /// <summary>The signal this process sent the container, SIGKILL once it force-stopped it.</summary>
        public int? SignalSent { get; set; }
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
