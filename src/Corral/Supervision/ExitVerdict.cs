using Corral.Oom;

namespace Corral.Supervision;

/// <summary>What the supervisor saw when the runtime process ended: the facts a verdict is decided from.</summary>
public sealed record ExitFacts
{
    /// <summary>The runtime process's own exit code (the workload's N or 128+S, gVisor's 128 for a sandbox killed by the host, or the runtime's own failure).</summary>
    public required int RuntimeExitCode { get; init; }

    /// <summary>The watcher's summary after its last synchronous read of the kernel's counters.</summary>
    public OomSummary Oom { get; init; } = OomSummary.None;

    /// <summary>OOM kills in the cgroup's own counters at the end (null where they could not be read).</summary>
    public long? CgroupOomKills { get; init; }

    /// <summary>Corral itself killed the container (kill, cancel, force stop): its SIGKILL is not an OOM kill.</summary>
    public bool KilledByCorral { get; init; }

    /// <summary>The container ran past its --timeout (or never started within it) and Corral ended it.</summary>
    public bool TimedOut { get; init; }

    /// <summary>The runtime's own error, when it (not the workload) decided the exit code (<see cref="Corral.Runtimes.RuntimeFailures"/>).</summary>
    public string? RuntimeFailure { get; init; }

    /// <summary>The signal Corral sent while the runtime's init still ran, if any.</summary>
    public int? SignalFromCorral { get; init; }

    /// <summary>The runtime's name, for the exit note.</summary>
    public string RuntimeName { get; init; } = "the runtime";
}

/// <summary>
/// How a container ended, decided once from <see cref="ExitFacts"/> with no I/O: the exit code the user
/// sees, whether the kernel (or the livelock rule) killed it for memory, and whether the runtime itself
/// failed (<see cref="RuntimeFailure"/>: the caller reports that as Corral's error, not as an exit).
/// </summary>
/// <param name="ExitCode">N for exit(N), 128+S for signal S, 137 for an OOM kill or a timeout on every runtime.</param>
/// <param name="OomKilled">PID 1 (or gVisor's whole sandbox) was killed for memory.</param>
/// <param name="OomReason">"kernel" or "livelock" when <paramref name="OomKilled"/>.</param>
/// <param name="OomKills">Kills counted in the container's cgroup (a child's kill counts while PID 1 lives on).</param>
/// <param name="KillInferred">
/// The kill was counted from the kernel's OOM notification and PID 1's SIGKILL alone: on cgroup v1 under
/// runc the kernel counts it only in the runtime's child cgroup, which may be gone before it is read.
/// </param>
/// <param name="ExitNote">Why the code is what it is when that is not plain (Corral's signal landed before the workload ran).</param>
/// <param name="RuntimeFailure">The runtime's own error: no exit code to report, the run failed.</param>
public sealed record ExitVerdict(int ExitCode, bool OomKilled, string? OomReason, long OomKills, bool KillInferred, string? ExitNote, string? RuntimeFailure)
{
    public static ExitVerdict Decide(ExitFacts facts)
    {
        ArgumentNullException.ThrowIfNull(facts);
        var exitCode = facts.RuntimeExitCode;
        var kills = Math.Max(facts.Oom.OomKills, facts.CgroupOomKills ?? 0);

        // 137: SIGKILL (runc, crun); 128: gVisor's code for a sandbox the host killed. Corral's own kill is never the kernel's.
        var diedOfSigkill = exitCode is 137 or 128 && !facts.KilledByCorral;
        var inferred = diedOfSigkill && kills == 0 && facts.Oom.OomNotified;
        if (inferred)
        {
            kills = 1;
        }

        var oomKilled = facts.Oom.Livelock || (diedOfSigkill && kills > 0);
        if (oomKilled || facts.TimedOut)
        {
            exitCode = 137;
        }

        string? note = null;
        string? failure = null;
        if (!oomKilled && !facts.TimedOut && facts.RuntimeFailure is { } runtimeSaid)
        {
            if (facts.SignalFromCorral is { } signal)
            {
                // Corral's own signal landed while the runtime's init still ran (runc then reports
                // "error during container init"): the container ended by that signal.
                note = $"ended by {Signals.NameOf(signal)} from Corral before the workload ran; {facts.RuntimeName} said: {runtimeSaid}";
                exitCode = 128 + signal;
            }
            else
            {
                failure = runtimeSaid;
            }
        }

        var reason = oomKilled ? (facts.Oom.Livelock ? "livelock" : "kernel") : null;
        return new ExitVerdict(exitCode, oomKilled, reason, kills, inferred, note, failure);
    }
}
