using System.Text.Json.Serialization;
using Corral.Shim;
using Corral.Supervision;

namespace Corral.Daemon.Sandboxes;

public enum SandboxStatus
{
    Created,
    Running,
    Exited,
    Failed,
}

/// <summary>What a caller asked for, as the daemon keeps it next to the sandbox's logs.</summary>
public sealed record SandboxRecord
{
    public required string Id { get; init; }

    public required string Runtime { get; init; }

    public required string Rootfs { get; init; }

    public required IReadOnlyList<string> Command { get; init; }

    public IReadOnlyDictionary<string, string> Env { get; init; } = new Dictionary<string, string>();

    public string? Workdir { get; init; }

    public double? Cpus { get; init; }

    public long? MemoryBytes { get; init; }

    public long? Pids { get; init; }

    public double? TimeoutSeconds { get; init; }

    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();

    public required DateTimeOffset CreatedAt { get; init; }

    public SandboxStatus Status { get; init; }

    public int? Pid { get; init; }

    public string? Error { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true, UseStringEnumConverter = true)]
[JsonSerializable(typeof(SandboxRecord))]
internal sealed partial class DaemonJsonContext : JsonSerializerContext;

/// <summary>
/// One sandbox the daemon runs or ran: its record, its shim's directory, and its state
/// (<see cref="SandboxLifecycle"/>), from which <see cref="HasEnded"/>, <see cref="Completion"/> and the
/// record's status derive. The registry moves it; each move happens once.
/// </summary>
public sealed class Sandbox
{
    /// <summary>How often a waiter looks again on its own (a caller waiting on a client's behalf; the registry's own watch polls only what it cannot watch).</summary>
    private static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(1);
    private readonly Lock _gate = new();
    private readonly TaskCompletionSource<ExitRecord> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private SandboxRecord _record;
    private SandboxState _state;
    private int? _announcedPid;
    private ExitRecord? _exit;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    internal Sandbox(SandboxRecord record, ShimDirectory files)
    {
        _record = record;
        _state = SandboxLifecycle.Restored(record.Status);
        Files = files;
        _completion.Task.ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
    }

    public string Id => _record.Id;

    public string Dir => Files.Path;

    /// <summary>A bridged sandbox's address and ports, as its shim reported them (read when asked).</summary>
    public Corral.Networking.NetworkAttachment? Network => Files.ReadStatus()?.Network;

    public ShimDirectory Files { get; }

    public SandboxRecord Record
    {
        get
        {
            lock (_gate)
            {
                return _record;
            }
        }
    }

    public SandboxState State
    {
        get
        {
            lock (_gate)
            {
                return _state;
            }
        }
    }

    public bool HasEnded => SandboxLifecycle.HasEnded(State);

    /// <summary>Completes when the sandbox ended (exited, or failed with the reason) and everything it made on the host was removed.</summary>
    public Task<ExitRecord> Completion => _completion.Task;

    public ExitRecord? Exit
    {
        get
        {
            lock (_gate)
            {
                return _exit;
            }
        }
    }

    /// <summary>The shim process when this daemon started it; null for one adopted after a restart.</summary>
    internal System.Diagnostics.Process? Shim { get; set; }

    internal IDisposable? Watch { get; set; }

    /// <summary>The exit of a shim this daemon adopted (a pidfd): what Process.Exited is for one it started.</summary>
    internal IDisposable? ShimExitWatch { get; set; }

    /// <summary>Held while the sandbox ends or is removed, so those happen (and are told) in order.</summary>
    internal Lock EndGate { get; } = new();

    /// <summary>Whether the shim got its SIGTERM for a stop (<see cref="SandboxState.Stopping"/>).</summary>
    internal volatile bool StopSent;

    internal int OomEventsPublished { get; set; }

    /// <summary>The shim's pid as its status says (for signals to a shim this daemon did not start).</summary>
    internal int? ShimPid { get; set; }

