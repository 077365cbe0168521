using System.Diagnostics;
using Corral.Interop;
using Corral.Runtimes;

namespace Corral.Supervision;

/// <summary>
/// The parent of a detached runc exec (`corral exec-reap`): a child subreaper that runs
/// `runc exec --detach`, is given the process when runc exits, waits for it and ends as it ended
/// (its exit code, or 128 + the signal that killed it), so the caller sees what a foreground exec
/// would report. Why not the foreground exec: runc copies the caller's stdio through pipes of its own
/// and forwards every signal it takes to the process, so when the process closed its stdin while the
/// caller still wrote to it, runc's stdin copy took a SIGPIPE and runc killed the process with it
/// (seen with runc 1.1.5: `sh -c 'exec 0&lt;&amp;-; sleep 0.3; echo closed'` ended 141 before its echo;
/// crun and runsc hand the process the caller's stdio and are run in the foreground).
/// </summary>
public static class ExecReaper
{
    /// <summary>The first argument the CLI serves this for (before it builds its commands: one start per exec).</summary>
    public const string CommandName = "exec-reap";

    /// <summary>
    /// <paramref name="reaper"/> (the corral binary, and any arguments before its command) running
    /// <paramref name="detached"/> for the process whose pid runc writes to <paramref name="pidFile"/>.
    /// </summary>
    public static RuntimeInvocation Wrap(IReadOnlyList<string> reaper, RuntimeInvocation detached, string pidFile)
    {
        ArgumentOutOfRangeException.ThrowIfZero(reaper.Count);
        return new RuntimeInvocation(reaper[0], [.. reaper.Skip(1), CommandName, pidFile, "--", detached.FileName, .. detached.Args]);
    }

    /// <summary>Runs the detached exec and waits for its process; the exit code to end with.</summary>
    public static int Run(string pidFile, IReadOnlyList<string> runtimeCommand, TextWriter error)
    {
        if (runtimeCommand.Count == 0)
        {
            error.WriteLine("corral exec-reap: no runtime command given");
            return 125;
        }

        // Before runc starts: the process it leaves behind is reparented here, not to init.
        if (LibC.prctl(LibC.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        {
            error.WriteLine($"corral exec-reap: cannot become a child subreaper: {LibC.LastErrorMessage}");
            return 125;
        }

        var info = new ProcessStartInfo(runtimeCommand[0]) { UseShellExecute = false };
        foreach (var arg in runtimeCommand.Skip(1))
        {
            info.ArgumentList.Add(arg);
        }

        int runtimeExit;
        try
        {
            using var runtime = Process.Start(info) ?? throw new InvalidOperationException($"could not start {info.FileName}");
            runtime.WaitForExit();
            runtimeExit = runtime.ExitCode;
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            error.WriteLine($"corral exec-reap: cannot run {info.FileName}: {ex.Message}");
            return 125;
        }

        if (runtimeExit != 0)
        {
            // runc said why on the stderr it shares with us; its exit code is the caller's answer.
            return runtimeExit;
        }

        if (RuntimePidFile.TryRead(pidFile) is not { } pid)
        {
            error.WriteLine($"corral exec-reap: {runtimeCommand[0]} started the process but wrote no pid to {pidFile}");
            return 125;
        }

        // The process holds the caller's stdio now; this parent lets go of its copies of stdin and stdout,
        // so a process that closes its stdin is seen to (the caller's writes fail) and its output ends with it.
        var devNull = LibC.open("/dev/null", LibC.O_RDWR | LibC.O_CLOEXEC);
        if (devNull >= 0)
        {
            _ = LibC.dup2(devNull, 0);
            _ = LibC.dup2(devNull, 1);
            _ = LibC.close(devNull);
        }

        while (true)
        {
            var reaped = LibC.waitpid(pid, out var status, 0);
            if (reaped == pid)
            {
                return ExitCodeOf(status);
            }

            var errno = LibC.LastError;
            if (reaped < 0 && errno == LibC.EINTR)
            {
                continue;
            }

            error.WriteLine($"corral exec-reap: cannot wait for pid {pid}: {LibC.ErrorText(errno)}");
            return 125;
        }
    }

    /// <summary>A wait status as a shell reports it: the exit code, or 128 + the signal that ended the process.</summary>
    public static int ExitCodeOf(int status)
    {
        var signal = status & 0x7f;
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal;
    }
}
