using Corral.Cgroups;

namespace Corral.Oom;

/// <summary>The three counters the OOM watcher decides on, read together.</summary>
internal readonly record struct MemorySample(long OomKills, long LimitHits, long UsageBytes);

/// <summary>Seam over reading a cgroup's memory counters, so the watcher's rules run on scripted values in tests.</summary>
internal interface IMemoryCounters
{
    MemorySample Read();
}

/// <summary>v1: oom_kill of memory.oom_control (summed over children), failcnt of memory and memsw, memory.usage_in_bytes.</summary>
internal sealed class CgroupV1MemoryCounters(ICgroupFileSystem fs, string memoryDirectory) : IMemoryCounters
{
    public MemorySample Read() => new(
        CgroupV1Driver.ReadOomKills(fs, memoryDirectory),
        CgroupV1Driver.ReadLimitHits(fs, memoryDirectory),
        CgroupFiles.ReadLong(fs, Path.Combine(memoryDirectory, "memory.usage_in_bytes")));
}

/// <summary>v2: oom_kill and max of memory.events (hierarchical), memory.current.</summary>
internal sealed class CgroupV2MemoryCounters(ICgroupFileSystem fs, string memoryDirectory) : IMemoryCounters
{
    public MemorySample Read()
    {
        var events = CgroupFiles.ParseKeyed(fs.ReadAllText(Path.Combine(memoryDirectory, "memory.events")));
        return new(
            events.GetValueOrDefault("oom_kill"),
            events.GetValueOrDefault("max"),
            CgroupFiles.ReadLong(fs, Path.Combine(memoryDirectory, "memory.current")));
    }
}