    /// <summary>
    /// Completes at the next change (a file in the sandbox's directory, the shim's exit): taken before
    /// looking, so that a change between the look and the wait is not missed.
    /// </summary>
    internal Task NextChange()
    {
        lock (_gate)
        {
            return _changed.Task;
        }
    }

    /// <summary>Completes when something in the sandbox's directory changed, or after a short poll.</summary>
    public Task ChangedAsync(CancellationToken cancellationToken) => ChangedOrPolledAsync(NextChange(), cancellationToken);

    /// <summary>Completes with <paramref name="changed"/> (from <see cref="NextChange"/>), or after a short poll.</summary>
    internal static async Task ChangedOrPolledAsync(Task changed, CancellationToken cancellationToken)
    {
        try
        {
            await changed.WaitAsync(PollInterval, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // The poll: inotify missed nothing so far, but a look costs little.
        }
    }

    internal void Poke()
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            changed = _changed;
            _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
    }

    /// <summary>
    /// The runtime reported <paramref name="pid"/>: true the first time this pid is seen (announce it);
    /// <paramref name="changed"/> is the record to keep when it changed (running, with the pid).
    /// </summary>
    internal bool Start(int pid, out SandboxRecord? changed)
    {
        changed = null;
        lock (_gate)
        {
            if (SandboxLifecycle.Next(_state, SandboxTrigger.Start) is not { } next || _announcedPid == pid)
            {
                return false;
            }

            _state = next;
            _announcedPid = pid;
            var status = SandboxLifecycle.ToStatus(next);
            if (_record.Status != status || _record.Pid != pid)
            {
                changed = _record = _record with { Status = status, Pid = pid };
            }

            return true;
        }
    }

    /// <summary>A stop was asked: true when this moved the sandbox to <see cref="SandboxState.Stopping"/>.</summary>
    internal bool Stop() => Move(SandboxTrigger.Stop);

    /// <summary>
    /// The shim's exit record: true when this ended the sandbox. <paramref name="announce"/> gets the record
    /// to keep (to store it and publish the event) before <see cref="Completion"/> completes, so that a waiter
    /// (or a daemon shutting down) never sees the end before the event is out.
    /// </summary>
    internal bool Exited(ExitRecord exit, Action<SandboxRecord> announce) =>
        End(SandboxTrigger.Exit, record => record, exit, announce, () => _completion.TrySetResult(exit));

    /// <summary>
    /// It could not run, or its supervision was lost: true when this ended the sandbox; <paramref name="announce"/>
    /// as for <see cref="Exited"/>, then <see cref="Completion"/> fails with <paramref name="cause"/>.
    /// </summary>
    internal bool Failed(string error, Exception cause, Action<SandboxRecord> announce) =>
        End(SandboxTrigger.Fail, record => record with { Error = error }, null, announce, () => _completion.TrySetException(cause));

    /// <summary>A caller removed it: true when it had ended and now is removed.</summary>
    internal bool Removed() => Move(SandboxTrigger.Remove);

    private bool Move(SandboxTrigger trigger)
    {
        lock (_gate)
        {
            if (SandboxLifecycle.Next(_state, trigger) is not { } next)
            {
                return false;
            }

            _state = next;
            return true;
        }
    }

    /// <summary>An exit or a failure: the move and the record under the gate, then the announcement, then the completion.</summary>
    private bool End(SandboxTrigger trigger, Func<SandboxRecord, SandboxRecord> change, ExitRecord? exit, Action<SandboxRecord> announce, Action complete)
    {
        SandboxRecord record;
        lock (_gate)
        {
            if (SandboxLifecycle.Next(_state, trigger) is not { } next)
            {
                return false;
            }

            _state = next;
            _exit = exit;
            record = _record = change(_record) with { Status = SandboxLifecycle.ToStatus(next) };
        }

        try
        {
            announce(record);
        }
        finally
        {
            complete();
        }

        return true;
    }
}
