using Corral.Common;
using Microsoft.Extensions.Logging;

namespace Corral.Cgroups;

/// <summary>
/// cgroup v2: <c>&lt;root&gt;/&lt;parent&gt;/&lt;id&gt;</c> holds the limits and the counters. Because a cgroup with
/// controllers enabled for its children may hold no processes itself, the runtime's processes go to the
/// leaf <c>&lt;id&gt;/runtime</c> and runc creates its own sibling leaf <c>&lt;id&gt;/ctr</c>.
/// </summary>
internal sealed class CgroupV2Driver(
    string root,
    ICgroupFileSystem fs,
    ILogger logger,
    string parentName = CgroupV1Driver.DefaultParent,
    IProcessSignaller? signaller = null) : ICgroupDriver
{
    public const string DefaultRoot = "/sys/fs/cgroup";
    public const string RuntimeLeaf = "runtime";
    public const long CpuPeriodMicros = 100_000;

    private static readonly string[] Wanted = ["memory", "cpu", "pids"];

    private readonly IProcessSignaller _signaller = signaller ?? SystemProcessSignaller.Instance;

    public CgroupVersion Version => CgroupVersion.V2;

    public string Root => root;

    public IContainerCgroup Create(string containerId, ResourceLimits limits)
    {
        ContainerId.Validate(containerId);
        var parent = Path.Combine(root, parentName);
        var dir = Path.Combine(parent, containerId);
        var created = new List<string>();
        try
        {
            var available = Controllers(Path.Combine(root, "cgroup.controllers"));
            var controllers = Wanted.Where(available.Contains).ToList();
            Require(controllers, "memory", needed: true, containerId);
            Require(controllers, "cpu", limits.Cpus is not null, containerId);
            Require(controllers, "pids", limits.Pids is not null, containerId);

            EnableControllers(root, controllers);
            fs.CreateDirectory(parent); // Corral's shared parent: kept
            EnableControllers(parent, controllers);

            var reused = CgroupTree.CreateOrReuse(fs, dir, created);

            ApplyLimits(dir, limits, reused);
            EnableControllers(dir, controllers);

            var leaf = Path.Combine(dir, RuntimeLeaf);
            if (!fs.DirectoryExists(leaf))
            {
                fs.CreateDirectory(leaf);
                created.Add(leaf);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or CorralException)
        {
            CgroupTree.RollBack(fs, created, logger);

            var message = $"cannot create cgroup for container {containerId}: {ex.Message}".ReplaceLineEndings(" ");
            logger.CgroupCreateFailed(containerId, message);
            throw CorralException.Host(message, ex);
        }

        logger.CgroupCreated(containerId, CgroupVersion.V2, limits.MemoryBytes, limits.Cpus, limits.Pids);
        return new CgroupV2ContainerCgroup(containerId, limits, dir, CgroupPath(containerId), fs, _signaller, logger);
    }

    public IContainerCgroup? Open(string containerId)
    {
        ContainerId.Validate(containerId);
        var dir = Path.Combine(root, parentName, containerId);
        if (!fs.DirectoryExists(dir))
        {
            return null;
        }

        var memoryMax = Path.Combine(dir, "memory.max");
        long? memory = fs.FileExists(memoryMax) ? CgroupFiles.ParseLimit(fs.ReadAllText(memoryMax), memoryMax) : null;
        double? cpus = null;
        var cpuMax = Path.Combine(dir, "cpu.max");
        if (fs.FileExists(cpuMax))
        {
            var parts = fs.ReadAllText(cpuMax).Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && parts[0] != "max")
            {
                var quota = CgroupFiles.ParseLong(parts[0], cpuMax);
                var period = CgroupFiles.ParseLong(parts[1], cpuMax);
                cpus = period > 0 ? (double)quota / period : null;
            }
        }

        var pidsMax = Path.Combine(dir, "pids.max");
        long? pidsLimit = fs.FileExists(pidsMax) ? CgroupFiles.ParseLimit(fs.ReadAllText(pidsMax), pidsMax) : null;
        return new CgroupV2ContainerCgroup(containerId, new ResourceLimits(memory, cpus, pidsLimit), dir, CgroupPath(containerId), fs, _signaller, logger);
    }

    private string CgroupPath(string containerId) => $"/{parentName}/{containerId}";

    private static void Require(List<string> controllers, string controller, bool needed, string containerId)
    {
        if (needed && !controllers.Contains(controller))
        {
            throw CorralException.Host($"cannot limit container {containerId}: the cgroup v2 {controller} controller is not available");
        }
    }

    private HashSet<string> Controllers(string file) =>
        fs.FileExists(file)
            ? fs.ReadAllText(file).Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal)
            : [];

    /// <summary>Turns on, for the children of <paramref name="dir"/>, the wanted controllers it has and has not enabled yet.</summary>
    private void EnableControllers(string dir, List<string> controllers)
    {
        var available = Controllers(Path.Combine(dir, "cgroup.controllers"));
        var enabled = Controllers(Path.Combine(dir, "cgroup.subtree_control"));
        var missing = controllers.Where(c => available.Contains(c) && !enabled.Contains(c)).ToList();
        if (missing.Count > 0)
        {
            fs.WriteAllText(Path.Combine(dir, "cgroup.subtree_control"), string.Join(' ', missing.Select(c => "+" + c)));
        }
    }

    private void ApplyLimits(string dir, ResourceLimits limits, bool reused)
    {
        if (limits.MemoryBytes is { } memory)
        {
            if (memory <= 0)
            {
                throw new CorralException($"invalid memory limit {memory}: must be greater than 0");
            }

            fs.WriteAllText(Path.Combine(dir, "memory.max"), CgroupFiles.Format(memory));
            var swap = Path.Combine(dir, "memory.swap.max");
            if (fs.FileExists(swap))
            {
                fs.WriteAllText(swap, "0");
            }
        }
        else if (reused)
        {
            fs.WriteAllText(Path.Combine(dir, "memory.max"), "max");
            var swap = Path.Combine(dir, "memory.swap.max");
            if (fs.FileExists(swap))
            {
                fs.WriteAllText(swap, "max");
            }
        }

        if (limits.Cpus is { } cpus)
        {
            var quota = CgroupFiles.CpuQuotaMicros(cpus, CpuPeriodMicros);
            fs.WriteAllText(Path.Combine(dir, "cpu.max"), $"{CgroupFiles.Format(quota)} {CgroupFiles.Format(CpuPeriodMicros)}");
        }
        else if (reused && fs.FileExists(Path.Combine(dir, "cpu.max")))
        {
            fs.WriteAllText(Path.Combine(dir, "cpu.max"), $"max {CgroupFiles.Format(CpuPeriodMicros)}");
        }

        if (limits.Pids is { } pids)
        {
            fs.WriteAllText(Path.Combine(dir, "pids.max"), CgroupFiles.Format(pids));
        }
        else if (reused && fs.FileExists(Path.Combine(dir, "pids.max")))
        {
            fs.WriteAllText(Path.Combine(dir, "pids.max"), "max");
        }
    }
}

