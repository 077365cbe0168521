using Microsoft.Extensions.Logging;

namespace Corral.Daemon.Logging;

/// <summary>The daemon's log lines (event ids 4000-4099).</summary>
internal static partial class DaemonLog
{
    [LoggerMessage(4000, LogLevel.Information, "daemon listening socket={Socket} state_dir={StateDir} pid={Pid}")]
    public static partial void Listening(ILogger logger, string socket, string stateDir, int pid);

    [LoggerMessage(4001, LogLevel.Information, "sandbox created id={Id} runtime={Runtime} shim_pid={ShimPid}")]
    public static partial void SandboxCreated(ILogger logger, string id, string runtime, int shimPid);

    [LoggerMessage(4002, LogLevel.Information, "sandbox exited id={Id} exit_code={ExitCode} oom_killed={OomKilled}")]
    public static partial void SandboxExited(ILogger logger, string id, int exitCode, bool oomKilled);

    [LoggerMessage(4003, LogLevel.Warning, "sandbox failed id={Id} error={Error}")]
    public static partial void SandboxFailed(ILogger logger, string id, string error);

    [LoggerMessage(4004, LogLevel.Information, "sandbox removed id={Id}")]
    public static partial void SandboxRemoved(ILogger logger, string id);

    [LoggerMessage(4005, LogLevel.Warning, "daemon stopping: killing running sandboxes count={Count} ids={Ids}")]
    public static partial void StoppingSandboxes(ILogger logger, int count, string ids);

    [LoggerMessage(4006, LogLevel.Information, "daemon stopped, every sandbox ended")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(4007, LogLevel.Error, "sandboxes still running after shutdown grace ids={Ids}")]
    public static partial void StillRunning(ILogger logger, string ids);

    [LoggerMessage(4008, LogLevel.Warning, "could not write sandbox record id={Id} file={File} error={Error}")]
    public static partial void RecordWriteFailed(ILogger logger, string id, string file, string error);

    [LoggerMessage(4017, LogLevel.Warning, "could not unmount a sandbox's root filesystem id={Id} dir={Dir} error={Error}")]
    public static partial void RootUnmountFailed(ILogger logger, string id, string dir, string error);

    [LoggerMessage(4009, LogLevel.Warning, "sandbox output over the log cap, further output dropped id={Id} cap_bytes={CapBytes}")]
    public static partial void LogCapReached(ILogger logger, string id, long capBytes);

    [LoggerMessage(4010, LogLevel.Information, "sandboxes found again adopted={Adopted} ended={Ended} dropped={Dropped} dir={Dir}")]
    public static partial void Recovered(ILogger logger, int adopted, int ended, int dropped, string dir);

    [LoggerMessage(4011, LogLevel.Error, "sandbox monitor failed id={Id} error={Error}")]
    public static partial void MonitorFailed(ILogger logger, string id, string error);

    [LoggerMessage(4012, LogLevel.Warning, "sandbox shim gone without an exit record, reclaiming its container id={Id} why={Why}")]
    public static partial void ShimLost(ILogger logger, string id, string why);

    [LoggerMessage(4013, LogLevel.Warning, "sandbox record unreadable, dropped dir={Dir} error={Error}")]
    public static partial void RecordUnreadable(ILogger logger, string dir, string error);

    [LoggerMessage(4014, LogLevel.Information, "daemon listening tcp={Endpoint} auth=bearer")]
    public static partial void ListeningTcp(ILogger logger, string endpoint);

    [LoggerMessage(4015, LogLevel.Information, "admission capacity cpus={Cpus} memory_bytes={MemoryBytes}")]
    public static partial void Capacity(ILogger logger, double cpus, long memoryBytes);

    [LoggerMessage(4016, LogLevel.Information, "daemon serving metrics url={Url} auth=none")]
    public static partial void ListeningMetrics(ILogger logger, string url);

    [LoggerMessage(4090, LogLevel.Warning, "could not remove orphaned sandbox networks error={Error}")]
    public static partial void NetworkReconcileFailed(ILogger logger, string error);
}
