using System.Globalization;
using Corral.Interop;

namespace Corral.Common;

/// <summary>
/// The rules every request meets before anything is created, the same for the CLI, the daemon's API
/// and the shim (which gets its request from the daemon): text without NUL, names and paths without
/// control characters, every number within a stated bound.
/// </summary>
public static class InputRules
{
    /// <summary>The longest timeout, start timeout or grace: 365 days (a TimeSpan far from overflow).</summary>
    public static readonly TimeSpan MaxDuration = TimeSpan.FromDays(365);

    /// <summary>The kernel's PID_MAX_LIMIT on 64-bit: no pids limit above it means anything.</summary>
    public const long MaxPids = 4_194_304;

    /// <summary>4 EiB: beyond that a byte count no longer fits the kernel's counters.</summary>
    public const long MaxBytes = long.MaxValue / 2;

    /// <summary>Text handed to the kernel as a C string (argv, env, paths) cannot hold NUL.</summary>
    public static void NoNul(string what, string? value)
    {
        if (value is not null && value.Contains('\0', StringComparison.Ordinal))
        {
            throw CorralException.Invalid($"invalid {what} {Quote(value)}: contains a NUL character");
        }
    }

    /// <summary>Names and paths: no control characters at all (NUL, newline, escape, DEL).</summary>
    public static void NoControl(string what, string? value)
    {
        if (value is not null && value.Any(char.IsControl))
        {
            throw CorralException.Invalid($"invalid {what} {Quote(value)}: contains a control character");
        }
    }

    /// <summary>An environment variable name: printable ASCII without '=' or space, not empty.</summary>
    public static void EnvName(string name)
    {
        if (name.Length == 0 || name.Any(c => c is <= ' ' or >= '\x7f' or '='))
        {
            throw CorralException.Invalid($"invalid environment variable name {Quote(name)}: use printable ASCII without '=' or spaces");
        }
    }

    /// <summary>A process: its argv, environment and working directory.</summary>
    public static void Process(IReadOnlyList<string> command, IEnumerable<KeyValuePair<string, string>> env, string? workdir)
    {
        for (var i = 0; i < command.Count; i++)
        {
            NoNul(i == 0 ? "command" : "argument", command[i]);
        }

        foreach (var (key, value) in env)
        {
            EnvName(key);
            NoNul($"value of environment variable {key}", value);
        }

        if (workdir is not null)
        {
            NoControl("--workdir", workdir);
            if (!workdir.StartsWith('/'))
            {
                throw CorralException.Invalid($"invalid --workdir {Quote(workdir)}: must be an absolute path");
            }
        }
    }

    /// <summary>A timeout, start timeout or grace: positive (or zero where <paramref name="zeroAllowed"/>) and at most <see cref="MaxDuration"/>.</summary>
    public static TimeSpan Duration(string what, TimeSpan value, bool zeroAllowed = false)
    {
        if (value < TimeSpan.Zero || (value == TimeSpan.Zero && !zeroAllowed) || value > MaxDuration)
        {
            throw CorralException.Invalid($"invalid {what} {value.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)}s: must be {(zeroAllowed ? "at least zero" : "greater than zero")} and at most {MaxDuration.TotalDays:0} days");
        }

        return value;
    }

    /// <summary>A pids limit within what cgroup's pids.max takes.</summary>
    public static long Pids(long pids) =>
        pids is >= 1 and <= MaxPids ? pids : throw CorralException.Invalid($"invalid --pids {pids}: must be between 1 and {MaxPids}");

    /// <summary>
    /// A root filesystem must be a directory and never the host's own root: a container on "/" would
    /// see (and with runc's defaults, write) the host. Symlinks and ".." are resolved first.
    /// </summary>
    public static string Rootfs(string rootfs)
    {
        NoControl("rootfs", rootfs);
        var real = LibC.RealPath(rootfs);
        if (real is null || !Directory.Exists(real))
        {
            throw CorralException.Invalid($"rootfs '{rootfs}' does not exist or is not a directory");
        }

        if (real == "/")
        {
            throw CorralException.Invalid($"rootfs '{rootfs}' is the host's root filesystem: a container never runs on it; give a root filesystem directory (or none, for the default image)");
        }

        return real;
    }

    /// <summary>A directory option such as --state-dir or --data-dir: not empty, no control characters.</summary>
    public static string DirectoryOption(string what, string value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            throw CorralException.Invalid($"invalid {what} '{value}': must name a directory");
        }

        NoControl(what, value);
        return value;
    }

    public static string Quote(string value) => "'" + Printable(value) + "'";

    /// <summary>Text as a one-line error may echo it: control characters as \xNN.</summary>
    public static string Printable(string? value) =>
        string.Concat((value ?? string.Empty).Select(c => char.IsControl(c) ? $"\\x{(int)c:x2}" : c.ToString()));
}
