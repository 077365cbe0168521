namespace Corral.Files;

/// <summary>Who files copied into a container belong to (its user), whatever the archive says.</summary>
public sealed record FileOwner(int Uid, int Gid);

/// <summary>
/// What one copy may move: <see cref="MaxBytes"/> of tar archive (headers included) and
/// <see cref="MaxEntries"/> entries; past either the copy fails with
/// <see cref="Common.ErrorKind.ResourceExhausted"/>.
/// </summary>
public readonly record struct CopyLimits(long MaxBytes, int MaxEntries)
{
    /// <summary>64 GiB and a million entries.</summary>
    public static CopyLimits Default => new(64L << 30, 1_000_000);
}

/// <summary>What one copy moved: the tar archive's size in bytes and its number of entries.</summary>
public readonly record struct CopyResult(long Bytes, int Entries);

/// <summary>What a container path is, once resolved.</summary>
public enum ContainerPathKind
{
    /// <summary>A regular file.</summary>
    File,

    /// <summary>A directory.</summary>
    Directory,

    /// <summary>A named pipe.</summary>
    Fifo,

    /// <summary>A device node, a socket: never copied.</summary>
    Other,
}

/// <summary>
/// A container path as <see cref="ContainerFiles.Stat"/> found it, symlinks (the last one too)
/// resolved inside the container's root. <see cref="Name"/> is the last component of the path as
/// given; <see cref="Mode"/> holds the permission bits (set-id and sticky included).
/// </summary>
public sealed record ContainerPathInfo(string Name, ContainerPathKind Kind, long Size, UnixFileMode Mode, int Uid, int Gid, DateTimeOffset ModificationTime)
{
    public bool IsDirectory => Kind == ContainerPathKind.Directory;
}
