namespace Corral.Cgroups;

public enum CgroupVersion
{
    V1,
    V2,
}

/// <summary>Limits a user asked for; null means unlimited.</summary>
public sealed record ResourceLimits(long? MemoryBytes = null, double? Cpus = null, long? Pids = null)
{
    public static ResourceLimits None { get; } = new();
}

/// <summary>A snapshot of a container cgroup's counters (hierarchical: children included).</summary>
public sealed record CgroupStats
{
    public long MemoryCurrentBytes { get; init; }

    public long? MemoryPeakBytes { get; init; }

    public long? MemoryLimitBytes { get; init; }

    public long CpuUsageNs { get; init; }

    public long PidsCurrent { get; init; }

    public long? PidsLimit { get; init; }

    /// <summary>Processes the kernel's OOM killer killed in this cgroup.</summary>
    public long OomKills { get; init; }

    /// <summary>Times the cgroup hit its memory limit (v1 memory.failcnt, v2 memory.events max).</summary>
    public long MemoryLimitHits { get; init; }

    /// <summary>Forks refused because the cgroup hit its pids limit (pids.events max, v1 and v2).</summary>
    public long PidsLimitHits { get; init; }
}

/// <summary>
/// The one seam over the cgroup filesystem: the drivers and watchers read and write cgroup files
/// only through it, so unit tests can feed them a fake tree.
/// </summary>
public interface ICgroupFileSystem
{
    bool FileExists(string path);

    bool DirectoryExists(string path);

    string ReadAllText(string path);

    void WriteAllText(string path, string contents);

    void CreateDirectory(string path);

    /// <summary>rmdir: a cgroup directory is removed empty of processes, never recursively.</summary>
    void DeleteDirectory(string path);

    IEnumerable<string> EnumerateDirectories(string path);
}

/// <summary>One cgroup version's way of making, limiting, reading and removing container cgroups.</summary>
public interface ICgroupDriver
{
    CgroupVersion Version { get; }

    /// <summary>Creates the container's cgroup under Corral's parent and applies the limits.</summary>
    IContainerCgroup Create(string containerId, ResourceLimits limits);

    /// <summary>Finds an existing container cgroup (for stats and kill from another process).</summary>
    IContainerCgroup? Open(string containerId);
}

/// <summary>A container's cgroup, owned by Corral from before the runtime starts until after the exit record.</summary>
public interface IContainerCgroup
{
    string ContainerId { get; }

    CgroupVersion Version { get; }

    ResourceLimits Limits { get; }

    /// <summary>cgroup.procs files a launcher writes its pid to before exec'ing the runtime.</summary>
    IReadOnlyList<string> ProcsFiles { get; }

    /// <summary>This cgroup's path from its hierarchy's root (<c>/corral/&lt;id&gt;</c>), as the kernel names it.</summary>
    string HierarchyPath { get; }

    /// <summary>
    /// cgroupsPath for runc's spec: a child of this cgroup that runc creates and removes itself,
    /// so that the counters here survive runc's cleanup.
    /// </summary>
    string RuntimeCgroupsPath => HierarchyPath + "/ctr";

    /// <summary>Directory holding the memory controller files (memory.events or memory.oom_control).</summary>
    string MemoryDirectory { get; }

    CgroupStats ReadStats();

    /// <summary>Pids of every process in the cgroup and its children.</summary>
    IReadOnlyList<int> ListProcesses();

    /// <summary>SIGKILLs everything inside (cgroup.kill on v2, each pid until empty on v1).</summary>
    void KillAll();

    /// <summary>Kills what is left and removes the cgroup and its children.</summary>
    void Remove();
}
