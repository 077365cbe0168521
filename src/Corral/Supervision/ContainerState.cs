using System.Text.Json;
using Corral.Common;
using Corral.Interop;

namespace Corral.Supervision;

/// <summary>A running container as other Corral processes see it (`corral ps`, `corral kill`).</summary>
public sealed record ContainerState
{
    public required string Id { get; init; }

    public required string Runtime { get; init; }

    public required string RuntimeRoot { get; init; }

    public required int SupervisorPid { get; init; }

    public int? Pid { get; init; }

    public required DateTimeOffset CreatedAt { get; init; }

    public required IReadOnlyList<string> Command { get; init; }

    public long? MemoryLimitBytes { get; init; }

    public string Status { get; init; } = "creating";
}

/// <summary>
/// One small JSON file per container under the state directory (<c>containers/&lt;id&gt;.json</c>) and its
/// owner lock (<c>containers/&lt;id&gt;.lock</c>, an flock held by the supervising process for its whole life).
/// The name belongs to whoever holds the lock: taking it is atomic, and a claim is stale exactly when its
/// lock is free (the owner died), never judged from a file that may still be being written.
/// </summary>
public sealed class ContainerStateStore(string stateDir)
{
    public const string OrphanedStatus = "orphaned";

    private string ContainersDir => Path.Combine(stateDir, "containers");

    public string PathOf(string id) => Path.Combine(ContainersDir, id + ".json");

    public string LockPathOf(string id) => Path.Combine(ContainersDir, id + ".lock");

    /// <summary>Claims <paramref name="state"/>'s id for this process; throws (AlreadyExists) if a live owner has it.</summary>
    public ContainerClaim Claim(ContainerState state)
    {
        var claim = TryTakeOver(state.Id)
            ?? throw CorralException.Conflict($"a container named '{state.Id}' is already running{OwnerText(state.Id)}");
        if (File.Exists(PathOf(state.Id)))
        {
            // A supervisor that died left it (its container may still run): not this run's to take over.
            claim.Dispose();
            throw CorralException.Conflict($"container '{state.Id}' was left behind by a supervisor that died; remove it with `corral kill {state.Id}` or `corral gc`");
        }

        try
        {
            Update(state);
        }
        catch (IOException ex) when (ex.HResult == NoSpace || ex.Message.Contains("No space left on device", StringComparison.Ordinal))
        {
            // A full state dir: refused with the reason, and nothing of the claim kept.
            claim.Release();
            throw CorralException.Host($"cannot record container '{state.Id}' in {stateDir}: {ex.Message}", ex);
        }
        catch
        {
            claim.Release();
            throw;
        }

        return claim;
    }

    /// <summary>
    /// Takes the name's lock when no live process holds it (a dead supervisor's leftovers are then this
    /// process's to remove); null while a live owner holds it. Writes no record.
    /// </summary>
    public ContainerClaim? TryTakeOver(string id)
    {
        ContainerId.Validate(id);
        PrivateFiles.CreateDirectory(ContainersDir);
        return OwnerLock.TryAcquire(LockPathOf(id)) is { } ownerLock ? new ContainerClaim(this, id, ownerLock) : null;
    }

    /// <summary>ENOSPC, as .NET's IOException carries it on Linux.</summary>
    private const int NoSpace = 28;

    public void Update(ContainerState state)
    {
        var path = PathOf(state.Id);
        PrivateFiles.WriteAtomically(path, JsonSerializer.Serialize(state, SupervisionJsonContext.Default.ContainerState));
    }

    public ContainerState? Get(string id)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(PathOf(id)), SupervisionJsonContext.Default.ContainerState);
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>True while the container's supervisor (or a reclaimer) holds its claim.</summary>
    public bool IsOwned(string id) => OwnerLock.IsHeld(LockPathOf(id));

    /// <summary>
    /// Every container with a record, oldest first: those whose supervisor is alive as it wrote them, and
    /// those whose supervisor died without cleaning up with status "orphaned" (removed by `corral gc`).
    /// </summary>
    public IReadOnlyList<ContainerState> List()
    {
        if (!Directory.Exists(ContainersDir))
        {
            return [];
        }

        return Directory.EnumerateFiles(ContainersDir, "*.json")
            .Where(f => f.EndsWith(".json", StringComparison.Ordinal))
            .Select(f => Get(Path.GetFileNameWithoutExtension(f)))
            .OfType<ContainerState>()
            .Select(s => IsOwned(s.Id) ? s : s with { Status = OrphanedStatus })
            .OrderBy(s => s.CreatedAt)
            .ToList();
    }

    /// <summary>Ids that have a record or a lock file (a supervisor that died before writing its record leaves only the lock).</summary>
    public IReadOnlyList<string> Ids()
    {
        if (!Directory.Exists(ContainersDir))
        {
            return [];
        }

        return Directory.EnumerateFiles(ContainersDir)
            .Select(Path.GetFileName)
            .Where(n => n is not null && (n.EndsWith(".json", StringComparison.Ordinal) || n.EndsWith(".lock", StringComparison.Ordinal)))
            .Select(n => n![..^5])
            .Where(id => ContainerId.IsValid(id, out _))
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)
            .ToList();
    }

    internal void RemoveRecord(string id)
    {
        File.Delete(PathOf(id));
        File.Delete(PathOf(id) + ".tmp");
    }

    private string OwnerText(string id) =>
        OwnerLock.OwnerPid(LockPathOf(id)) is { } pid ? $" (supervised by pid {pid})" : string.Empty;
}

/// <summary>This process's hold on a container name: released (record and lock removed) once nothing of the container is left.</summary>
public sealed class ContainerClaim : IDisposable
{
    private readonly ContainerStateStore _store;
    private readonly OwnerLock _lock;

    internal ContainerClaim(ContainerStateStore store, string id, OwnerLock ownerLock)
    {
        _store = store;
        Id = id;
        _lock = ownerLock;
    }

    public string Id { get; }

    /// <summary>Removes the record, then the lock file, then lets the lock go.</summary>
    public void Release()
    {
        try
        {
            _store.RemoveRecord(Id);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Lets the lock go and leaves the files (the claim then shows as orphaned).</summary>
    public void Dispose() => _lock.Dispose();
}
