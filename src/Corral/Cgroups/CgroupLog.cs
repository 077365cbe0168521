using Microsoft.Extensions.Logging;

namespace Corral.Cgroups;

/// <summary>Every log line of the cgroup feature; event ids 1000-1099.</summary>
internal static partial class CgroupLog
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Debug, Message = "cgroup driver detected version={Version} root={Root}")]
    public static partial void CgroupDriverDetected(this ILogger logger, CgroupVersion version, string root);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning, Message = "no usable cgroup memory controller found; falling back reason={Reason}")]
    public static partial void CgroupUnavailable(this ILogger logger, string reason);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Debug, Message = "cgroup created container={ContainerId} version={Version} memory_limit_bytes={MemoryBytes} cpus={Cpus} pids={Pids}")]
    public static partial void CgroupCreated(this ILogger logger, string containerId, CgroupVersion version, long? memoryBytes, double? cpus, long? pids);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "cgroup create failed, rolled back container={ContainerId} error={Error}")]
    public static partial void CgroupCreateFailed(this ILogger logger, string containerId, string error);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Debug, Message = "cgroup removed container={ContainerId}")]
    public static partial void CgroupRemoved(this ILogger logger, string containerId);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Warning, Message = "cgroup rmdir failed path={Path} error={Error}")]
    public static partial void CgroupRemoveFailed(this ILogger logger, string path, string error);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Warning, Message = "cgroup kill left processes container={ContainerId} remaining={Remaining}")]
    public static partial void CgroupKillIncomplete(this ILogger logger, string containerId, int remaining);
}
