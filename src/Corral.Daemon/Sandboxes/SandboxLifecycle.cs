namespace Corral.Daemon.Sandboxes;

/// <summary>Where a sandbox is in its life. Its flags, its completion and its record's status all derive from this.</summary>
public enum SandboxState
{
    /// <summary>Registered, its shim starting; the runtime has no container yet.</summary>
    Created,

    /// <summary>The runtime reported the container's pid.</summary>
    Running,

    /// <summary>A stop was asked (Kill before the container started, the daemon's shutdown): the shim is ending the run.</summary>
    Stopping,

    /// <summary>It ran and ended; its exit record says how, and everything it made on the host is gone.</summary>
    Exited,

    /// <summary>It could not run, or its supervision was lost; the record's error says why.</summary>
    Failed,

    /// <summary>Removed by a caller after it ended; its directory is gone.</summary>
    Removed,
}

/// <summary>What happens to a sandbox, as the registry learns it.</summary>
public enum SandboxTrigger
{
    /// <summary>The runtime reported a pid.</summary>
    Start,

    /// <summary>A stop was asked.</summary>
    Stop,

    /// <summary>The shim wrote the exit record.</summary>
    Exit,

    /// <summary>The shim wrote a failure, or the daemon lost track of the sandbox.</summary>
    Fail,

    /// <summary>A caller removed it.</summary>
    Remove,
}

/// <summary>
/// The sandbox state machine, with no I/O: created -> running -> stopping -> exited | failed -> removed.
/// An exit or a failure ends any state that has not ended, once; nothing leaves an ended state but Remove;
/// a start seen while stopping keeps the stop. The registry acts (events, record, completion) only on
/// transitions this allows, so each happens once and in this order.
/// </summary>
public static class SandboxLifecycle
{
    /// <summary>The state after <paramref name="trigger"/>, or null when it does not apply there (nothing changes).</summary>
    public static SandboxState? Next(SandboxState from, SandboxTrigger trigger) => (from, trigger) switch
    {
        (SandboxState.Created, SandboxTrigger.Start) => SandboxState.Running,
        (SandboxState.Running, SandboxTrigger.Start) => SandboxState.Running,
        (SandboxState.Stopping, SandboxTrigger.Start) => SandboxState.Stopping,
        (SandboxState.Created or SandboxState.Running, SandboxTrigger.Stop) => SandboxState.Stopping,
        (SandboxState.Created or SandboxState.Running or SandboxState.Stopping, SandboxTrigger.Exit) => SandboxState.Exited,
        (SandboxState.Created or SandboxState.Running or SandboxState.Stopping, SandboxTrigger.Fail) => SandboxState.Failed,
        (SandboxState.Exited or SandboxState.Failed, SandboxTrigger.Remove) => SandboxState.Removed,
        _ => null,
    };

    /// <summary>True once the run is over: its completion has its answer and it holds nothing on the host.</summary>
    public static bool HasEnded(SandboxState state) => state is SandboxState.Exited or SandboxState.Failed or SandboxState.Removed;

    /// <summary>The status a record keeps and the API shows: a stop in progress is still running.</summary>
    public static SandboxStatus ToStatus(SandboxState state) => state switch
    {
        SandboxState.Created => SandboxStatus.Created,
        SandboxState.Running or SandboxState.Stopping => SandboxStatus.Running,
        SandboxState.Exited => SandboxStatus.Exited,
        _ => SandboxStatus.Failed,
    };

    /// <summary>
    /// Where a sandbox found by a restarted daemon starts: an ended record is taken up as running, so the
    /// shim's files (its exit record or failure) end it again through <see cref="Next"/>, with its completion.
    /// </summary>
    public static SandboxState Restored(SandboxStatus status) =>
        status == SandboxStatus.Created ? SandboxState.Created : SandboxState.Running;
}
