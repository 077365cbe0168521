namespace Corral.Oom;

public enum OomStrategy
{
    /// <summary>The kernel's own counters of the container's cgroup, event driven.</summary>
    Cgroup,

    /// <summary>The seed's fallback: RSS of the runtime's process tree polled from /proc; only ever "likely".</summary>
    ProcessTree,
}

public enum OomEventKind
{
    /// <summary>The kernel OOM-killed a process in the container's cgroup.</summary>
    Kill,

    /// <summary>The cgroup sat at its limit thrashing without a kill; the container must be ended.</summary>
    Livelock,

    /// <summary>A guess by the process-tree watcher: usage crossed its threshold.</summary>
    Likely,
}

public sealed record OomEvent(OomEventKind Kind, DateTimeOffset At, long OomKills, long MemoryBytes, string Detail);

/// <summary>What a watcher saw over the container's whole life, after its last synchronous read.</summary>
/// <param name="OomNotified">
/// The kernel announced an OOM in the cgroup (v1 memory.oom_control eventfd). On v1 the kill itself is
/// counted only in the victim's own cgroup: runc's child, which runc removes as it exits, sometimes
/// before the counter could be read. The notification is the kernel's word that an OOM happened.
/// </param>
public sealed record OomSummary(long OomKills, bool Livelock, bool Likely, bool OomNotified = false)
{
    public static OomSummary None { get; } = new(0, false, false);
}

/// <summary>Watches one container for memory exhaustion. Start before the workload runs.</summary>
public interface IOomWatcher : IDisposable
{
    OomStrategy Strategy { get; }

    /// <summary>Begins watching; <paramref name="onEvent"/> may be called on any thread.</summary>
    void Start(Action<OomEvent> onEvent);

    /// <summary>
    /// Stops watching after one last synchronous read of the counters, reporting through the
    /// callback any kill not yet reported, so an OOM is always published before the exit.
    /// </summary>
    OomSummary Stop();
}

/// <summary>Rules for the livelock and process-tree strategies.</summary>
public sealed class OomOptions
{
    /// <summary>Seed fallback: fraction of the limit at which the RSS watcher reports "OOM likely".</summary>
    public double ProcessTreeThreshold { get; set; } = 0.95;

    public TimeSpan ProcessTreeInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Usage at or above this fraction of the limit arms the livelock check.</summary>
    public double LivelockUsageFraction { get; set; } = 0.97;

    /// <summary>Limit hits per second (failcnt / memory.events max) that count as thrashing.</summary>
    public double LivelockHitsPerSecond { get; set; } = 1000;

    /// <summary>How long thrashing must last, with no OOM kill, before the container is ended.</summary>
    public TimeSpan LivelockDuration { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>Sampling interval while the livelock check is armed (only then).</summary>
    public TimeSpan LivelockSampleInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}
