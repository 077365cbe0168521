using System.Globalization;
using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Images;
using Corral.Interop;
using Microsoft.Win32.SafeHandles;

namespace Corral.Files;

/// <summary>
/// A container's root filesystem held open as a directory fd, and container paths resolved in it by
/// the kernel: openat2 with RESOLVE_IN_ROOT (symlinks, the last one too unless asked otherwise,
/// followed as inside the container: an absolute target restarts at the root, ".." stops at it) and
/// RESOLVE_NO_MAGICLINKS. No host path is ever built from a container path.
/// </summary>
internal sealed class ContainerRoot : IDisposable
{
    private const ulong Resolve = LibC.RESOLVE_IN_ROOT | LibC.RESOLVE_NO_MAGICLINKS;
    private const int EAGAIN = 11;
    private const int EXDEV = 18;
    private const int ENOSYS = 38;
    private const int Retries = 16;

    private ContainerRoot(int fd) => Fd = fd;

    public int Fd { get; }

    /// <summary>Opens <paramref name="rootDir"/> (a host path Corral chose, so followed as is).</summary>
    public static ContainerRoot Open(string rootDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(rootDir);
        var fd = LibC.openat(AtCalls.AT_FDCWD, Path.GetFullPath(rootDir), AtCalls.O_DIRECTORY | LibC.O_CLOEXEC, 0);
        return fd >= 0
            ? new ContainerRoot(fd)
            : throw CorralException.Host($"cannot open the container's root filesystem {rootDir}: {LibC.ErrorText(Marshal.GetLastPInvokeError())}");
    }

