using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Interop;

namespace Corral.Users;

/// <summary>Paths inside a container's root filesystem, made from the root's directory fd only.</summary>
public static class ContainerPaths
{
    /// <summary>Symlinks followed on one path before it is refused (the kernel's MAXSYMLINKS).</summary>
    public const int MaxLinkHops = 40;

    private const uint DirectoryMode = 0b111_101_101;

    /// <summary>
    /// Makes <paramref name="containerPath"/> (docker's <c>--workdir</c>) a directory in the root
    /// filesystem at <paramref name="rootDir"/>, as docker does when it is missing. The path is first
    /// cleaned lexically as docker cleans it (so "/a/b/../c" never makes b), then walked
    /// one component at a time from the root's fd, opening each with O_NOFOLLOW: a symlink is read and
    /// resolved here, inside the root (an absolute target restarts at the root, ".." stops at it), so
    /// nothing outside <paramref name="rootDir"/> is ever reached. A missing directory is made with
    /// mkdirat relative to its parent's fd, mode 0755, owned by 0:0 when Corral runs as root.
    /// Returns how many directories were made.
    /// </summary>
    public static int EnsureDirectory(string rootDir, string containerPath)
    {
        ArgumentNullException.ThrowIfNull(containerPath);
        InputRules.NoNul("--workdir", containerPath);
        if (!containerPath.StartsWith('/'))
        {
            throw CorralException.Invalid($"invalid --workdir {InputRules.Quote(containerPath)}: must be an absolute path");
        }

        using var root = Files.ContainerRoot.Open(rootDir);
        var pending = new Stack<string>(Enumerable.Reverse(Files.ContainerRoot.Clean(containerPath)));
        var fds = new List<int>();
        var names = new List<string>();
        var hops = 0;
        var created = 0;
        try
        {
            while (pending.Count > 0)
            {
                var part = pending.Pop();
                if (part == ".")
                {
                    continue;
                }

                if (part == "..")
                {
                    if (fds.Count > 0)
                    {
                        LibC.close(fds[^1]);
                        fds.RemoveAt(fds.Count - 1);
                        names.RemoveAt(names.Count - 1);
                    }

                    continue;
                }

                var current = fds.Count == 0 ? root.Fd : fds[^1];
                var here = "/" + string.Join('/', names.Append(part));
                var fd = LibC.openat(current, part, LibC.O_PATH | AtCalls.O_NOFOLLOW | LibC.O_CLOEXEC, 0);
                if (fd < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno != LibC.ENOENT)
                    {
                        throw CorralException.Host($"cannot open {here} in the container: {LibC.ErrorText(errno)}");
                    }

                    if (LibC.mkdirat(current, part, DirectoryMode) != 0)
                    {
                        errno = Marshal.GetLastPInvokeError();
                        if (errno == AtCalls.EEXIST && ++hops <= MaxLinkHops)
                        {
                            // Made meanwhile: look again.
                            pending.Push(part);
                            continue;
                        }

                        throw CorralException.Host($"cannot create {here} in the container: {LibC.ErrorText(errno)}");
                    }

                    created++;
                    fds.Add(OpenCreated(current, part, here));
                    names.Add(part);
                    continue;
                }

                var (mode, _) = Stat(fd, here);
                switch (mode & AtCalls.S_IFMT)
                {
                    case AtCalls.S_IFDIR:
                        fds.Add(fd);
                        names.Add(part);
                        break;
                    case AtCalls.S_IFLNK:
                        string target;
                        try
                        {
                            if (++hops > MaxLinkHops)
                            {
                                throw CorralException.Invalid($"invalid --workdir {InputRules.Quote(containerPath)}: {here} goes through too many symlinks in the container");
                            }

                            target = Images.LayerUnpacker.ReadLink(fd, string.Empty) ?? throw CorralException.Host($"cannot read the symlink {here} in the container: {LibC.LastErrorMessage}");
                        }
                        finally
                        {
                            LibC.close(fd);
                        }

                        if (target.StartsWith('/'))
                        {
                            fds.ForEach(f => LibC.close(f));
                            fds.Clear();
                            names.Clear();
                        }

                        foreach (var segment in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse())
                        {
                            pending.Push(segment);
                        }

                        break;
                    default:
                        LibC.close(fd);
                        throw CorralException.Invalid($"invalid --workdir {InputRules.Quote(containerPath)}: {here} is not a directory in the container");
                }
            }
        }
        finally
        {
            fds.ForEach(f => LibC.close(f));
        }

        return created;
    }

    private static (uint Mode, ulong Size) Stat(int fd, string here)
    {
        try
        {
            var status = Files.FileStatus.Of(fd, string.Empty) ?? throw CorralException.Host($"{here} vanished from the container while its directory was made");
            return (status.Mode, (ulong)status.Size);
        }
        catch
        {
            LibC.close(fd);
            throw;
        }
    }

    /// <summary>Opens the directory just made (never through a symlink) and sets its owner and mode as docker does.</summary>
    private static int OpenCreated(int parentFd, string name, string here)
    {
        var fd = LibC.openat(parentFd, name, LibC.O_RDONLY | AtCalls.O_DIRECTORY | AtCalls.O_NOFOLLOW | LibC.O_CLOEXEC, 0);
        if (fd < 0)
        {
            throw CorralException.Host($"cannot open {here} in the container: {LibC.LastErrorMessage}");
        }

        if ((Environment.IsPrivilegedProcess && LibC.fchown(fd, 0, 0) != 0) || LibC.fchmod(fd, DirectoryMode) != 0)
        {
            var message = LibC.LastErrorMessage;
            LibC.close(fd);
            throw CorralException.Host($"cannot set the owner and mode of {here} in the container: {message}");
        }

        return fd;
    }
}
