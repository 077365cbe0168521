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
/// One small JSON file per live container under the state directory. Creation is exclusive, so
/// two supervisors can never own the same id; files of dead supervisors are reclaimed.
/// </summary>
public sealed class ContainerStateStore(string stateDir)
{
    private string ContainersDir => Path.Combine(stateDir, "containers");

    public string PathOf(string id) => Path.Combine(ContainersDir, id + ".json");

    /// <summary>Claims <paramref name="state"/>'s id; throws if a live container already has it.</summary>
    public void Claim(ContainerState state)
    {
        Directory.CreateDirectory(ContainersDir);
        var path = PathOf(state.Id);
        for (var attempt = 0; attempt < 2; attempt++)
        {
            try
            {
                using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
                JsonSerializer.Serialize(stream, state, SupervisionJsonContext.Default.ContainerState);
                return;
            }
            catch (IOException) when (File.Exists(path))
            {
                if (Get(state.Id) is { } existing && IsAlive(existing))
                {
                    throw new CorralException($"a container named '{state.Id}' is already running");
                }

                File.Delete(path);
            }
        }

        throw new CorralException($"could not claim container name '{state.Id}'");
    }

    public void Update(ContainerState state)
    {
        var path = PathOf(state.Id);
        var temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(state, SupervisionJsonContext.Default.ContainerState));
        File.Move(temp, path, overwrite: true);
    }

    public void Release(string id) => File.Delete(PathOf(id));

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

    /// <summary>Containers whose supervisor is alive, oldest first.</summary>
    public IReadOnlyList<ContainerState> List()
    {
        if (!Directory.Exists(ContainersDir))
        {
            return [];
        }

        return Directory.EnumerateFiles(ContainersDir, "*.json")
            .Select(f => Get(Path.GetFileNameWithoutExtension(f)))
            .OfType<ContainerState>()
            .Where(IsAlive)
            .OrderBy(s => s.CreatedAt)
            .ToList();
    }

    private static bool IsAlive(ContainerState state) =>
        LibC.kill(state.SupervisorPid, 0) == 0 || LibC.LastError != LibC.ESRCH;
}