    /// <summary>A path's components cleaned lexically (Go's filepath.Clean): no ".", ".." applied, never above "/".</summary>
    public static List<string> Clean(string path)
    {
        var parts = new List<string>();
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == "..")
            {
                if (parts.Count > 0)
                {
                    parts.RemoveAt(parts.Count - 1);
                }
            }
            else if (part != ".")
            {
                parts.Add(part);
            }
        }

        return parts;
    }

    /// <summary>A container path must be absolute and free of NULs.</summary>
    public static void CheckPath(string containerPath)
    {
        ArgumentNullException.ThrowIfNull(containerPath);
        if (!containerPath.StartsWith('/') || containerPath.Contains('\0', StringComparison.Ordinal))
        {
            throw CorralException.Invalid($"a container path must be absolute: '{LayerUnpacker.Printable(containerPath)}'");
        }
    }

    /// <summary>
    /// An fd (O_PATH unless <paramref name="flags"/> say otherwise) of <paramref name="containerPath"/>
    /// resolved inside the root; -1 when it, or a directory on the way, does not exist (or, with
    /// <paramref name="loopIsMissing"/>, is a symlink loop).
    /// </summary>
    public int OpenInside(string containerPath, int flags, bool loopIsMissing = false)
    {
        for (var attempt = 0; ; attempt++)
        {
            var fd = LibC.openat2(Fd, containerPath.Length == 0 ? "/" : containerPath, flags | LibC.O_CLOEXEC, 0, Resolve);
            if (fd >= 0)
            {
                return fd;
            }

            var errno = Marshal.GetLastPInvokeError();
            switch (errno)
            {
                case LibC.ENOENT or AtCalls.ENOTDIR:
                    return -1;
                case AtCalls.ELOOP when loopIsMissing:
                    return -1;
                case EAGAIN or LibC.EINTR when attempt < Retries:
                    // A rename or ".." race inside the root: the kernel asks for a retry.
                    continue;
                case EXDEV:
                    throw CorralException.Invalid($"{LayerUnpacker.Printable(containerPath)} leads out of the container's root");
                case AtCalls.ELOOP:
                    throw CorralException.Invalid($"too many levels of symbolic links in the container: {LayerUnpacker.Printable(containerPath)}");
                case ENOSYS:
                    throw CorralException.Host("resolving paths inside a container's root needs openat2 (Linux 5.6 or newer)");
                default:
                    throw CorralException.Host($"cannot resolve {LayerUnpacker.Printable(containerPath)} in the container: {LibC.ErrorText(errno)}");
            }
        }
    }

    /// <summary>
    /// The real path (no symlink in it) of directory fd <paramref name="dirFd"/>, as components
    /// relative to the root. Read from /proc/self/fd and then proven: the components, opened again
    /// from the root one at a time with O_NOFOLLOW, must lead to that very directory (inode and device).
    /// </summary>
    public List<string> PartsOf(int dirFd, string containerPath)
    {
        var root = LayerUnpacker.ReadLink(AtCalls.AT_FDCWD, $"/proc/self/fd/{Fd}");
        var dir = LayerUnpacker.ReadLink(AtCalls.AT_FDCWD, $"/proc/self/fd/{dirFd}");
        List<string>? parts = null;
        if (root is not null && dir is not null)
        {
            var prefix = root == "/" ? "/" : root + "/";
            if (dir == root)
            {
                parts = [];
            }
            else if (dir.StartsWith(prefix, StringComparison.Ordinal))
            {
                parts = [.. dir[prefix.Length..].Split('/')];
            }
        }

        if (parts is null || parts.Any(p => p is "" or "." or "..") || !Leads(parts, dirFd))
        {
            throw CorralException.Precondition($"cannot pin down {LayerUnpacker.Printable(containerPath)} in the container's root (did it change meanwhile?)");
        }

        return parts;
    }

    /// <summary>
    /// The content of the regular file at <paramref name="containerPath"/> as the container sees it,
    /// or null where it is missing or a symlink loop (as docker treats an unreadable /etc/passwd).
    /// Opened O_PATH, checked to be a regular file of at most <paramref name="maxBytes"/>, then reopened
    /// through /proc/self/fd: a FIFO or device node swapped in is never opened for reading.
    /// <paramref name="fail"/> turns a reason into the exception to throw.
    /// </summary>
    public byte[]? ReadFile(string containerPath, int maxBytes, Func<string, Exception> fail)
    {
        ArgumentNullException.ThrowIfNull(fail);
        var pathFd = OpenInside(containerPath, LibC.O_PATH, loopIsMissing: true);
        if (pathFd < 0)
        {
            return null;
        }

        try
        {
            var status = FileStatus.Of(pathFd, string.Empty) ?? throw CorralException.Host($"the container's {containerPath} vanished while it was read");
            if (!status.IsRegular)
            {
                throw fail($"the container's {containerPath} is not a regular file");
            }

            if (status.Size > maxBytes)
            {
                throw fail($"the container's {containerPath} is larger than {ByteSize.Format(maxBytes)}");
            }

            var fd = LibC.open("/proc/self/fd/" + pathFd.ToString(CultureInfo.InvariantCulture), LibC.O_RDONLY | LibC.O_CLOEXEC);
            if (fd < 0)
            {
                throw CorralException.Host($"cannot reopen the container's {containerPath}: {LibC.LastErrorMessage}");
            }

            using var handle = new SafeFileHandle(fd, ownsHandle: true);

            // Sized by statx; grown (up to one byte past the limit) should the file grow meanwhile.
            var buffer = new byte[(int)status.Size + 1];
            var length = 0;
            while (length <= maxBytes)
            {
                if (length == buffer.Length)
                {
                    Array.Resize(ref buffer, (int)Math.Min(2L * buffer.Length, maxBytes + 1L));
                }

                var n = RandomAccess.Read(handle, buffer.AsSpan(length), length);
                if (n == 0)
                {
                    break;
                }

                length += n;
            }

            return length > maxBytes ? throw fail($"the container's {containerPath} is larger than {ByteSize.Format(maxBytes)}") : buffer[..length];
        }
        finally
        {
            LibC.close(pathFd);
        }
    }

    public void Dispose() => LibC.close(Fd);

    private bool Leads(List<string> parts, int dirFd)
    {
        var current = LibC.openat(Fd, ".", LibC.O_PATH | AtCalls.O_DIRECTORY | LibC.O_CLOEXEC, 0);
        try
        {
            foreach (var part in parts)
            {
                if (current < 0)
                {
                    return false;
                }

                var next = LibC.openat(current, part, LibC.O_PATH | AtCalls.O_DIRECTORY | AtCalls.O_NOFOLLOW | LibC.O_CLOEXEC, 0);
                LibC.close(current);
                current = next;
            }

            return current >= 0
                && FileStatus.Of(current, "") is { } reached
                && FileStatus.Of(dirFd, "") is { } expected
                && reached.Inode == expected.Inode && reached.Device == expected.Device;
        }
        finally
        {
            if (current >= 0)
            {
                LibC.close(current);
            }
        }
    }
}
