using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Corral.Common;
using Corral.Interop;
using Microsoft.Win32.SafeHandles;

namespace Corral.Users;

/// <summary>
/// A container's root filesystem held open as a directory fd: what is read or made in it is reached
/// from that fd, with the kernel (openat2 RESOLVE_IN_ROOT) or Corral resolving every symlink inside it.
/// </summary>
internal sealed class RootDirectory : IDisposable
{
    private const int OpenAttempts = 16;
    private const int ENOSYS = 38;

    private RootDirectory(int fd) => Fd = fd;

    /// <summary>An O_PATH fd of the root directory.</summary>
    public int Fd { get; private set; }

    /// <summary>Opens <paramref name="rootDir"/> (a host path Corral chose, so followed as given).</summary>
    public static RootDirectory Open(string rootDir)
    {
        ArgumentNullException.ThrowIfNull(rootDir);
        InputRules.NoNul("root filesystem", rootDir);
        var fd = LibC.open(rootDir, LibC.O_PATH | AtCalls.O_DIRECTORY | LibC.O_CLOEXEC);
        return fd >= 0 ? new RootDirectory(fd) : throw CorralException.Host($"cannot open the root filesystem {InputRules.Quote(rootDir)}: {LibC.LastErrorMessage}");
    }

    /// <summary>
    /// The content of the regular file at <paramref name="containerPath"/> as the container sees it
    /// (symlinks and ".." resolved inside the root, no magic links), or null where it is missing
    /// or a symlink loop.
    /// The file is opened O_PATH, checked to be a regular file of at most <paramref name="maxBytes"/>,
    /// then reopened through /proc/self/fd: a FIFO or device node swapped in is never opened for reading.
    /// <paramref name="fail"/> turns a reason into the exception to throw.
    /// </summary>
    public byte[]? ReadFile(string containerPath, int maxBytes, Func<string, Exception> fail)
    {
        ArgumentNullException.ThrowIfNull(fail);
        var pathFd = -1;
        for (var attempt = 0; pathFd < 0; attempt++)
        {
            pathFd = LibC.openat2(Fd, containerPath, LibC.O_PATH | LibC.O_CLOEXEC, 0, LibC.RESOLVE_IN_ROOT | LibC.RESOLVE_NO_MAGICLINKS);
            if (pathFd >= 0)
            {
                break;
            }

            var errno = Marshal.GetLastPInvokeError();
            switch (errno)
            {
                case LibC.ENOENT or AtCalls.ENOTDIR or AtCalls.ELOOP:
                    // Missing, or a symlink loop: as docker does when it cannot open the file.
                    return null;
                case ENOSYS:
                    throw CorralException.Host("openat2 is not available: Corral needs Linux 5.6 or later");
                case LibC.EAGAIN or LibC.EINTR when attempt < OpenAttempts:
                    continue;
                default:
                    throw CorralException.Host($"cannot open the container's {containerPath}: {LibC.ErrorText(errno)}");
            }
        }

        try
        {
            var (mode, size) = Stat(pathFd, string.Empty, $"the container's {containerPath}");
            if ((mode & AtCalls.S_IFMT) != AtCalls.S_IFREG)
            {
                throw fail($"the container's {containerPath} is not a regular file");
            }

            if (size > (ulong)maxBytes)
            {
                throw fail($"the container's {containerPath} is larger than {FormatBytes(maxBytes)}");
            }

            var fd = LibC.open("/proc/self/fd/" + pathFd.ToString(CultureInfo.InvariantCulture), LibC.O_RDONLY | LibC.O_CLOEXEC);
            if (fd < 0)
            {
                throw CorralException.Host($"cannot reopen the container's {containerPath}: {LibC.LastErrorMessage}");
            }

            using var handle = new SafeFileHandle(fd, ownsHandle: true);
            // Sized by statx; grown (up to one byte past the limit) should the file grow meanwhile.
            var buffer = new byte[(int)size + 1];
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

            return length > maxBytes ? throw fail($"the container's {containerPath} is larger than {FormatBytes(maxBytes)}") : buffer[..length];
        }
        finally
        {
            LibC.close(pathFd);
        }
    }

    /// <summary>statx of <paramref name="name"/> under <paramref name="dirFd"/> (of the fd itself when empty), not following a final symlink.</summary>
    public static (uint Mode, ulong Size) Stat(int dirFd, string name, string what)
    {
        var buffer = new byte[256];
        if (LibC.statx(dirFd, name, AtCalls.AT_SYMLINK_NOFOLLOW | (name.Length == 0 ? AtCalls.AT_EMPTY_PATH : 0), AtCalls.STATX_BASIC_STATS, buffer) != 0)
        {
            throw CorralException.Host($"cannot stat {what}: {LibC.LastErrorMessage}");
        }

        return (BitConverter.ToUInt16(buffer, 28), BitConverter.ToUInt64(buffer, 40));
    }

    /// <summary>The target of the symlink an O_PATH|O_NOFOLLOW fd holds.</summary>
    public static string ReadLink(int linkFd, string what)
    {
        var buffer = new byte[4096];
        var n = LibC.readlinkat(linkFd, string.Empty, buffer, (nuint)buffer.Length);
        return n >= 0 && n < buffer.Length
            ? Encoding.UTF8.GetString(buffer, 0, (int)n)
            : throw CorralException.Host($"cannot read the symlink {what}: {(n < 0 ? LibC.LastErrorMessage : "target too long")}");
    }

    public void Dispose()
    {
        if (Fd >= 0)
        {
            LibC.close(Fd);
            Fd = -1;
        }
    }

    private static string FormatBytes(int bytes) =>
        bytes % (1 << 20) == 0 ? $"{(bytes >> 20).ToString(CultureInfo.InvariantCulture)} MiB" : $"{bytes.ToString(CultureInfo.InvariantCulture)} bytes";
}
