using System.Runtime.InteropServices;

namespace Corral.Interop;

/// <summary>Ownership locks: claims of container names and the daemon's state-dir lock.</summary>
internal static partial class LibC
{
    public const int LOCK_SH = 1;
    public const int EWOULDBLOCK = EAGAIN;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;

    /// <summary>open(2) with a mode, for O_CREAT. .NET's own open takes an flock for FileShare, which would collide with the owner's.</summary>
    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, uint mode);
}
