using System.Collections.Concurrent;
using System.Text.Json;
using Corral.Common;
using Corral.Daemon.Hosting;
using Corral.Daemon.Logging;
using Corral.Oom;
using Corral.Supervision;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Corral.Daemon.Sandboxes;

public enum SandboxErrorKind
{
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    Aborted,
}

/// <summary>A request the daemon refuses for a reason other than bad input.</summary>
public sealed class SandboxException(SandboxErrorKind kind, string message) : Exception(message)
{
    public SandboxErrorKind Kind { get; } = kind;
}

/// <summary>
/// The daemon's sandboxes: starts each one's supervisor run in the background, keeps its record,
/// exit record and log under the state directory, publishes its events, and at shutdown stops
/// every sandbox still running.
/// </summary>
public sealed class SandboxRegistry(
    IOptions<DaemonOptions> options,
    ContainerSupervisor supervisor,
    EventHub events,
    TimeProvider time,
    ILogger<SandboxRegistry> logger) : IHostedLifecycleService
{
    private readonly DaemonOptions _options = options.Value;
    private readonly EventHub _events = events;
    private readonly ConcurrentDictionary<string, Sandbox> _sandboxes = new(StringComparer.Ordinal);
    private volatile bool _stopping;

    private string SandboxesDir => Path.Combine(_options.StateDir, "sandboxes");

    public int Count => _sandboxes.Count;

    public bool IsStopping => _stopping;

    public Sandbox Create(ContainerRequest request, IReadOnlyDictionary<string, string> labels)
    {
        if (_stopping)
        {
            throw new SandboxException(SandboxErrorKind.Unavailable, "the daemon is shutting down");
        }

        var id = request.Id is { Length: > 0 } name ? ContainerId.Validate(name) : ContainerId.Generate();
        var dir = Path.Combine(SandboxesDir, id);
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
        var reservation = new Sandbox(record, dir, null!);
        if (!_sandboxes.TryAdd(id, reservation))
        {
            throw new SandboxException(SandboxErrorKind.AlreadyExists, $"a sandbox named '{id}' already exists; remove it first or choose another name");
        }

        Sandbox sandbox;
        try
        {
            Directory.CreateDirectory(dir);
            var log = new SandboxLog(Path.Combine(dir, "output.log"), _options.LogCapBytes, () => DaemonLog.LogCapReached(logger, id, _options.LogCapBytes));
            sandbox = new Sandbox(record, dir, log);
            var observer = new Observer(this, sandbox);
            var io = new ContainerIo(log.StreamFor(OutputStream.Stdout), log.StreamFor(OutputStream.Stderr));

            // Validation runs synchronously inside RunAsync, before anything is created: a bad
            // request fails here, and the caller gets it as its answer.
            var run = supervisor.RunAsync(request with { Id = id }, io, observer, sandbox.Stop.Token);
            if (run.IsFaulted)
            {
                log.Close();
                run.GetAwaiter().GetResult();
            }

            sandbox.Completion = FinishAsync(sandbox, observer, run);
            _sandboxes[id] = sandbox;
            WriteRecord(sandbox.Record);
            _events.Publish(SandboxEventType.Created, id);
            DaemonLog.SandboxCreated(logger, id, record.Runtime);
            observer.Release();
        }
        catch
        {
            // Validation failed: nothing was created, and the observer was never called.
            _sandboxes.TryRemove(id, out _);
            TryDeleteDir(dir);
            throw;
        }

        return sandbox;
    }

    public Sandbox Get(string id) =>
        _sandboxes.TryGetValue(id, out var sandbox) && sandbox.Completion is not null
            ? sandbox
            : throw new SandboxException(SandboxErrorKind.NotFound, $"no such sandbox: {id}");

    public IReadOnlyList<Sandbox> List() =>
        [.. _sandboxes.Values.Where(s => s.Completion is not null).OrderBy(s => s.Record.CreatedAt)];

    public async Task<ExitRecord> WaitAsync(string id, CancellationToken cancellationToken)
    {
        var sandbox = Get(id);
        try
        {
            return await sandbox.Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (CorralException ex)
        {
            throw new SandboxException(SandboxErrorKind.Aborted, $"sandbox {id} did not run: {ex.Message}");
        }
    }

    public async Task KillAsync(string id, int signal, TimeSpan grace, CancellationToken cancellationToken)
    {
        var sandbox = Get(id);
        if (sandbox.HasEnded)
        {
            throw new SandboxException(SandboxErrorKind.FailedPrecondition, $"sandbox {id} has already ended");
        }

        if (sandbox.Record.Status == SandboxStatus.Created)
        {
            // The runtime has no container to signal yet: stop the run itself (it kills what it started).
            await sandbox.Stop.CancelAsync().ConfigureAwait(false);
            return;
        }

        try
        {
            await supervisor.KillAsync(id, signal, grace, cancellationToken).ConfigureAwait(false);
        }
        catch (CorralException) when (sandbox.HasEnded || sandbox.Completion.IsCompleted)
        {
            // It ended while we signalled it: that is what was asked.
        }
    }

    public void Remove(string id)
    {
        var sandbox = Get(id);
        if (!sandbox.Completion.IsCompleted)
        {
            throw new SandboxException(SandboxErrorKind.FailedPrecondition, $"sandbox {id} is still running; kill it first (Kill), then remove it");
        }

        if (_sandboxes.TryRemove(new KeyValuePair<string, Sandbox>(id, sandbox)))
        {
            sandbox.Log.Close();
            TryDeleteDir(sandbox.Dir);
            _events.Publish(SandboxEventType.Removed, id);
            DaemonLog.SandboxRemoved(logger, id);
        }
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        // No adoption of an earlier daemon's sandboxes in this phase: their records are stale.
        if (Directory.Exists(SandboxesDir))
        {
            var stale = Directory.GetDirectories(SandboxesDir);
            foreach (var dir in stale)
            {
                TryDeleteDir(dir);
            }

            if (stale.Length > 0)
            {
                DaemonLog.StaleRecordsRemoved(logger, stale.Length, SandboxesDir);
            }
        }

        Directory.CreateDirectory(SandboxesDir);
        return Task.CompletedTask;
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Before the server stops: every running sandbox gets SIGTERM, then SIGKILL after the grace, and
    /// is cleaned up, so calls waiting on them (Wait, Logs, Events) get their answers and end.
    /// </summary>
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        _stopping = true;
        var running = _sandboxes.Values.Where(s => s.Completion is { IsCompleted: false }).ToList();
        if (running.Count > 0)
        {
            DaemonLog.StoppingSandboxes(logger, running.Count, string.Join(',', running.Select(s => s.Id)));
            foreach (var sandbox in running)
            {
                await sandbox.Stop.CancelAsync().ConfigureAwait(false);
            }

            var all = Task.WhenAll(running.Select(s => s.Completion.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default)));
            var bound = _options.ShutdownGrace + TimeSpan.FromSeconds(20);
            if (await Task.WhenAny(all, Task.Delay(bound, time, CancellationToken.None)).ConfigureAwait(false) != all)
            {
                DaemonLog.StillRunning(logger, string.Join(',', running.Where(s => !s.Completion.IsCompleted).Select(s => s.Id)));
            }
        }

        _events.Complete();
        DaemonLog.Stopped(logger);
    }

    private async Task<ExitRecord> FinishAsync(Sandbox sandbox, Observer observer, Task<ExitRecord> run)
    {
        try
        {
            var exit = await run.ConfigureAwait(false);
            sandbox.Exit = exit;
            WriteAtomically(sandbox.Id, Path.Combine(sandbox.Dir, "exit.json"), JsonSerializer.Serialize(exit, SupervisionJsonContext.Default.ExitRecord));
            var record = sandbox.Update(r => r with { Status = SandboxStatus.Exited });
            WriteRecord(record);
            await observer.Released.ConfigureAwait(false);
            if (exit.OomKilled && !observer.OomPublished)
            {
                // The kill was counted at exit (cgroup v1 with runc), not reported while running.
                _events.Publish(SandboxEventType.Oom, sandbox.Id, exit.Pid, exit.OomReason);
            }

            _events.Publish(SandboxEventType.Exited, sandbox.Id, exit.Pid, exit: exit);
            DaemonLog.SandboxExited(logger, sandbox.Id, exit.ExitCode, exit.OomKilled);
            return exit;
        }
        catch (Exception ex)
        {
            var record = sandbox.Update(r => r with { Status = SandboxStatus.Failed, Error = ex.Message });
            WriteRecord(record);
            await observer.Released.ConfigureAwait(false);
            _events.Publish(SandboxEventType.Failed, sandbox.Id, detail: ex.Message);
            DaemonLog.SandboxFailed(logger, sandbox.Id, ex.Message);
            throw;
        }
        finally
        {
            sandbox.Log.Close();
        }
    }

    private void WriteRecord(SandboxRecord record) =>
        WriteAtomically(record.Id, Path.Combine(SandboxesDir, record.Id, "sandbox.json"), JsonSerializer.Serialize(record, DaemonJsonContext.Default.SandboxRecord));

    private void WriteAtomically(string id, string path, string json)
    {
        try
        {
            var temp = path + ".tmp";
            File.WriteAllText(temp, json);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Removed meanwhile, or the disk is full: the in-memory record still answers.
            DaemonLog.RecordWriteFailed(logger, id, path, ex.Message);
        }
    }

    private static void TryDeleteDir(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Best effort; the next daemon start removes stale records.
        }
    }

    /// <summary>Turns the supervisor's callbacks into events, never before the sandbox's "created".</summary>
    private sealed class Observer(SandboxRegistry registry, Sandbox sandbox) : IContainerObserver
    {
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Released => _released.Task;

        public bool OomPublished { get; private set; }

        public void Release() => _released.TrySetResult();

        public void OnStarted(string id, int pid)
        {
            _released.Task.Wait();
            var record = sandbox.Update(r => r with { Status = SandboxStatus.Running, Pid = pid });
            registry.WriteRecord(record);
            registry._events.Publish(SandboxEventType.Started, id, pid);
        }

        public void OnOom(string id, OomEvent oom)
        {
            _released.Task.Wait();
            OomPublished = true;
            registry._events.Publish(SandboxEventType.Oom, id, sandbox.Record.Pid, $"{oom.Kind.ToString().ToLowerInvariant()}: {oom.Detail}");
        }
    }
}
