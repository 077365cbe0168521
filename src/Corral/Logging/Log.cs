using Microsoft.Extensions.Logging;

namespace Corral.Logging;

/// <summary>The supervisor's log lines (event ids 2000-2099; cgroups use 1000-1099, OOM watchers 1100-1199).</summary>
internal static partial class Log
{
    [LoggerMessage(2000, LogLevel.Information, "container starting id={Id} runtime={Runtime} rootfs={Rootfs} memory_limit_bytes={MemoryLimitBytes} cgroup={CgroupVersion}")]
    public static partial void ContainerStarting(ILogger logger, string id, string runtime, string rootfs, long? memoryLimitBytes, string cgroupVersion);

    [LoggerMessage(2001, LogLevel.Information, "container started id={Id} pid={Pid} start_ms={StartMs:0.0}")]
    public static partial void ContainerStarted(ILogger logger, string id, int pid, double startMs);

    [LoggerMessage(2002, LogLevel.Information, "container exited id={Id} exit_code={ExitCode} signal={Signal} oom_killed={OomKilled} duration_ms={DurationMs:0.0}")]
    public static partial void ContainerExited(ILogger logger, string id, int exitCode, string? signal, bool oomKilled, double durationMs);

    [LoggerMessage(2003, LogLevel.Warning, "container timed out id={Id} timeout_s={TimeoutSeconds}")]
    public static partial void ContainerTimedOut(ILogger logger, string id, double timeoutSeconds);

    [LoggerMessage(2004, LogLevel.Error, "runtime did not start the workload id={Id} start_timeout_s={TimeoutSeconds}")]
    public static partial void StartDeadlineMissed(ILogger logger, string id, double timeoutSeconds);

    [LoggerMessage(2005, LogLevel.Warning, "cleanup step failed id={Id} step={Step} error={Error}")]
    public static partial void CleanupFailed(ILogger logger, string id, string step, string error);

    [LoggerMessage(2013, LogLevel.Warning, "reclaiming a container its supervisor left behind id={Id} runtime={Runtime}")]
    public static partial void Reclaiming(ILogger logger, string id, string runtime);

    [LoggerMessage(2006, LogLevel.Information, "signalling container id={Id} signal={Signal}")]
    public static partial void Signalling(ILogger logger, string id, string signal);

    [LoggerMessage(2007, LogLevel.Warning, "no cgroup available, limits are not enforced id={Id}")]
    public static partial void NoCgroup(ILogger logger, string id);

    [LoggerMessage(2009, LogLevel.Information, "OOM watcher started id={Id} pid={Pid} memory_limit_mb={MemoryLimitMb} strategy={Strategy}")]
    public static partial void OomWatcherStarted(ILogger logger, string id, int pid, long memoryLimitMb, string strategy);

    [LoggerMessage(2010, LogLevel.Warning, "OOM kill id={Id} pid={Pid} oom_kills={OomKills} memory_limit_mb={MemoryLimitMb}")]
    public static partial void OomKill(ILogger logger, string id, int pid, long oomKills, long memoryLimitMb);

    [LoggerMessage(2011, LogLevel.Warning, "memory livelock, ending container id={Id} pid={Pid} memory_limit_mb={MemoryLimitMb} detail={Detail}")]
    public static partial void OomLivelock(ILogger logger, string id, int pid, long memoryLimitMb, string detail);

    [LoggerMessage(2012, LogLevel.Warning, "OOM likely id={Id} pid={Pid} memory_limit_mb={MemoryLimitMb} detail={Detail}")]
    public static partial void OomLikely(ILogger logger, string id, int pid, long memoryLimitMb, string detail);

    [LoggerMessage(2014, LogLevel.Information, "exec started id={Id} exec_id={ExecId} pid={Pid} command={Command}")]
    public static partial void ExecStarted(ILogger logger, string id, string execId, int pid, string command);

    [LoggerMessage(2015, LogLevel.Information, "exec exited id={Id} exec_id={ExecId} exit_code={ExitCode} timed_out={TimedOut} duration_ms={DurationMs}")]
    public static partial void ExecExited(ILogger logger, string id, string execId, int exitCode, bool timedOut, double durationMs);

    [LoggerMessage(2016, LogLevel.Warning, "exec output still open after the drain grace, closing it id={Id} exec_id={ExecId} stdout_bytes={StdoutBytes} stderr_bytes={StderrBytes} grace_s={GraceSeconds}")]
    public static partial void ExecOutputNotDrained(ILogger logger, string id, string execId, long stdoutBytes, long stderrBytes, double graceSeconds);

    [LoggerMessage(2017, LogLevel.Information, "removed an orphaned sandbox network key={Key}")]
    public static partial void NetworkReclaimed(ILogger logger, string key);
}
