using System.Globalization;
using System.Text;
using Corral.Interop;

namespace Corral.Oom;

/// <summary>One process the kernel's OOM killer chose, as its log line names it.</summary>
/// <param name="Pid">The victim's pid in the host's pid namespace.</param>
/// <param name="Process">Its command name (the kernel's <c>comm</c>, at most 15 bytes).</param>
/// <param name="OomCgroup">The memory cgroup whose limit was hit; null when only the kill line was logged.</param>
/// <param name="TaskCgroup">The victim's own memory cgroup; null when only the kill line was logged.</param>
/// <param name="BootTimeMicroseconds">When, in microseconds since boot (the kernel log's clock).</param>
public sealed record OomVictim(int Pid, string Process, string? OomCgroup, string? TaskCgroup, long BootTimeMicroseconds)
{
    /// <summary>True when the kernel's report named the cgroups (its summary line); false for a bare kill line.</summary>
    public bool NamesCgroups => OomCgroup is not null;
}

/// <summary>
/// Reads the kernel's own account of its OOM kills: since 4.19 every kill logs one line
/// <c>oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/a/b,task_memcg=/a/b,task=python3,pid=1234,uid=0</c>.
/// The cgroup's counters say that a kill happened; only this line says which process it was. The kernel
/// rate-limits that report (10 per 5 s host-wide, measured: 15 kills in a row logged 11 summaries and
/// "oom_kill_process: 4 callbacks suppressed"); the line it always logs, <c>Killed process 1234 (python3)</c>,
/// names no cgroup, so a kill seen only there is attributed by pid alone (see <see cref="KernelLogCursor.ReadKills"/>).
/// </summary>
public static class KernelOomLog
{
    private const string Marker = "oom-kill:";
    private const string KilledMarker = "Killed process ";

    /// <summary>Parses one <c>/dev/kmsg</c> record ("prio,seq,usec,flags;message"); null when it is not a kill line.</summary>
    public static OomVictim? ParseRecord(string record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var semicolon = record.IndexOf(';', StringComparison.Ordinal);
        if (semicolon < 0)
        {
            return null;
        }

        var header = record.AsSpan(0, semicolon);
        var message = record[(semicolon + 1)..];
        var newline = message.IndexOf('\n', StringComparison.Ordinal);
        if (newline >= 0)
        {
            // Continuation lines (" SUBSYSTEM=...") follow the message.
            message = message[..newline];
        }

        long usec = 0;
        var fields = header.ToString().Split(',');
        if (fields.Length >= 3)
        {
            _ = long.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out usec);
        }

        if (!message.StartsWith(Marker, StringComparison.Ordinal))
        {
            return ParseKillLine(message, usec);
        }

