using System.Text.Json;
using System.Text.Json.Serialization;

namespace Corral.Supervision;

/// <summary>How a container ended: written once, after its PID 1 died and its OOM watcher stopped.</summary>
public sealed record ExitRecord
{
    public required string Id { get; init; }

    public required string Runtime { get; init; }

    public required IReadOnlyList<string> Command { get; init; }

    /// <summary>N for exit(N), 128+S when killed by signal S (137 for an OOM kill, on both runtimes).</summary>
    public required int ExitCode { get; init; }

    /// <summary>Signal name when the exit code says PID 1 was killed by a signal.</summary>
    public string? Signal { get; init; }

    /// <summary>Host pid of the container's init as the runtime reported it.</summary>
    public int? Pid { get; init; }

    public required DateTimeOffset StartedAt { get; init; }

    public required DateTimeOffset ExitedAt { get; init; }

    public required double DurationMs { get; init; }

    /// <summary>Corral killed the container because --timeout passed.</summary>
    public bool TimedOut { get; init; }

    /// <summary>The container ended because the kernel killed it for memory, or the livelock rule did.</summary>
    public bool OomKilled { get; init; }

    /// <summary>"kernel" or "livelock" when <see cref="OomKilled"/>.</summary>
    public string? OomReason { get; init; }

    /// <summary>OOM kills counted in the container's cgroup, children included.</summary>
    public long OomKills { get; init; }

    /// <summary>Only from the process-tree fallback, which cannot see kills: usage crossed its threshold.</summary>
    public bool OomLikely { get; init; }

    /// <summary>"cgroup", "process-tree" or null when no memory limit was set.</summary>
    public string? OomStrategy { get; init; }

    /// <summary>Every OOM event in the order the watcher reported it, all before the exit.</summary>
    public IReadOnlyList<OomEventRecord> OomEvents { get; init; } = [];

    /// <summary>The memory limit the user asked for (gVisor's cgroup adds the runtime allowance on top).</summary>
    public long? MemoryLimitBytes { get; init; }

    public long? PeakMemoryBytes { get; init; }

    public long? CpuUsageNs { get; init; }

    /// <summary>The pids limit the user asked for (gVisor's cgroup adds the runtime allowance on top).</summary>
    public long? PidsLimit { get; init; }

    /// <summary>A fork or clone in the container failed because the pids limit was reached (pids.events max).</summary>
    public bool PidsLimitHit { get; init; }

    /// <summary>Output Corral read from the container but could not write to its log or caller (a full disk): dropped, never blocking the workload.</summary>
    public long OutputDroppedBytes { get; init; }

    /// <summary>
    /// Set when the runtime, not the workload, decided the exit code: "runtime-error" when it failed
    /// and Corral's own signal explains it (a kill that landed while the runtime's init still ran).
    /// </summary>
    public string? ExitNote { get; init; }

    /// <summary>The last bytes the container wrote (UTF-8, up to 4 KiB each).</summary>
    public string StdoutTail { get; init; } = string.Empty;

    public string StderrTail { get; init; } = string.Empty;

    /// <summary>The one JSON shape of an exit record: `--result-file`, `corral wait` and the shim's exit.json.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, SupervisionJsonContext.Default.ExitRecord);
}

/// <summary>One OOM event as the exit record keeps it.</summary>
/// <remarks>
/// Kind "victim" is the kernel's own log line of a kill in the container's cgroup: it names the process the
/// OOM killer chose (<see cref="VictimPid"/>, <see cref="VictimProcess"/>); under gVisor that is the
/// sandbox itself (gVisor has no OOM killer of its own, so the whole sandbox ends).
/// </remarks>
public sealed record OomEventRecord(string Kind, DateTimeOffset At, long OomKills, string Detail)
{
    /// <summary>The host pid of the process the kernel killed (kind "victim").</summary>
    public int? VictimPid { get; init; }

    /// <summary>Its command name as the kernel logged it (kind "victim").</summary>
    public string? VictimProcess { get; init; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = true,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(ExitRecord))]
[JsonSerializable(typeof(ContainerState))]
public sealed partial class SupervisionJsonContext : JsonSerializerContext;
