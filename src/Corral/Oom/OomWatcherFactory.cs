using Corral.Cgroups;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Corral.Oom;

/// <summary>Chooses how a container is watched for memory exhaustion.</summary>
public sealed class OomWatcherFactory(
    ICgroupFileSystem fs,
    IOptions<OomOptions> options,
    TimeProvider time,
    ILoggerFactory? loggerFactory = null) : Supervision.IOomWatcherFactory
{
    private readonly ILoggerFactory _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;

    /// <summary>
    /// No memory limit: null (no watcher, no cost). A cgroup: the kernel's counters, event driven.
    /// Otherwise the process-tree fallback, which polls <paramref name="rootPid"/> until it returns a pid
    /// (or <see cref="ProcessTreeMemoryWatcher.AttachProcess"/> is called), so Start may come before the workload.
    /// </summary>
    public IOomWatcher? Create(IContainerCgroup? cgroup, long? memoryLimitBytes, Func<int?> rootPid)
    {
        var limit = memoryLimitBytes ?? cgroup?.Limits.MemoryBytes;
        if (limit is not > 0)
        {
            return null;
        }

        var opts = options.Value;
        if (cgroup is not null)
        {
            var (counters, source) = cgroup.Version switch
            {
                CgroupVersion.V2 => ((IMemoryCounters)new CgroupV2MemoryCounters(fs, cgroup.MemoryDirectory),
                    (ICgroupEventSource)new InotifyMemoryEventsSource(Path.Combine(cgroup.MemoryDirectory, "memory.events"))),
                _ => (new CgroupV1MemoryCounters(fs, cgroup.MemoryDirectory),
                    new EventfdMemoryEventsSource(fs, cgroup.MemoryDirectory, LivelockRule.ArmThreshold(limit.Value, opts))),
            };
            return new CgroupOomWatcher(
                cgroup.ContainerId, cgroup.Version, counters, source, limit.Value, opts, time, _loggerFactory.CreateLogger<CgroupOomWatcher>());
        }

        return new ProcessTreeMemoryWatcher(rootPid, limit.Value, opts, time, _loggerFactory.CreateLogger<ProcessTreeMemoryWatcher>());
    }
}
