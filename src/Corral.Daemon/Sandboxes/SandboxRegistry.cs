using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Corral.Common;
using Corral.Daemon.Hosting;
using Corral.Daemon.Logging;
using Corral.Daemon.Metrics;
using Corral.Images;
using Corral.Interop;
using Corral.Rootfs;
using Corral.Runtimes;
using Corral.Shim;
using Corral.Supervision;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Corral.Daemon.Sandboxes;

/// <summary>
/// The daemon's sandboxes. Each runs under its own shim process (`corral shim DIR`), which supervises
/// the container and reports through the sandbox's directory; the registry watches those directories
/// (inotify, and a poll as a safety net), turns what the shims write into records and events, and
/// after a restart finds every sandbox again: running ones are adopted, ended ones keep their exit
/// records and logs, and those whose shim died are cleaned up and marked failed.
/// </summary>
public sealed class SandboxRegistry(
    IOptions<DaemonOptions> options,
    ContainerSupervisor supervisor,
    EventHub events,
    TimeProvider time,
    ILogger<SandboxRegistry> logger,
    DaemonMetrics? metrics = null) : IHostedLifecycleService, IDisposable
{
    /// <summary>How long a shim may take to take its lock after it was started.</summary>
    private static readonly TimeSpan ShimStartGrace = TimeSpan.FromSeconds(3);

    private readonly DaemonOptions _options = options.Value;
    private readonly EventHub _events = events;
    private readonly ConcurrentDictionary<string, Sandbox> _sandboxes = new(StringComparer.Ordinal);
    private readonly DirectoryWatcher _watcher = new();
    private readonly ShimPool _pool = new(options.Value.ShimPath, Path.Combine(options.Value.StateDir, "sandboxes"), options.Value.ShimPool);
    private volatile bool _stopping;

    // While an earlier daemon's sandboxes are found again: their ends were counted by that daemon.
    private bool _recovering;

    private string SandboxesDir => Path.Combine(_options.StateDir, "sandboxes");

    public int Count => _sandboxes.Count;

    public bool IsStopping => _stopping;

    /// <summary>
    /// Registers the sandbox and starts its shim: quick, so that admission can hold its lock across it (the
    /// sandbox reserves its limits from here on). <see cref="CompleteCreateAsync"/> then waits, outside any
    /// lock, for what only the shim can check.
    /// </summary>
    public Sandbox Create(ContainerRequest request, IReadOnlyDictionary<string, string> labels)
    {
        if (_stopping)
        {
            throw new CorralException(ErrorKind.Unavailable, "the daemon is shutting down");
        }

        var id = request.Id is { Length: > 0 } name ? ContainerId.Validate(name) : ContainerId.Generate();
        request = request with { Id = id };
        var dir = new ShimDirectory(Path.Combine(SandboxesDir, id));
        var record = new SandboxRecord
        {
            Id = id,
            Runtime = request.Runtime.ToString().ToLowerInvariant(),
            Rootfs = request.Rootfs,
            Command = request.Command,
            Env = request.Env.ToDictionary(kv => kv.Key, kv => kv.Value),
            Workdir = request.Workdir,
            Cpus = request.Limits.Cpus,
            MemoryBytes = request.Limits.MemoryBytes,
            Pids = request.Limits.Pids,
            TimeoutSeconds = request.Timeout?.TotalSeconds,
            Labels = labels,
            CreatedAt = time.GetUtcNow(),
            Status = SandboxStatus.Created,
        };

        // Reserve the id before anything touches the disk: two creates of one name cannot both win.
        var sandbox = new Sandbox(record, dir);
        if (!_sandboxes.TryAdd(id, sandbox))
        {
            throw CorralException.Conflict($"a sandbox named '{id}' already exists; remove it first or choose another name");
        }

        try
        {
            // Bad input is refused here, before anything is created. The sandbox's root is kept in its
            // directory after it ends (its files can still be copied out) until it is removed.
            request = supervisor.Validate(request with { KeptRootDir = RootDirOf(dir.Path) });
            PrivateFiles.CreateDirectory(SandboxesDir);
            PrivateFiles.CreateOwnDirectory(dir.Path);
            PrivateFiles.WriteAllBytes(dir.LogFile, []);
            WriteRecord(record);
            dir.WriteSpec(new ShimSpec
            {
                Request = request,
                SupervisorStateDir = _options.SupervisorStateDir,
                RuncPath = _options.Runtime.RuncPath,
                RunscPath = _options.Runtime.RunscPath,
                CrunPath = _options.Runtime.CrunPath,
                RuncRoot = _options.Runtime.RuncRoot,
                RunscRoot = _options.Runtime.RunscRoot,
                CrunRoot = _options.Runtime.CrunRoot,
                RunscPlatform = _options.Runtime.RunscPlatform,
                CancelGraceSeconds = _options.ShutdownGrace.TotalSeconds,
                StartTimeoutSeconds = _options.StartTimeout.TotalSeconds,
                LogCapBytes = _options.LogCapBytes,
                LogLevel = _options.ShimLogLevel.ToString(),
                LogFormat = _options.ShimLogFormat == Corral.Logging.LogFormat.Json ? "json" : "text",
            });
            sandbox.Watch = _watcher.Watch(dir.Path, sandbox.Poke);
            sandbox.Shim = _pool.Assign(id);
        }
        catch (Exception ex)
        {
            sandbox.Watch?.Dispose();
            _sandboxes.TryRemove(id, out _);
            TryDeleteDir(dir.Path);
            if (ex is IOException)
            {
                // A full or failing state dir: refused with the reason, nothing left to remove.
                throw CorralException.Host($"cannot create sandbox {id} in {SandboxesDir}: {ex.Message}", ex);
            }

            throw;
        }

        return sandbox;
    }

    /// <summary>
    /// The rest of a create, after <see cref="Create"/>: for an image sandbox, waits for the shim's verdict on the
    /// command and workdir (a refusal is answered and undone like any bad input); then the sandbox is announced
    /// and watched. Not cancellable: a create that got this far completes either way.
    /// </summary>
    public async Task<Sandbox> CompleteCreateAsync(Sandbox sandbox, bool fromImage)
    {
        ArgumentNullException.ThrowIfNull(sandbox);
        if (fromImage)
        {
            // What the image holds is known once its overlay is mounted: the shim checks the command
            // and workdir there.
            await AwaitImageChecksAsync(sandbox).ConfigureAwait(false);
        }

        _events.Publish(SandboxEventType.Created, sandbox.Id);
        metrics?.SandboxCreated(sandbox.Record.Runtime);
        DaemonLog.SandboxCreated(logger, sandbox.Id, sandbox.Record.Runtime, sandbox.Shim!.Id);
        _ = MonitorAsync(sandbox);
        return sandbox;
    }

    private async Task AwaitImageChecksAsync(Sandbox sandbox)
    {
        var shim = sandbox.Shim!;
        var files = sandbox.Files;
        var deadline = time.GetTimestamp() + (long)(60 * time.TimestampFrequency);
        while (files.ReadStatus()?.Pid is null && !File.Exists(files.ExitFile) && !File.Exists(files.FailureFile) && !shim.HasExited && time.GetTimestamp() < deadline)
        {
            // Woken by the shim's files (inotify), with the sandbox's own short poll as the safety net.
            await sandbox.ChangedAsync(CancellationToken.None).ConfigureAwait(false);
        }

        if (files.ReadFailure() is { BadInput: true } failure)
        {
            using (var exited = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
            {
                try
                {
                    await shim.WaitForExitAsync(exited.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Removed below all the same; a shim that outlives its refusal is gc's.
                }
            }

            shim.Dispose();
            sandbox.Watch?.Dispose();
            _sandboxes.TryRemove(sandbox.Id, out _);
            TryDeleteDir(sandbox.Dir);
            throw CorralException.Invalid(failure.Error);
        }
    }

    public Sandbox Get(string id) =>
        _sandboxes.TryGetValue(id, out var sandbox)
            ? sandbox
            : throw CorralException.NotFound($"no such sandbox: {id}");

    public IReadOnlyList<Sandbox> List() => [.. _sandboxes.Values.OrderBy(s => s.Record.CreatedAt)];

    public async Task<ExitRecord> WaitAsync(string id, CancellationToken cancellationToken)
    {
        var sandbox = Get(id);
        try
        {
            return await sandbox.Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (CorralException ex)
        {
            // Its own kind when it has one (a host fault stays one); otherwise the sandbox failed to run.
            var kind = ex.Kind is ErrorKind.Unspecified or ErrorKind.InvalidArgument ? ErrorKind.RuntimeFailure : ex.Kind;
            throw new CorralException(kind, $"sandbox {id} did not run: {ex.Message}", ex.ExitCode, ex);
        }
    }

    public async Task KillAsync(string id, int signal, TimeSpan grace, CancellationToken cancellationToken)
    {
        var sandbox = Get(id);
        if (sandbox.HasEnded)
        {
            throw CorralException.Precondition($"sandbox {id} has already ended");
        }

        // Right after Create the runtime has no container to signal yet: wait (bounded) until it has,
        // so the signal asked for is the one sent (a KILL stays a KILL, and the exit verdict knows it).
        var since = time.GetTimestamp();
        while (sandbox.Record.Pid is null && !sandbox.HasEnded && time.GetElapsedTime(since) < TimeSpan.FromSeconds(10))
        {
            cancellationToken.ThrowIfCancellationRequested();
            await sandbox.ChangedAsync(cancellationToken).WaitAsync(TimeSpan.FromMilliseconds(50), time, CancellationToken.None).ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
        }

        if (sandbox.HasEnded)
        {
            return;
        }

        if (sandbox.Record.Pid is null)
        {
            // The runtime has no container to signal yet: the shim stops the run (it kills what it started).
            RequestStop(sandbox);
            return;
        }

        try
        {
            await supervisor.KillAsync(id, signal, grace, cancellationToken).ConfigureAwait(false);
        }
        catch (CorralException) when (sandbox.HasEnded || !sandbox.Files.IsShimAlive())
        {
            // It ended while we signalled it: that is what was asked.
        }
    }

    public void Remove(string id)
    {
        var sandbox = Get(id);
        lock (sandbox.EndGate)
        {
            // Under the gate: "removed" never comes before the sandbox's "exited".
            if (!sandbox.HasEnded)
            {
                throw CorralException.Precondition($"sandbox {id} is still running; kill it first (Kill), then remove it");
            }

            if (!_sandboxes.TryRemove(new KeyValuePair<string, Sandbox>(id, sandbox)) || !sandbox.Removed())
            {
                return;
            }

            _events.Publish(SandboxEventType.Removed, id);
        }

        sandbox.Watch?.Dispose();
        TryDeleteDir(sandbox.Dir);
        DaemonLog.SandboxRemoved(logger, id);
    }

    /// <summary>Finds every sandbox an earlier daemon left: adopts running ones, keeps ended ones' records.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        // The daemon's own: 0700 even when an earlier daemon (or a umask) left it open.
        PrivateFiles.CreateOwnDirectory(_options.StateDir);
        PrivateFiles.CreateOwnDirectory(SandboxesDir);
        int adopted = 0, ended = 0, dropped = 0;
        _recovering = true;
        foreach (var path in Directory.GetDirectories(SandboxesDir))
        {
            var dir = new ShimDirectory(path);
            var record = ReadRecord(path);
            if (record is null || !ContainerId.IsValid(dir.Id, out _) || record.Id != dir.Id)
            {
                // Not a sandbox, or the daemon died while creating it, before its shim existed.
                TryDeleteDir(path);
                dropped++;
                continue;
            }

            var sandbox = new Sandbox(record, dir);
            _sandboxes[dir.Id] = sandbox;
            sandbox.Watch = _watcher.Watch(path, sandbox.Poke);
            if (Refresh(sandbox))
            {
                ended++;
                continue;
            }

            adopted++;
            _ = MonitorAsync(sandbox);
        }

        _recovering = false;
        DaemonLog.Recovered(logger, adopted, ended, dropped, SandboxesDir);
        return Task.CompletedTask;
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Once serving: the ready shims are started (in the background).</summary>
    public Task StartedAsync(CancellationToken cancellationToken)
    {
        _pool.Fill();

        // Bridged networks whose owners died while no daemon watched them (a shim's kill -9, a `corral
        // run` killed): removed in the background, as `corral gc` would.
        _ = Task.Run(async () =>
        {
            try
            {
                await supervisor.ReconcileNetworksAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or CorralException or UnauthorizedAccessException)
            {
                DaemonLog.NetworkReconcileFailed(logger, ex.Message);
            }
        }, CancellationToken.None);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Before the server stops: every running sandbox's shim gets SIGTERM (the container SIGTERM, then
    /// SIGKILL after the grace) and cleans up, so calls waiting on them (Wait, Logs, Events) get their
    /// answers and end. A daemon killed outright (SIGKILL) leaves them running, to be adopted.
    /// </summary>
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        _stopping = true;
        _pool.Dispose();
        var running = _sandboxes.Values.Where(s => !s.HasEnded).ToList();
        if (running.Count > 0)
        {
            DaemonLog.StoppingSandboxes(logger, running.Count, string.Join(',', running.Select(s => s.Id)));
            foreach (var sandbox in running)
            {
                RequestStop(sandbox);
            }

            var all = Task.WhenAll(running.Select(s => s.Completion.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default)));
            var bound = _options.ShutdownGrace + TimeSpan.FromSeconds(20);
            if (await Task.WhenAny(all, Task.Delay(bound, time, CancellationToken.None)).ConfigureAwait(false) != all)
            {
                DaemonLog.StillRunning(logger, string.Join(',', running.Where(s => !s.HasEnded).Select(s => s.Id)));
            }
        }

        _events.Complete();
        DaemonLog.Stopped(logger);
    }

    public void Dispose()
    {
        _pool.Dispose();
        _watcher.Dispose();
    }

    /// <summary>Follows one sandbox until it ended: what its shim writes, or the shim's death.</summary>
    private async Task MonitorAsync(Sandbox sandbox)
    {
        try
        {
            var shim = sandbox.Shim;
            if (shim is not null)
            {
                shim.EnableRaisingEvents = true;
                shim.Exited += (_, _) => sandbox.Poke();
            }

            // Event driven, no timer per sandbox: woken by the directory's inotify watch (a queue overflow
            // wakes every sandbox) and by the shim's exit, seen through its Process when this daemon started
            // it and through a pidfd when it adopted it. Only where neither exit can be watched (no status
            // yet, no pidfds) does it look again every second.
            while (true)
            {
                var changed = sandbox.NextChange();
                if (Refresh(sandbox))
                {
                    break;
                }

                var alive = shim is not null ? !shim.HasExited : sandbox.Files.IsShimAlive();
                if (!alive)
                {
                    if (Refresh(sandbox))
                    {
                        // Its record came in as the shim went.
                        break;
                    }

                    if (shim is null && time.GetUtcNow() - sandbox.Record.CreatedAt < ShimStartGrace)
                    {
                        // Adopted right after an earlier daemon started its shim: give the shim time to lock.
                        await Task.Delay(TimeSpan.FromMilliseconds(200), time).ConfigureAwait(false);
                        continue;
                    }

                    await ReclaimAsync(sandbox, shim is null ? "its shim is gone" : $"its shim (pid {shim.Id}) exited with {shim.ExitCode}").ConfigureAwait(false);
                    continue;
                }

                await (shim is not null || WatchAdoptedShim(sandbox) ? changed : Sandbox.ChangedOrPolledAsync(changed, CancellationToken.None)).ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            // Failed like any sandbox that could not run: its record, its event, and a completion that
            // lets Wait answer, Remove proceed and admission release its limits.
            DaemonLog.MonitorFailed(logger, sandbox.Id, ex.Message);
            var error = $"the daemon lost track of the sandbox: {ex.Message}";
            MarkFailed(sandbox, error, CorralException.Host(error));
        }
        finally
        {
            sandbox.Shim?.Dispose();
            sandbox.ShimExitWatch?.Dispose();
        }
    }

    /// <summary>The runtime reported the sandbox's pid: the first time, its record, its Started event and the metric.</summary>
    private void Started(Sandbox sandbox, int pid)
    {
        if (!sandbox.Start(pid, out var started))
        {
            return;
        }

        if (started is not null)
        {
            WriteRecord(started);
        }

        _events.Publish(SandboxEventType.Started, sandbox.Id, pid);
        if (sandbox.Shim is not null)
        {
            // Only sandboxes this daemon created: an adopted one's start was long ago.
            metrics?.SandboxStarted(sandbox.Record);
        }
    }

    /// <summary>
    /// Watches the exit of an adopted sandbox's shim (pid from its status); true once watched. The pid is
    /// opened first and the shim's lock checked after: while the lock is held, that pid is the shim's.
    /// </summary>
    private static bool WatchAdoptedShim(Sandbox sandbox)
    {
        if (sandbox.ShimExitWatch is not null)
        {
            return true;
        }

        if (sandbox.Files.ReadStatus()?.ShimPid is not { } pid || ProcessExitWatch.TryWatch(pid, sandbox.Poke) is not { } watch)
        {
            return false;
        }

        if (!sandbox.Files.IsShimAlive())
        {
            watch.Dispose();
            return false;
        }

        sandbox.ShimExitWatch = watch;
        return true;
    }

    /// <summary>The shim died without a record: remove what its container left and say so.</summary>
    private async Task ReclaimAsync(Sandbox sandbox, string why)
    {
        DaemonLog.ShimLost(logger, sandbox.Id, why);
        string? failure = null;
        if (ContainerRuntimes.TryParse(sandbox.Record.Runtime, out var kind))
        {
            try
            {
                await supervisor.ReclaimAsync(sandbox.Id, kind).ConfigureAwait(false);
            }
            catch (CorralException ex)
            {
                failure = ex.Message;
            }
        }

        try
        {
            // Its root's files stay (they can be copied out until it is removed); its mounts go now.
            WritableRoot.Unmount(RootDirOf(sandbox.Dir));
        }
        catch (IOException ex)
        {
            DaemonLog.RootUnmountFailed(logger, sandbox.Id, RootDirOf(sandbox.Dir), ex.Message);
        }

        if (failure is not null)
        {
            // Said, not hidden: what is left shows in `corral ps` as orphaned and `corral gc` retries it.
            sandbox.Files.WriteFailure($"the sandbox's supervision ended without an exit record ({why}); removing its container failed: {failure}");
            return;
        }

        sandbox.Files.WriteFailure($"the sandbox's supervision ended without an exit record ({why}); its container was stopped and removed");
    }

    /// <summary>Takes in what the shim wrote, publishing events in order; true once the sandbox ended.</summary>
    private bool Refresh(Sandbox sandbox)
    {
        if (sandbox.HasEnded)
        {
            return true;
        }

        var status = sandbox.Files.ReadStatus();
        if (status is not null)
        {
            sandbox.ShimPid = status.ShimPid;
            if (sandbox.State == SandboxState.Stopping && !sandbox.StopSent)
            {
                sandbox.StopSent = sandbox.Files.SignalShim(status.ShimPid, Signals.SIGTERM);
            }

            if (status.Pid is { } pid)
            {
                Started(sandbox, pid);
            }

            for (; sandbox.OomEventsPublished < status.OomEvents.Count; sandbox.OomEventsPublished++)
            {
                var oom = status.OomEvents[sandbox.OomEventsPublished];
                _events.Publish(SandboxEventType.Oom, sandbox.Id, sandbox.Record.Pid, $"{oom.Kind}: {oom.Detail}");
                if (!_recovering)
                {
                    metrics?.OomSeen(sandbox.Record.Runtime, oom.At);
                }
            }
        }

        if (sandbox.Files.ReadExit() is { } exit)
        {
            if (exit.Pid is { } exitPid)
            {
                // A run so short that it started and ended between the look at its status and this one:
                // started all the same, and told so before its exit.
                Started(sandbox, exitPid);
            }

            if (exit.OomKilled && sandbox.OomEventsPublished == 0)
            {
                // The kill was counted at exit (cgroup v1 with runc), not reported while running.
                _events.Publish(SandboxEventType.Oom, sandbox.Id, exit.Pid, exit.OomReason);
                sandbox.OomEventsPublished = 1;
            }

            lock (sandbox.EndGate)
            {
                var ended = sandbox.Exited(exit, record =>
                {
                    WriteRecord(record);
                    _events.Publish(SandboxEventType.Exited, sandbox.Id, exit.Pid, exit: exit);
                });
                if (!ended)
                {
                    return true;
                }
            }

            if (!_recovering)
            {
                metrics?.SandboxExited(exit);
            }

            DaemonLog.SandboxExited(logger, sandbox.Id, exit.ExitCode, exit.OomKilled);
            return true;
        }

        if (sandbox.Files.ReadFailure()?.Error is { } error)
        {
            MarkFailed(sandbox, error, new CorralException(error));
            return true;
        }

        return false;
    }

    /// <summary>Ends a sandbox that could not run (or was lost): its record, its event, its completion, once.</summary>
    private void MarkFailed(Sandbox sandbox, string error, Exception cause)
    {
        lock (sandbox.EndGate)
        {
            var failed = sandbox.Failed(error, cause, record =>
            {
                WriteRecord(record);
                _events.Publish(SandboxEventType.Failed, sandbox.Id, detail: error);
            });
            if (!failed)
            {
                return;
            }
        }

        if (!_recovering)
        {
            metrics?.SandboxFailed(sandbox.Record.Runtime);
        }

        DaemonLog.SandboxFailed(logger, sandbox.Id, error);
    }

    /// <summary>
    /// SIGTERM to the shim: it stops the container (SIGTERM, SIGKILL after the grace) and writes how it
    /// ended. A shim handles the signal once it wrote its status; until then the stop waits for that.
    /// </summary>
    private static void RequestStop(Sandbox sandbox)
    {
        sandbox.Stop();
        if (sandbox.State != SandboxState.Stopping)
        {
            return;
        }

        if (sandbox.Files.ReadStatus() is { } status)
        {
            sandbox.StopSent = sandbox.Files.SignalShim(status.ShimPid, Signals.SIGTERM);
        }

        sandbox.Poke();
    }

    private SandboxRecord? ReadRecord(string dir)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(dir, "sandbox.json")), DaemonJsonContext.Default.SandboxRecord);
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            DaemonLog.RecordUnreadable(logger, dir, ex.Message);
            return null;
        }
    }

    private void WriteRecord(SandboxRecord record)
    {
        var path = Path.Combine(SandboxesDir, record.Id, "sandbox.json");
        try
        {
            PrivateFiles.WriteAtomically(path, JsonSerializer.Serialize(record, DaemonJsonContext.Default.SandboxRecord));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Removed meanwhile, or the disk is full: the in-memory record still answers.
            DaemonLog.RecordWriteFailed(logger, record.Id, path, ex.Message);
        }
    }

    /// <summary>Where a sandbox's writable root lives (kept after it ends, until it is removed).</summary>
    internal static string RootDirOf(string dir) => Path.Combine(dir, "root");

    private void TryDeleteDir(string dir)
    {
        try
        {
            // Its root's mounts first: the tree below is never deleted through a mounted overlay or disk.
            var layers = WritableRoot.Remove(RootDirOf(dir));
            ImageStore.OfLayers(layers)?.CollectReleasedLayers();
            // Never through a symlink planted in the state dir: only what the daemon created goes.
            PrivateFiles.DeleteTree(_options.StateDir, dir);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CorralException)
        {
            // Best effort; a record without its files is dropped at the next start.
        }
    }
}
