using Corral.Common;
using Corral.Interop;
using Corral.Oom;
using Corral.Supervision;
using Microsoft.Extensions.Logging;

namespace Corral.Shim;

/// <summary>
/// The body of a sandbox's shim process: supervises one container with <see cref="ContainerSupervisor"/>
/// and reports through its <see cref="ShimDirectory"/>, so the sandbox outlives the daemon that
/// started it. The shim leaves the daemon's session (a terminal's Ctrl-C or the daemon's death do not
/// reach it); SIGTERM to the shim stops the container with the spec's grace.
/// </summary>
public static class ShimRunner
{
    /// <summary>
    /// The one line a waiting shim is told, on stdin, once a sandbox needs it: the sandbox's id (not yet
    /// validated). Null at end of input: the daemon stopped, died or dropped it before it was needed.
    /// </summary>
    public static unsafe string? ReadAssignment()
    {
        const int Cap = ContainerId.MaxLength + 2;
        var line = new byte[Cap];
        var length = 0;
        fixed (byte* buffer = line)
        {
            while (length < Cap)
            {
                var n = LibC.read(0, buffer + length, 1);
                if (n < 0 && LibC.LastError == LibC.EINTR)
                {
                    continue;
                }

                if (n <= 0)
                {
                    return null;
                }

                if (line[length] == (byte)'\n')
                {
                    return System.Text.Encoding.UTF8.GetString(line, 0, length);
                }

                length++;
            }
        }

        // Longer than any id: refused by the id's own check with the length in its message.
        return System.Text.Encoding.UTF8.GetString(line, 0, length);
    }

    public static void DetachFromDaemon(ShimDirectory dir)
    {
        _ = LibC.setsid();

        // Its working directory names the sandbox it serves (ps, /proc/PID/cwd, a leak check): a shim
        // taken from the daemon's ready pool has no id on its command line.
        Directory.SetCurrentDirectory(dir.Path);

        // Everything the shim prints goes to shim.log; the daemon's pipes are not held open.
        using var log = PrivateFiles.Open(dir.ShimLogFile, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
        var fd = (int)log.SafeFileHandle.DangerousGetHandle();
        using var devNull = new FileStream("/dev/null", FileMode.Open, FileAccess.Read);
        _ = LibC.dup2((int)devNull.SafeFileHandle.DangerousGetHandle(), 0);
        _ = LibC.dup2(fd, 1);
        _ = LibC.dup2(fd, 2);
    }

    /// <returns>0 when an exit record was written, 1 when a failure was.</returns>
    public static async Task<int> RunAsync(ShimDirectory dir, ShimSpec spec, ContainerSupervisor supervisor, ILogger logger, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(dir);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(supervisor);
        dir.ReserveSpace();
        var status = new StatusWriter(dir, logger);
        using var log = new SandboxLog(
            dir.LogFile,
            spec.LogCapBytes,
            () => ShimLog.LogCapReached(logger, dir.Id, spec.LogCapBytes),
            error => ShimLog.LogWriteFailed(logger, dir.Id, error));
        try
        {
            var io = new ContainerIo(log.StreamFor(OutputStream.Stdout), log.StreamFor(OutputStream.Stderr));
            var exit = await supervisor.RunAsync(spec.Request with { Id = dir.Id }, io, status, cancellationToken).ConfigureAwait(false);
            log.Close();
            exit = exit with { OutputDroppedBytes = exit.OutputDroppedBytes + log.DroppedBytes };
            dir.WriteExit(exit);
            ShimLog.Exited(logger, dir.Id, exit.ExitCode, exit.OomKilled);
            return 0;
        }
        catch (Exception ex)
        {
            log.Close();
            dir.WriteFailure(ex.Message, ex is Common.CorralException { BadInput: true });
            ShimLog.Failed(logger, dir.Id, ex.Message);
            return 1;
        }
    }

    /// <summary>Turns the supervisor's callbacks into status.json, in order: started, then each OOM event.</summary>
    private sealed class StatusWriter : IContainerObserver
    {
        private readonly Lock _gate = new();
        private readonly ShimDirectory _dir;
        private readonly ILogger _logger;
        private ShimStatus _status;

        public StatusWriter(ShimDirectory dir, ILogger logger)
        {
            _dir = dir;
            _logger = logger;
            _status = new ShimStatus { ShimPid = Environment.ProcessId };
            Write();
        }

        public void OnStarted(string id, int pid) => Change(s => s with { Pid = pid });

        public void OnNetwork(string id, Networking.NetworkAttachment attachment) => Change(s => s with { Network = attachment });

        public void OnOom(string id, OomEvent oom) =>
            Change(s => s with { OomEvents = [.. s.OomEvents, new OomEventRecord(oom.Kind.ToString().ToLowerInvariant(), oom.At, oom.OomKills, oom.Detail)] });

        private void Change(Func<ShimStatus, ShimStatus> change)
        {
            lock (_gate)
            {
                _status = change(_status);
                Write();
            }
        }

        /// <summary>Best effort: a full disk must not end the run (the exit record carries the same facts).</summary>
        private void Write()
        {
            try
            {
                _dir.WriteStatus(_status);
            }
            catch (IOException ex)
            {
                ShimLog.StatusWriteFailed(_logger, _dir.Id, ex.Message);
            }
        }
    }
}

internal static partial class ShimLog
{
    [LoggerMessage(2101, LogLevel.Information, "sandbox exited id={Id} exit_code={ExitCode} oom_killed={OomKilled}")]
    public static partial void Exited(ILogger logger, string id, int exitCode, bool oomKilled);

    [LoggerMessage(2102, LogLevel.Error, "sandbox failed id={Id} error={Error}")]
    public static partial void Failed(ILogger logger, string id, string error);

    [LoggerMessage(2103, LogLevel.Warning, "log limit reached, further output dropped id={Id} log_cap_bytes={CapBytes}")]
    public static partial void LogCapReached(ILogger logger, string id, long capBytes);

    [LoggerMessage(2104, LogLevel.Warning, "log not writable, further output dropped id={Id} error={Error}")]
    public static partial void LogWriteFailed(ILogger logger, string id, string error);

    [LoggerMessage(2105, LogLevel.Warning, "status not writable id={Id} error={Error}")]
    public static partial void StatusWriteFailed(ILogger logger, string id, string error);
}
