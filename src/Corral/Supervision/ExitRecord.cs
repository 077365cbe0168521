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

    /// <summary>The last bytes the container wrote (UTF-8, up to 4 KiB each).</summary>
    public string StdoutTail { get; init; } = string.Empty;

    public string StderrTail { get; init; } = string.Empty;
}

/// <summary>One OOM event as the exit record keeps it.</summary>
public sealed record OomEventRecord(string Kind, DateTimeOffset At, long OomKills, string Detail);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = true,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(ExitRecord))]
[JsonSerializable(typeof(ContainerState))]
public sealed partial class SupervisionJsonContext : JsonSerializerContext;