internal sealed class CgroupV2ContainerCgroup(
    string containerId,
    ResourceLimits limits,
    string dir,
    string cgroupPath,
    ICgroupFileSystem fs,
    IProcessSignaller signaller,
    ILogger logger) : IContainerCgroup
{
    public string ContainerId => containerId;

    public CgroupVersion Version => CgroupVersion.V2;

    public ResourceLimits Limits => limits;

    public IReadOnlyList<string> ProcsFiles { get; } = [Path.Combine(dir, CgroupV2Driver.RuntimeLeaf, "cgroup.procs")];

    public string HierarchyPath => cgroupPath;

    public string MemoryDirectory => dir;

    public CgroupStats ReadStats()
    {
        var events = CgroupFiles.ParseKeyed(fs.ReadAllText(Path.Combine(dir, "memory.events")));
        var cpuStat = Path.Combine(dir, "cpu.stat");
        var pidsMax = Path.Combine(dir, "pids.max");
        return new CgroupStats
        {
            MemoryCurrentBytes = CgroupFiles.ReadLong(fs, Path.Combine(dir, "memory.current")),
            MemoryPeakBytes = CgroupFiles.ReadLongIfExists(fs, Path.Combine(dir, "memory.peak")),
            MemoryLimitBytes = CgroupFiles.ParseLimit(fs.ReadAllText(Path.Combine(dir, "memory.max")), dir),
            CpuUsageNs = fs.FileExists(cpuStat) ? CgroupFiles.ParseKeyed(fs.ReadAllText(cpuStat)).GetValueOrDefault("usage_usec") * 1000 : 0,
            PidsCurrent = CgroupFiles.ReadLongIfExists(fs, Path.Combine(dir, "pids.current")) ?? 0,
            PidsLimit = fs.FileExists(pidsMax) ? CgroupFiles.ParseLimit(fs.ReadAllText(pidsMax), pidsMax) : null,
            OomKills = events.GetValueOrDefault("oom_kill"),
            MemoryLimitHits = events.GetValueOrDefault("max"),
            PidsLimitHits = fs.FileExists(Path.Combine(dir, "pids.events"))
                ? CgroupFiles.ParseKeyed(fs.ReadAllText(Path.Combine(dir, "pids.events"))).GetValueOrDefault("max")
                : 0,
        };
    }

    public IReadOnlyList<int> ListProcesses()
    {
        var pids = new SortedSet<int>();
        CgroupTree.AddProcesses(fs, dir, pids);
        return pids.ToList();
    }

    public void KillAll()
    {
        var killFile = Path.Combine(dir, "cgroup.kill");
        var hasKill = fs.DirectoryExists(dir) && fs.FileExists(killFile);
        if (hasKill)
        {
            fs.WriteAllText(killFile, "1");
        }

        // cgroup.kill is asynchronous; wait for the cgroup to empty, signalling per pid as a backstop.
        if (!CgroupTree.KillUntilEmpty(ListProcesses, signaller))
        {
            logger.CgroupKillIncomplete(containerId, ListProcesses().Count);
        }
    }

    public void Remove()
    {
        KillAll();
        var failures = new List<string>();
        CgroupTree.RemoveTree(fs, dir, signaller, logger, failures);
        CgroupTree.ThrowIfFailures(containerId, failures);
        logger.CgroupRemoved(containerId);
    }

    public override string ToString() => $"cgroup v2 {dir}";
}
