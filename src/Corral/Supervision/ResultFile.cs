using Corral.Common;
using Corral.Interop;

namespace Corral.Supervision;

/// <summary>
/// `--result-file`: checked before the container runs, so a bad path never costs the exit code.
/// Only a regular file (replaced: a temp file beside it, renamed over it, mode 0600) or a path that
/// does not exist yet in an existing directory; never a device, FIFO, socket, directory or anything
/// under /proc, /sys or /dev. A symlink is followed to where it points, once, here: the record goes
/// to that regular file, the link stays.
/// </summary>
public static class ResultFile
{
    private static readonly string[] PseudoFileSystems = ["/proc", "/sys", "/dev"];

    /// <summary>The path the record will be written to, or a one-line refusal.</summary>
    public static string Resolve(string path)
    {
        InputRules.NoControl("--result-file", path);
        if (path.Length == 0)
        {
            throw CorralException.Invalid("invalid --result-file '': must name a file");
        }

        var full = Path.GetFullPath(path);
        string target;
        if (LibC.FileMode(full, follow: false) is null)
        {
            var parent = Path.GetDirectoryName(full) ?? "/";
            var realParent = LibC.RealPath(parent);
            if (realParent is null || !Directory.Exists(realParent))
            {
                throw CorralException.Invalid($"invalid --result-file '{path}': its directory does not exist");
            }

            target = Path.Combine(realParent, Path.GetFileName(full));
        }
        else
        {
            var mode = LibC.FileMode(full, follow: true);
            if (mode is null)
            {
                throw CorralException.Invalid($"invalid --result-file '{path}': a symlink to nothing");
            }

            if ((mode.Value & LibC.S_IFMT) != LibC.S_IFREG)
            {
                throw CorralException.Invalid($"invalid --result-file '{path}': {Describe(mode.Value)}, not a regular file");
            }

            target = LibC.RealPath(full) ?? full;
        }

        if (PseudoFileSystems.Any(p => target == p || target.StartsWith(p + "/", StringComparison.Ordinal)))
        {
            throw CorralException.Invalid($"invalid --result-file '{path}': {target} is on a kernel pseudo-filesystem, not a regular file");
        }

        return target;
    }

    /// <summary>Writes the record, the shape `corral wait` prints; checked again, since the path may have changed since.</summary>
    public static void Write(string target, ExitRecord record)
    {
        if (LibC.FileMode(target, follow: false) is { } mode && (mode & LibC.S_IFMT) != LibC.S_IFREG)
        {
            throw CorralException.Invalid($"cannot write --result-file {target}: it became {Describe(mode)}");
        }

        PrivateFiles.WriteAtomically(target, record.ToJson());
    }

    private static string Describe(uint mode) => (mode & LibC.S_IFMT) switch
    {
        LibC.S_IFDIR => "a directory",
        LibC.S_IFCHR => "a character device",
        LibC.S_IFBLK => "a block device",
        LibC.S_IFIFO => "a FIFO",
        LibC.S_IFSOCK => "a socket",
        LibC.S_IFLNK => "a symlink",
        _ => "not a regular file",
    };
}
