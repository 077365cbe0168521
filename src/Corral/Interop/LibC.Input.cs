using System.Runtime.InteropServices;

namespace Corral.Interop;

/// <summary>File-type and path calls for checking what a caller names (result files, sockets, roots).</summary>
internal static partial class LibC
{
    public const uint S_IFMT = 0xF000;
    public const uint S_IFSOCK = 0xC000;
    public const uint S_IFLNK = 0xA000;
    public const uint S_IFREG = 0x8000;
    public const uint S_IFBLK = 0x6000;
    public const uint S_IFDIR = 0x4000;

    [LibraryImport(Lib, EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lstat(string path, byte[] buffer);

    [LibraryImport(Lib, EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int stat(string path, byte[] buffer);

    [LibraryImport(Lib, EntryPoint = "realpath", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint realpath(string path, nint resolved);

    [LibraryImport(Lib, EntryPoint = "free")]
    private static partial void free(nint pointer);

    /// <summary>st_mode of <paramref name="path"/> (not following a final symlink unless <paramref name="follow"/>), or null when it does not exist.</summary>
    public static uint? FileMode(string path, bool follow)
    {
        // struct stat: st_mode sits after dev, ino, nlink (x86_64) or dev, ino (arm64).
        var buffer = new byte[256];
        if ((follow ? stat(path, buffer) : lstat(path, buffer)) != 0)
        {
            return null;
        }

        var offset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 24 : 16;
        return BitConverter.ToUInt32(buffer, offset);
    }

    /// <summary>The canonical path (every symlink resolved), or null when it does not exist.</summary>
    public static string? RealPath(string path)
    {
        var resolved = realpath(path, 0);
        if (resolved == 0)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            free(resolved);
        }
    }
}
