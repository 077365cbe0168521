using Microsoft.Extensions.Logging;

namespace Corral.Oom;

/// <summary>Every log line of the OOM feature; event ids 1100-1199.</summary>
internal static partial class OomLog
{
    [LoggerMessage(EventId = 1100, Level = LogLevel.Debug, Message = "OOM watcher started container={ContainerId} memory_limit_mb={MemoryLimitMb} strategy={Strategy} cgroup_version={Version}")]
    public static partial void CgroupWatcherStarted(this ILogger logger, string containerId, long memoryLimitMb, OomStrategy strategy, string version);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Debug, Message = "OOM watcher started pid={Pid} memory_limit_mb={MemoryLimitMb} strategy={Strategy}")]
    public static partial void ProcessTreeWatcherStarted(this ILogger logger, int? pid, long memoryLimitMb, OomStrategy strategy);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Debug, Message = "OOM kill container={ContainerId} oom_kills={OomKills} memory_bytes={MemoryBytes}")]
    public static partial void OomKillSeen(this ILogger logger, string containerId, long oomKills, long memoryBytes);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Debug, Message = "livelock check armed container={ContainerId} usage_bytes={UsageBytes} threshold_bytes={ThresholdBytes}")]
    public static partial void LivelockArmed(this ILogger logger, string containerId, long usageBytes, long thresholdBytes);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Debug, Message = "livelock check disarmed container={ContainerId} usage_bytes={UsageBytes}")]
    public static partial void LivelockDisarmed(this ILogger logger, string containerId, long usageBytes);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Debug, Message = "memory livelock container={ContainerId} limit_hits_per_second={HitsPerSecond} duration_ms={DurationMs} usage_bytes={UsageBytes}")]
    public static partial void LivelockDetected(this ILogger logger, string containerId, double hitsPerSecond, long durationMs, long usageBytes);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Debug, Message = "OOM likely pid={Pid} rss_bytes={RssBytes} threshold_bytes={ThresholdBytes}")]
    public static partial void OomLikely(this ILogger logger, int pid, long rssBytes, long thresholdBytes);

    [LoggerMessage(EventId = 1107, Level = LogLevel.Debug, Message = "OOM watcher stopped container={ContainerId} oom_kills={OomKills} livelock={Livelock} likely={Likely}")]
    public static partial void WatcherStopped(this ILogger logger, string containerId, long oomKills, bool livelock, bool likely);

    [LoggerMessage(EventId = 1108, Level = LogLevel.Warning, Message = "OOM watcher could not read counters container={ContainerId} error={Error}")]
    public static partial void CounterReadFailed(this ILogger logger, string containerId, string error);
}
