using System.Text;
using Corral.Interop;

namespace Corral.Common;

/// <summary>
/// The one way Corral writes under its state and data directories: directories 0700 and files 0600
/// whatever the caller's umask (the mode is set explicitly after creation, not left to the umask),
/// and never through a symlink planted where Corral expects its own directory.
/// </summary>
public static class PrivateFiles
{
    public const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Creates <paramref name="path"/> (and missing parents) 0700; an existing one keeps its mode unless it is Corral's to fix.</summary>
    public static string CreateDirectory(string path)
    {
        if (IsSymlink(path))
        {
            throw CorralException.Host($"refusing to use {path}: it is a symlink, not a directory Corral created");
        }

        // Each missing parent too: Directory.CreateDirectory gives only the leaf the mode asked for.
        var missing = new Stack<string>();
        for (var dir = Path.GetFullPath(path); !Directory.Exists(dir); dir = Path.GetDirectoryName(dir)!)
        {
            missing.Push(dir);
        }

        while (missing.TryPop(out var dir))
        {
            Directory.CreateDirectory(dir, DirectoryMode);
            File.SetUnixFileMode(dir, DirectoryMode);
        }

        return path;
    }

    /// <summary>Creates <paramref name="path"/> 0700, or makes an existing one 0700 (a directory only Corral uses).</summary>
    public static string CreateOwnDirectory(string path)
    {
        CreateDirectory(path);
        File.SetUnixFileMode(path, DirectoryMode);
        return path;
    }

    /// <summary>Opens (creating it 0600) a file; an existing one is made 0600 through the open handle.</summary>
    public static FileStream Open(string path, System.IO.FileMode mode, FileAccess access, FileShare share = FileShare.None, int bufferSize = 4096, FileOptions options = FileOptions.None)
    {
        var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = mode,
            Access = access,
            Share = share,
            BufferSize = bufferSize,
            Options = options,
            UnixCreateMode = mode is System.IO.FileMode.Open ? null : FileMode,
        });
        try
        {
            File.SetUnixFileMode(stream.SafeFileHandle, FileMode);
        }
        catch
        {
            stream.Dispose();
            throw;
        }

        return stream;
    }

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        using var stream = Open(path, System.IO.FileMode.Create, FileAccess.Write);
        stream.Write(bytes);
    }

    public static void WriteAllText(string path, string text) => WriteAllBytes(path, Encoding.UTF8.GetBytes(text));

    /// <summary>Written to a temp file beside it, then renamed over it: readers see the old or the new whole.</summary>
    public static void WriteAtomically(string path, string text)
    {
        var temp = path + ".tmp";
        WriteAllText(temp, text);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>True when <paramref name="path"/> is a Unix socket (a final symlink not followed).</summary>
    public static bool IsSocket(string path) =>
        LibC.FileMode(path, follow: false) is { } mode && (mode & LibC.S_IFMT) == LibC.S_IFSOCK;

    /// <summary>True when something (a dangling symlink too) exists at <paramref name="path"/>.</summary>
    public static bool Exists(string path) => LibC.FileMode(path, follow: false) is not null;

    /// <summary>True when <paramref name="path"/> itself is a symlink (not followed).</summary>
    public static bool IsSymlink(string path) =>
        LibC.FileMode(path, follow: false) is { } mode && (mode & LibC.S_IFMT) == LibC.S_IFLNK;

    /// <summary>
    /// Removes a directory tree Corral created at <paramref name="path"/> under <paramref name="root"/>,
    /// never through a symlink: when the path itself is a symlink only the link is removed; when a
    /// directory between the root and it is one, nothing is removed (refused). Entries inside are
    /// removed, links as links.
    /// </summary>
    public static void DeleteTree(string root, string path)
    {
        var fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (!full.StartsWith(fullRoot + "/", StringComparison.Ordinal))
        {
            throw CorralException.Host($"refusing to delete {path}: not under {root}");
        }

        var current = fullRoot;
        foreach (var part in full[(fullRoot.Length + 1)..].Split('/'))
        {
            current = current + "/" + part;
            var mode = LibC.FileMode(current, follow: false);
            if (mode is null)
            {
                return;
            }

            if ((mode.Value & LibC.S_IFMT) == LibC.S_IFLNK)
            {
                if (current.Length != full.Length)
                {
                    throw CorralException.Host($"refusing to delete {path}: {current} is a symlink");
                }

                File.Delete(current);
                return;
            }
        }

        // .NET's recursive delete removes symlinks inside as links, without following them.
        Directory.Delete(full, recursive: true);
    }
}
