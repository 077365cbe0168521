using System.Runtime.InteropServices;

namespace Corral.Interop;

/// <summary>openat2(2): path resolution the kernel keeps inside a directory (RESOLVE_IN_ROOT).</summary>
internal static partial class LibC
{
    private const long SYS_openat2 = 437;

    /// <summary>Symlinks, "..", and absolute names resolve as if the dir fd were the root (chroot-like).</summary>
    public const ulong RESOLVE_IN_ROOT = 0x10;

    /// <summary>No /proc/PID/fd-style magic links on the way.</summary>
    public const ulong RESOLVE_NO_MAGICLINKS = 0x02;

    /// <summary>No mount point crossed on the way.</summary>
    public const ulong RESOLVE_NO_XDEV = 0x01;

    public const int O_PATH = 0x200000;

    [StructLayout(LayoutKind.Sequential)]
    private struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    /// <summary>
    /// openat2 of <paramref name="path"/> under <paramref name="dirFd"/>; returns the fd or -1 with errno
    /// set (ENOSYS before Linux 5.6).
    /// </summary>
    public static unsafe int openat2(int dirFd, string path, int flags, uint mode, ulong resolve)
    {
        var how = new OpenHow { Flags = (ulong)(uint)flags, Mode = mode, Resolve = resolve };
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* name = bytes)
        {
            return (int)syscall(SYS_openat2, dirFd, (long)name, (long)&how, sizeof(OpenHow));
        }
    }
}
