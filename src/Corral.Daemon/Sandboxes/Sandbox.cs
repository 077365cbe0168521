using System.Text.Json.Serialization;
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

/// <summary>One sandbox the daemon runs or ran: its record, its log, and how it ended.</summary>
public sealed class Sandbox
{
    private readonly Lock _gate = new();
    private SandboxRecord _record;

    internal Sandbox(SandboxRecord record, string dir, SandboxLog log)
    {
        _record = record;
        Dir = dir;
        Log = log;
    }

    public string Id => _record.Id;

    public string Dir { get; }

    public SandboxLog Log { get; }

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

    public bool HasEnded => Record.Status is SandboxStatus.Exited or SandboxStatus.Failed;

    /// <summary>Completes after the run ended and everything it made on the host was removed.</summary>
    public Task<ExitRecord> Completion { get; internal set; } = null!;

    public ExitRecord? Exit { get; internal set; }

    internal CancellationTokenSource Stop { get; } = new();

    internal SandboxRecord Update(Func<SandboxRecord, SandboxRecord> change)
    {
        lock (_gate)
        {
            _record = change(_record);
            return _record;
        }
    }
}