        string? oomMemcg = null, taskMemcg = null, task = null;
        int? pid = null;
        foreach (var pair in message[Marker.Length..].Split(','))
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                continue;
            }

            var value = pair[(eq + 1)..];
            switch (pair[..eq])
            {
                case "oom_memcg":
                    oomMemcg = value;
                    break;
                case "task_memcg":
                    taskMemcg = value;
                    break;
                case "task":
                    task = value;
                    break;
                case "pid":
                    pid = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p > 0 ? p : null;
                    break;
            }
        }

        return pid is { } victimPid && task is not null && oomMemcg is not null
            ? new OomVictim(victimPid, task, oomMemcg, taskMemcg ?? oomMemcg, usec)
            : null;
    }

    /// <summary>"Memory cgroup out of memory: Killed process 1234 (python3) total-vm:..." (never rate-limited).</summary>
    private static OomVictim? ParseKillLine(string message, long usec)
    {
        var at = message.IndexOf(KilledMarker, StringComparison.Ordinal);
        if (at < 0 || !message.Contains("out of memory: ", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var rest = message[(at + KilledMarker.Length)..];
        var open = rest.IndexOf(" (", StringComparison.Ordinal);
        if (open <= 0 || !int.TryParse(rest.AsSpan(0, open), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0)
        {
            return null;
        }

        // The comm may itself hold ") "; the kernel's next field is total-vm.
        var close = rest.IndexOf(") total-vm:", open, StringComparison.Ordinal);
        if (close < 0)
        {
            close = rest.LastIndexOf(')');
        }

        return close > open + 2 ? new OomVictim(pid, rest[(open + 2)..close], null, null, usec) : null;
    }

    /// <summary>
    /// True when the kill was for <paramref name="cgroupPath"/>'s limit or hit a process inside it. The
    /// kernel names cgroups from its own root; a supervisor in a cgroup namespace knows only the tail.
    /// </summary>
    public static bool IsFor(OomVictim victim, string cgroupPath)
    {
        ArgumentNullException.ThrowIfNull(victim);
        var path = "/" + cgroupPath.Trim('/');
        return Within(victim.OomCgroup, path) || Within(victim.TaskCgroup, path);

        static bool Within(string? memcg, string path) =>
            memcg is not null && (memcg.EndsWith(path, StringComparison.Ordinal) || memcg.Contains(path + "/", StringComparison.Ordinal));
    }

    /// <summary>
    /// Which of the logged kills (in log order) were the container's: those whose report names
    /// <paramref name="cgroupPath"/>, and those the kernel logged only as a kill line (its report rate-limited)
    /// whose pid is <paramref name="knownPid"/>, a process known to be the container's (runc's PID 1, gVisor's sandbox).
    /// </summary>
    public static IReadOnlyList<OomVictim> Attribute(IEnumerable<OomVictim> records, string cgroupPath, int? knownPid)
    {
        ArgumentNullException.ThrowIfNull(records);
        var victims = new List<OomVictim>();
        var reported = new HashSet<int>();
        foreach (var victim in records)
        {
            if (victim.NamesCgroups)
            {
                // The report comes just before its own kill line, which then adds nothing.
                reported.Add(victim.Pid);
                if (IsFor(victim, cgroupPath))
                {
                    victims.Add(victim);
                }
            }
            else if (victim.Pid == knownPid && reported.Add(victim.Pid))
            {
                victims.Add(victim);
            }
        }

        return victims;
    }
}

/// <summary>
/// A read position in the kernel log (<c>/dev/kmsg</c>), taken when a container starts so that its exit
/// reads only what was logged since. Null from <see cref="TryOpenAtEnd"/> where the log cannot be read
/// (no CAP_SYSLOG, or no /dev/kmsg in this mount namespace): the record then names no process.
/// </summary>
public sealed unsafe class KernelLogCursor : IDisposable
{
    private const int SeekEnd = 2;
    private const int RecordBytes = 8192;
    private const int MaxRecords = 20_000;
    private int _fd;

    private KernelLogCursor(int fd) => _fd = fd;

    public static KernelLogCursor? TryOpenAtEnd()
    {
        var fd = LibC.open("/dev/kmsg", LibC.O_RDONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            return null;
        }

        if (LibC.lseek(fd, 0, SeekEnd) < 0)
        {
            _ = LibC.close(fd);
            return null;
        }

        return new KernelLogCursor(fd);
    }

    /// <summary>
    /// The OOM kills logged since the cursor was taken (or last read) that were the container's
    /// (see <see cref="KernelOomLog.Attribute"/>).
    /// </summary>
    public IReadOnlyList<OomVictim> ReadKills(string cgroupPath, int? knownPid) =>
        KernelOomLog.Attribute(ReadRecords(), cgroupPath, knownPid);

    /// <summary>Every OOM kill line (reports and bare kill lines) logged since the cursor was taken or last read, in order.</summary>
    public IReadOnlyList<OomVictim> ReadRecords()
    {
        var records = new List<OomVictim>();
        if (_fd < 0)
        {
            return records;
        }

        var buffer = new byte[RecordBytes];
        fixed (byte* start = buffer)
        {
            for (var count = 0; count < MaxRecords; count++)
            {
                var n = LibC.read(_fd, start, RecordBytes);
                if (n < 0)
                {
                    var errno = LibC.LastError;
                    if (errno == LibC.EINTR || errno == LibC.EPIPE)
                    {
                        // EPIPE: records were overwritten before we read them; reading goes on from the oldest left.
                        continue;
                    }

                    break; // EAGAIN: nothing more
                }

                if (n == 0)
                {
                    break;
                }

                if (KernelOomLog.ParseRecord(Encoding.UTF8.GetString(buffer, 0, (int)n)) is { } victim)
                {
                    records.Add(victim);
                }
            }
        }

        return records;
    }

    public void Dispose()
    {
        var fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
        {
            _ = LibC.close(fd);
        }
    }
}
