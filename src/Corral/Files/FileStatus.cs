using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Corral.Interop;

namespace Corral.Files;

/// <summary>The statx(2) fields a copy needs, of a name under a directory fd or of an fd itself.</summary>
internal readonly record struct FileStatus(uint Mode, int Uid, int Gid, long Size, long MtimeSeconds, uint MtimeNanos, ulong Inode, ulong Device)
{
    private const uint S_IFSOCK = 0xC000;

    public uint Type => Mode & AtCalls.S_IFMT;

    public bool IsDirectory => Type == AtCalls.S_IFDIR;

    public bool IsRegular => Type == AtCalls.S_IFREG;

    public bool IsSymlink => Type == AtCalls.S_IFLNK;

    public bool IsFifo => Type == LibC.S_IFIFO;

    public bool IsSocket => Type == S_IFSOCK;

    /// <summary>Permission bits with set-uid, set-gid and sticky.</summary>
    public UnixFileMode Permissions => (UnixFileMode)(Mode & 0b111_111_111_111);

    public DateTimeOffset ModificationTime => DateTimeOffset.FromUnixTimeSeconds(MtimeSeconds).AddTicks(MtimeNanos / 100);

    public ContainerPathKind Kind => IsDirectory ? ContainerPathKind.Directory
        : IsRegular ? ContainerPathKind.File
        : IsFifo ? ContainerPathKind.Fifo
        : ContainerPathKind.Other;

    /// <summary>lstat of <paramref name="name"/> under <paramref name="dirFd"/> (an empty name: the fd itself); null when it is not there.</summary>
    public static FileStatus? Of(int dirFd, string name)
    {
        var buffer = new byte[256];
        var flags = AtCalls.AT_SYMLINK_NOFOLLOW | (name.Length == 0 ? AtCalls.AT_EMPTY_PATH : 0);
        if (LibC.statx(dirFd, name, flags, AtCalls.STATX_BASIC_STATS, buffer) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno is LibC.ENOENT or AtCalls.ENOTDIR
                ? null
                : throw new IOException($"cannot stat {LayerUnpackerName(name)}: {LibC.ErrorText(errno)}");
        }

        var span = buffer.AsSpan();
        return new FileStatus(
            BinaryPrimitives.ReadUInt16LittleEndian(span[28..]),
            (int)BinaryPrimitives.ReadUInt32LittleEndian(span[20..]),
            (int)BinaryPrimitives.ReadUInt32LittleEndian(span[24..]),
            (long)BinaryPrimitives.ReadUInt64LittleEndian(span[40..]),
            BinaryPrimitives.ReadInt64LittleEndian(span[112..]),
            BinaryPrimitives.ReadUInt32LittleEndian(span[120..]),
            BinaryPrimitives.ReadUInt64LittleEndian(span[32..]),
            ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(span[136..]) << 32) | BinaryPrimitives.ReadUInt32LittleEndian(span[140..]));
    }

    private static string LayerUnpackerName(string name) => name.Length == 0 ? "an open file" : Images.LayerUnpacker.Printable(name);
}
