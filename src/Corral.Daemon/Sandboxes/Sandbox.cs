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

/// <summary>One sandbox the daemon runs or ran: its record, its shim's directory, and how it ended.</summary>
public sealed class Sandbox
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(1);
    private readonly Lock _gate = new();
    private readonly TaskCompletionSource<ExitRecord> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private SandboxRecord _record;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    internal Sandbox(SandboxRecord record, ShimDirectory files)
    {
        _record = record;
        Files = files;
        _completion.Task.ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
    }

    public string Id => _record.Id;

    public string Dir => Files.Path;

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

    public bool HasEnded => Record.Status is SandboxStatus.Exited or SandboxStatus.Failed;

    /// <summary>Completes after the run ended and everything it made on the host was removed.</summary>
    public Task<ExitRecord> Completion => _completion.Task;

    public ExitRecord? Exit { get; internal set; }

    /// <summary>The shim process when this daemon started it; null for one adopted after a restart.</summary>
    internal System.Diagnostics.Process? Shim { get; set; }

    internal IDisposable? Watch { get; set; }

    internal bool StartedPublished { get; set; }

    /// <summary>Held while the sandbox ends or is removed, so those happen (and are told) in order.</summary>
    internal Lock EndGate { get; } = new();

    /// <summary>Kill before the container started, or the daemon's shutdown: the shim is to stop the run.</summary>
    internal volatile bool StopRequested;

    internal volatile bool StopSent;

    internal int OomEventsPublished { get; set; }

    /// <summary>The shim's pid as its status says (for signals to a shim this daemon did not start).</summary>
    internal int? ShimPid { get; set; }

    /// <summary>Completes when something in the sandbox's directory changed, or after a short poll.</summary>
    public async Task ChangedAsync(CancellationToken cancellationToken)
    {
        Task changed;
        lock (_gate)
        {
            changed = _changed.Task;
        }

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

    internal void Complete(ExitRecord exit) => _completion.TrySetResult(exit);

    internal void Fail(Exception error) => _completion.TrySetException(error);

    internal SandboxRecord Update(Func<SandboxRecord, SandboxRecord> change)
    {
        lock (_gate)
        {
            _record = change(_record);
            return _record;
        }
    }
}
