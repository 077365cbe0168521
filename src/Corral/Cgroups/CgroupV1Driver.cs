using System.Globalization;
using Corral.Common;
using Microsoft.Extensions.Logging;

namespace Corral.Cgroups;

/// <summary>
/// Where each v1 controller this driver uses is mounted; cpu and cpuacct may share one mount. Others are
/// the remaining cgroup hierarchies (blkio, devices, freezer, systemd, a hybrid host's unified cgroup2):
/// runc places the container in each of them too, as <c>corral/&lt;id&gt;/ctr</c>, and removes only its
/// own leaf, so the driver removes the <c>corral/&lt;id&gt;</c> parents there without creating them.
/// </summary>
internal sealed record CgroupV1Mounts(string Memory, string? Cpu = null, string? CpuAcct = null, string? Pids = null)
{
    public IReadOnlyList<string> Others { get; init; } = [];

    public static CgroupV1Mounts? FromMountInfo(IReadOnlyList<MountInfoEntry> mounts)
    {
        string? Find(string controller) =>
            mounts.FirstOrDefault(m => m.FileSystemType == "cgroup" && m.SuperOptions.Contains(controller))?.MountPoint;

        var memory = Find("memory");
        if (memory is null)
        {
            return null;
        }

        var owned = new CgroupV1Mounts(memory, Find("cpu"), Find("cpuacct"), Find("pids"));
        var used = new HashSet<string?>([owned.Memory, owned.Cpu, owned.CpuAcct, owned.Pids], StringComparer.Ordinal);
        var others = mounts
            .Where(m => m.FileSystemType is "cgroup" or "cgroup2" && !used.Contains(m.MountPoint))
            .Select(m => m.MountPoint)
            .Distinct(StringComparer.Ordinal)
            .ToList();
        return owned with { Others = others };
    }
}

/// <summary>cgroup v1: one directory per controller hierarchy, <c>&lt;mount&gt;/&lt;parent&gt;/&lt;id&gt;</c>.</summary>
internal sealed class CgroupV1Driver(
    CgroupV1Mounts mounts,
    ICgroupFileSystem fs,
    ILogger logger,
    string parentName = CgroupV1Driver.DefaultParent,
    IProcessSignaller? signaller = null) : ICgroupDriver
{
    public const string DefaultParent = "corral";
    public const long CpuPeriodMicros = 100_000;

    /// <summary>
    /// memsw is set one page above the memory limit, not equal to it: swap stays off all the same, but
    /// the memory counter, not memsw, is the one that hits its limit. Measured on kernel 6.18: with equal
    /// limits the kernel fails the memsw charge first and neither memory.failcnt nor memory.memsw.failcnt
    /// ever grows, which would blind the livelock rule (and MemoryLimitHits) on v1.
    /// </summary>
    public const long MemswHeadroomBytes = 4096;

    private readonly IProcessSignaller _signaller = signaller ?? SystemProcessSignaller.Instance;

    public CgroupVersion Version => CgroupVersion.V1;

    public CgroupV1Mounts Mounts => mounts;

    public IContainerCgroup Create(string containerId, ResourceLimits limits)
    {
        ContainerId.Validate(containerId);
        var paths = PathsFor(containerId);
        if (limits.Cpus is not null && paths.Cpu is null)
        {
            throw CorralException.Host($"cannot limit cpus of container {containerId}: the cgroup v1 cpu controller is not mounted");
        }

        if (limits.Pids is not null && paths.Pids is null)
        {
            throw CorralException.Host($"cannot limit pids of container {containerId}: the cgroup v1 pids controller is not mounted");
        }

        var created = new List<string>();
        try
        {
            var reused = false;
            foreach (var dir in paths.Directories)
            {
                fs.CreateDirectory(Path.GetDirectoryName(dir)!); // Corral's shared parent: kept
                reused |= CgroupTree.CreateOrReuse(fs, dir, created);
            }

            ApplyLimits(paths, limits, reused);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or CorralException)
        {
            CgroupTree.RollBack(fs, created, logger);

            var message = OneLine($"cannot create cgroup for container {containerId}: {ex.Message}");
            logger.CgroupCreateFailed(containerId, message);
            throw CorralException.Host(message, ex);
        }

        logger.CgroupCreated(containerId, CgroupVersion.V1, limits.MemoryBytes, limits.Cpus, limits.Pids);
        return new CgroupV1ContainerCgroup(containerId, limits, paths, CgroupPath(containerId), fs, _signaller, logger);
    }

    public IContainerCgroup? Open(string containerId)
    {
        ContainerId.Validate(containerId);
        var paths = PathsFor(containerId);
        if (!fs.DirectoryExists(paths.Memory))
        {
            return null;
        }

        long? memory = CgroupFiles.ParseLimit(fs.ReadAllText(Path.Combine(paths.Memory, "memory.limit_in_bytes")), paths.Memory);
        double? cpus = null;
        if (paths.Cpu is not null && fs.FileExists(Path.Combine(paths.Cpu, "cpu.cfs_quota_us")))
        {
            var quota = CgroupFiles.ReadLong(fs, Path.Combine(paths.Cpu, "cpu.cfs_quota_us"));
            var period = CgroupFiles.ReadLongIfExists(fs, Path.Combine(paths.Cpu, "cpu.cfs_period_us")) ?? CpuPeriodMicros;
            cpus = quota > 0 && period > 0 ? (double)quota / period : null;
        }

        long? pids = paths.Pids is not null && fs.FileExists(Path.Combine(paths.Pids, "pids.max"))
            ? CgroupFiles.ParseLimit(fs.ReadAllText(Path.Combine(paths.Pids, "pids.max")), paths.Pids)
            : null;
        return new CgroupV1ContainerCgroup(containerId, new ResourceLimits(memory, cpus, pids), paths, CgroupPath(containerId), fs, _signaller, logger);
    }

    internal CgroupV1Paths PathsFor(string containerId)
    {
        string? Dir(string? mount) => mount is null ? null : Path.Combine(mount, parentName, containerId);
        return new CgroupV1Paths(Dir(mounts.Memory)!, Dir(mounts.Cpu), Dir(mounts.CpuAcct), Dir(mounts.Pids))
        {
            RuntimeOnly = [.. mounts.Others.Select(m => Path.Combine(m, parentName, containerId))],
        };
    }

    private string CgroupPath(string containerId) => $"/{parentName}/{containerId}";

    private void ApplyLimits(CgroupV1Paths paths, ResourceLimits limits, bool reused)
    {
        var memoryFile = Path.Combine(paths.Memory, "memory.limit_in_bytes");
        var memswFile = Path.Combine(paths.Memory, "memory.memsw.limit_in_bytes");
        var hasMemsw = fs.FileExists(memswFile);
        if (limits.MemoryBytes is { } memory)
        {
            if (memory <= 0)
            {
                throw new CorralException($"invalid memory limit {memory}: must be greater than 0");
            }

            var value = CgroupFiles.Format(memory);
            var memswValue = CgroupFiles.Format(memory + MemswHeadroomBytes);

            // memsw (memory+swap) may never be below the memory limit: raise it first, lower it last.
            var raisingMemsw = hasMemsw
                && CgroupFiles.ParseLimit(fs.ReadAllText(memswFile), memswFile) is { } currentMemsw
                && memory > currentMemsw;
            if (raisingMemsw)
            {
                fs.WriteAllText(memswFile, memswValue);
            }

            fs.WriteAllText(memoryFile, value);
            if (hasMemsw && !raisingMemsw)
            {
                fs.WriteAllText(memswFile, memswValue);
            }
        }
        else if (reused)
        {
            if (hasMemsw)
            {
                fs.WriteAllText(memswFile, "-1");
            }

            fs.WriteAllText(memoryFile, "-1");
        }

        if (paths.Cpu is not null && (limits.Cpus is not null || reused))
        {
            var quota = limits.Cpus is { } cpus ? CgroupFiles.CpuQuotaMicros(cpus, CpuPeriodMicros) : -1;
            fs.WriteAllText(Path.Combine(paths.Cpu, "cpu.cfs_period_us"), CgroupFiles.Format(CpuPeriodMicros));
            fs.WriteAllText(Path.Combine(paths.Cpu, "cpu.cfs_quota_us"), CgroupFiles.Format(quota));
        }

        if (paths.Pids is not null && (limits.Pids is not null || reused))
        {
            fs.WriteAllText(Path.Combine(paths.Pids, "pids.max"), limits.Pids is { } pids ? CgroupFiles.Format(pids) : "max");
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    /// <summary>
    /// memory.failcnt plus memory.memsw.failcnt: with memsw set to the memory limit (swap off) the kernel
    /// charges memsw first, so it is memsw's counter that climbs when the limit is hit.
    /// </summary>
    internal static long ReadLimitHits(ICgroupFileSystem fs, string memoryDir) =>
        (CgroupFiles.ReadLongIfExists(fs, Path.Combine(memoryDir, "memory.failcnt")) ?? 0)
        + (CgroupFiles.ReadLongIfExists(fs, Path.Combine(memoryDir, "memory.memsw.failcnt")) ?? 0);

    /// <summary>Sum of oom_kill over the cgroup and its children: on v1 the kernel counts a kill only in the victim's own cgroup.</summary>
    internal static long ReadOomKills(ICgroupFileSystem fs, string memoryDir)
    {
        long total = 0;
        foreach (var dir in CgroupTree.DescendantsBottomUp(fs, memoryDir))
        {
            try
            {
                total += CgroupFiles.ReadKey(fs, Path.Combine(dir, "memory.oom_control"), "oom_kill");
            }
            catch (IOException) when (dir != memoryDir)
            {
                // a child removed while walking (runc's own cgroup at exit)
            }
        }

        return total;
    }
}

internal sealed record CgroupV1Paths(string Memory, string? Cpu, string? CpuAcct, string? Pids)
{
    /// <summary>Distinct controller directories (cpu and cpuacct co-mounted share one).</summary>
    public IReadOnlyList<string> Directories { get; } =
        new[] { Memory, Cpu, CpuAcct, Pids }.OfType<string>().Distinct(StringComparer.Ordinal).ToList();

    /// <summary>The container's directories in the other hierarchies, made by runc: removed, never created.</summary>
    public IReadOnlyList<string> RuntimeOnly { get; init; } = [];
}

internal sealed class CgroupV1ContainerCgroup(
    string containerId,
    ResourceLimits limits,
    CgroupV1Paths paths,
    string cgroupPath,
    ICgroupFileSystem fs,
    IProcessSignaller signaller,
    ILogger logger) : IContainerCgroup
{
    public string ContainerId => containerId;

    public CgroupVersion Version => CgroupVersion.V1;

    public ResourceLimits Limits => limits;

    public IReadOnlyList<string> ProcsFiles { get; } = paths.Directories.Select(d => Path.Combine(d, "cgroup.procs")).ToList();

    public string HierarchyPath => cgroupPath;

    public string MemoryDirectory => paths.Memory;

    internal CgroupV1Paths Paths => paths;

    public CgroupStats ReadStats()
    {
        var mem = paths.Memory;
        return new CgroupStats
        {
            MemoryCurrentBytes = CgroupFiles.ReadLong(fs, Path.Combine(mem, "memory.usage_in_bytes")),
            MemoryPeakBytes = CgroupFiles.ReadLongIfExists(fs, Path.Combine(mem, "memory.max_usage_in_bytes")),
            MemoryLimitBytes = limits.MemoryBytes is null
                ? null
                : CgroupFiles.ParseLimit(fs.ReadAllText(Path.Combine(mem, "memory.limit_in_bytes")), mem),
            CpuUsageNs = paths.CpuAcct is null ? 0 : CgroupFiles.ReadLongIfExists(fs, Path.Combine(paths.CpuAcct, "cpuacct.usage")) ?? 0,
            PidsCurrent = paths.Pids is null ? 0 : CgroupFiles.ReadLongIfExists(fs, Path.Combine(paths.Pids, "pids.current")) ?? 0,
            PidsLimit = paths.Pids is not null && fs.FileExists(Path.Combine(paths.Pids, "pids.max"))
                ? CgroupFiles.ParseLimit(fs.ReadAllText(Path.Combine(paths.Pids, "pids.max")), paths.Pids)
                : null,
            OomKills = CgroupV1Driver.ReadOomKills(fs, mem),
            MemoryLimitHits = CgroupV1Driver.ReadLimitHits(fs, mem),
            PidsLimitHits = paths.Pids is not null && fs.FileExists(Path.Combine(paths.Pids, "pids.events"))
                ? CgroupFiles.ParseKeyed(fs.ReadAllText(Path.Combine(paths.Pids, "pids.events"))).GetValueOrDefault("max")
                : 0,
        };
    }

    public IReadOnlyList<int> ListProcesses()
    {
        var pids = new SortedSet<int>();
        CgroupTree.AddProcesses(fs, paths.Memory, pids);
        if (paths.Pids is not null)
        {
            CgroupTree.AddProcesses(fs, paths.Pids, pids);
        }

        return pids.ToList();
    }

    public void KillAll()
    {
        if (!CgroupTree.KillUntilEmpty(ListProcesses, signaller))
        {
            logger.CgroupKillIncomplete(containerId, ListProcesses().Count);
        }
    }

    public void Remove()
    {
        KillAll();
        var failures = new List<string>();
        foreach (var dir in paths.Directories.Concat(paths.RuntimeOnly))
        {
            CgroupTree.RemoveTree(fs, dir, signaller, logger, failures);
        }

        CgroupTree.ThrowIfFailures(containerId, failures);
        logger.CgroupRemoved(containerId);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"cgroup v1 {paths.Memory}");
}
