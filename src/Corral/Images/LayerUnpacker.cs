using System.Formats.Tar;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Corral.Common;
using Corral.Files;
using Corral.Interop;

namespace Corral.Images;

/// <summary>How a layer's whiteouts are applied.</summary>
public enum WhiteoutMode
{
    /// <summary>Into a layer directory of its own, as overlayfs whiteouts (0/0 char devices, opaque xattr).</summary>
    Overlay,

    /// <summary>Onto the layers below it in the same directory: whiteouts delete.</summary>
    Delete,
}

/// <summary>What one unpack may write: the unpacked (tar) bytes and the number of entries.</summary>
public readonly record struct UnpackBudget(long MaxBytes, int MaxEntries, string Option = "--max-layer-size")
{
    public static UnpackBudget Default => new(UnpackLimits.Default.MaxLayerBytes, UnpackLimits.Default.MaxEntries);
}

/// <summary>
/// Where an archive copied into a container lands (<see cref="LayerUnpacker.UnpackArchive"/>):
/// <see cref="BaseParts"/> is the real path (no symlink in it) of the directory the archive's names
/// start from, relative to the container's root; <see cref="NewName"/>, when set, replaces the
/// archive's one top-level name; <see cref="OntoFile"/>: that name exists and is not a directory, so
/// the archive may not be a directory; <see cref="Owner"/> overrides every entry's uid and gid.
/// </summary>
internal sealed record ArchiveTarget(IReadOnlyList<string> BaseParts, string? NewName, bool OntoFile, string ContainerPath, (int Uid, int Gid)? Owner);

/// <summary>What one unpack produced: the diff id (the uncompressed tar's digest) and its size.</summary>
public readonly record struct UnpackResult(Digest DiffId, long Bytes, int Entries);

/// <summary>
/// Unpacks one image layer (tar, gzip-compressed or not) into a directory, refusing anything that
/// would write outside it: absolute names, "..", links whose targets escape, device nodes, and
/// truncated archives. Nothing is resolved by host path: every entry is reached from a directory fd
/// of the layer root, one component at a time with O_NOFOLLOW, symlinks met on the way resolved by
/// Corral inside the root (an absolute target restarts at the root, ".." stops at it, as in the
/// container), and every change (create, owner, mode, times, xattr) acts on that fd or on the fd of
/// what was created, never on a path the kernel could resolve through a symlink.
/// </summary>
public static class LayerUnpacker
{
    private const string WhiteoutPrefix = ".wh.";
    private const string OpaqueMarker = ".wh..wh..opq";
    private const int MaxLinkHops = 40;
    private const int DirFlags = AtCalls.O_DIRECTORY | AtCalls.O_NOFOLLOW | LibC.O_CLOEXEC;

    /// <summary>Unpacks <paramref name="layer"/> into <paramref name="target"/> and returns the diff id (the uncompressed tar's digest).</summary>
    public static Task<Digest> UnpackAsync(Stream layer, string target, WhiteoutMode mode, CancellationToken cancellationToken = default) =>
        Task.Run(() => Unpack(layer, target, mode, cancellationToken), cancellationToken);

    public static Task<UnpackResult> UnpackAsync(Stream layer, string target, WhiteoutMode mode, UnpackBudget budget, CancellationToken cancellationToken = default) =>
        Task.Run(() => Unpack(layer, target, mode, budget, cancellationToken), cancellationToken);

    public static Digest Unpack(Stream layer, string target, WhiteoutMode mode, CancellationToken cancellationToken = default) =>
        Unpack(layer, target, mode, UnpackBudget.Default, cancellationToken).DiffId;

    public static UnpackResult Unpack(Stream layer, string target, WhiteoutMode mode, UnpackBudget budget, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(layer);
        Directory.CreateDirectory(target);
        var buffered = new BufferedStream(layer, 1 << 16);
        using var tar = new HashingStream(CappedStream.Layer(Decompress(buffered), budget.MaxBytes, budget.Option), leaveOpen: false);
        using var state = new UnpackState(target, mode, Environment.IsPrivilegedProcess);
        var entries = ApplyAll(tar, state, budget.MaxEntries, tar.Drain, cancellationToken);
        return new UnpackResult(tar.Digest(), tar.Count, entries);
    }

    /// <summary>
    /// Unpacks an uncompressed tar into a container's root filesystem (<c>corral cp</c>), with the
    /// same machinery as a layer: <paramref name="rootFd"/> is the container's root (absolute link
    /// targets restart there, ".." stops there) and <paramref name="target"/> says where under it
    /// the archive's names start, how its top-level name is renamed, and whose files they become.
    /// Whiteout names are plain names here. Returns the number of entries.
    /// </summary>
    internal static int UnpackArchive(Stream tar, int rootFd, ArchiveTarget target, int maxEntries, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(tar);
        using var state = new UnpackState(rootFd, target, Environment.IsPrivilegedProcess || target.Owner is not null);
        return ApplyAll(tar, state, maxEntries, drain: null, cancellationToken);
    }

    private static int ApplyAll(Stream tar, UnpackState state, int maxEntries, Action? drain, CancellationToken cancellationToken)
    {
        var entries = 0;
        try
        {
            using var reader = new TarReader(tar, leaveOpen: true);
            while (reader.GetNextEntry(copyData: false) is { } entry)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (++entries > maxEntries)
                {
                    throw new CorralException(ErrorKind.ResourceExhausted, $"refusing {state.Subject}: it has more than {maxEntries} entries");
                }

                Apply(state, entry);
            }

            drain?.Invoke();
        }
        catch (Exception ex) when (ex is EndOfStreamException or InvalidDataException or FormatException)
        {
            throw CorralException.Invalid($"{state.Subject} is truncated or not a valid tar archive: {ex.Message}");
        }

        state.CheckLinks();
        state.ApplyDirectoryMetadata();
        return entries;
    }

    private static Stream Decompress(BufferedStream stream)
    {
        Span<byte> magic = stackalloc byte[4];
        var n = stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        var head = magic[..n].ToArray();
        var rest = new PrefixedStream(head, stream);
        if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b)
        {
            return new StrictGZipStream(rest);
        }

        if (n >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd)
        {
            throw CorralException.Invalid("zstd-compressed layers are not supported; use gzip or uncompressed layers");
        }

        return rest;
    }

    private static void Apply(UnpackState state, TarEntry entry)
    {
        if (entry.EntryType is TarEntryType.GlobalExtendedAttributes or TarEntryType.ExtendedAttributes)
        {
            return;
        }

        var parts = SplitName(entry.Name, "entry", state.Subject);
        if (parts.Count == 0)
        {
            if (entry.EntryType == TarEntryType.Directory)
            {
                return;
            }

            throw Hostile(entry.Name, $"names the {state.Scope} root", state.Subject);
        }

        state.RenameTop(parts, entry);
        var name = parts[^1];
        var parentParts = state.Under(parts.Take(parts.Count - 1));
        using var dir = state.ResolveDirectory(parentParts, create: true, entry.Name);
        if (state.Archive is null && name.StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
        {
            if (name == OpaqueMarker)
            {
                Opaque(state, dir);
            }
            else
            {
                var hidden = name[WhiteoutPrefix.Length..];
                if (hidden.StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
                {
                    // aufs' own metadata (.wh..wh.plnk and the like): nothing to hide.
                    return;
                }

                if (hidden is "" or "." or "..")
                {
                    throw Hostile(entry.Name, "is a whiteout for an invalid name", state.Subject);
                }

                Whiteout(state, dir, hidden);
            }

            return;
        }

        if (state.Archive is not null && entry.EntryType is TarEntryType.Directory or TarEntryType.RegularFile or TarEntryType.V7RegularFile
            or TarEntryType.ContiguousFile or TarEntryType.SymbolicLink or TarEntryType.HardLink or TarEntryType.Fifo)
        {
            // As docker cp: what is in the container is replaced only by the same kind (a directory by a directory).
            var isDirectory = entry.EntryType == TarEntryType.Directory;
            if (Stat(dir.Fd, name) is { } present && present.IsDirectory != isDirectory)
            {
                throw Hostile(entry.Name, isDirectory ? "would replace a non-directory with a directory" : "would replace a directory with a non-directory", state.Subject);
            }
        }

        switch (entry.EntryType)
        {
            case TarEntryType.Directory:
                var existing = Stat(dir.Fd, name);
                if (existing is { } st && !st.IsDirectory)
                {
                    RemoveAt(dir.Fd, name);
                    existing = null;
                }

                if (existing is null && LibC.mkdirat(dir.Fd, name, 0b111_000_000) != 0)
                {
                    throw Io("create directory", entry.Name);
                }

                if (state.Archive is not null)
                {
                    if (existing is not null && !state.Created.Contains(dir.Key(name)))
                    {
                        // Into a container a directory already there is merged into, its owner, mode and times kept.
                        break;
                    }

                    state.Created.Add(dir.Key(name));
                }

                Own(state, entry, dir.Fd, name);
                state.DeferDirectory(dir.Key(name), Stat(dir.Fd, name)!.Value, state.ModeOf(entry), entry.ModificationTime);
                break;

            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                RemoveAt(dir.Fd, name);
                var fd = LibC.openat(dir.Fd, name, AtCalls.O_WRONLY | AtCalls.O_CREAT | AtCalls.O_EXCL | AtCalls.O_NOFOLLOW | LibC.O_CLOEXEC, 0b110_000_000);
                if (fd < 0)
                {
                    throw Io("create file", entry.Name);
                }

                using (var handle = new SafeFileHandle(fd, ownsHandle: true))
                {
                    using (var file = new FileStream(handle, FileAccess.Write, 1 << 16))
                    {
                        if (entry.DataStream is { } data)
                        {
                            data.CopyTo(file, 1 << 20);
                            file.Flush();
                            if (file.Length != entry.Length)
                            {
                                throw new EndOfStreamException($"entry {entry.Name} ends after {file.Length} of {entry.Length} bytes");
                            }
                        }

                        // Owner before mode: chown clears the set-id bits.
                        if (state.Chown && LibC.fchown(fd, state.UidOf(entry), state.GidOf(entry)) != 0)
                        {
                            throw Io("chown", entry.Name);
                        }

                        if (LibC.fchmod(fd, state.ModeOf(entry)) != 0)
                        {
                            throw Io("chmod", entry.Name);
                        }

                        SetTimes(fd, entry.ModificationTime, entry.Name);
                    }
                }

                break;

            case TarEntryType.SymbolicLink:
                if (string.IsNullOrEmpty(entry.LinkName) || entry.LinkName.Contains('\0', StringComparison.Ordinal))
                {
                    throw Hostile(entry.Name, "is a symlink with an empty target", state.Subject);
                }

                state.CheckSymlinkTarget(entry.Name, dir.Parts, entry.LinkName);
                RemoveAt(dir.Fd, name);
                if (LibC.symlinkat(entry.LinkName, dir.Fd, name) != 0)
                {
                    throw Io("create symlink", entry.Name);
                }

                Own(state, entry, dir.Fd, name);
                state.RememberLink(dir.Key(name), entry.LinkName);
                break;

            case TarEntryType.HardLink:
                var targetParts = SplitName(entry.LinkName, "hard link target", state.Subject);
                if (targetParts.Count == 0)
                {
                    throw Hostile(entry.Name, $"is a hard link to the {state.Scope} root", state.Subject);
                }

                state.RenameLinkTop(targetParts, entry);
                using (var sourceDir = state.ResolveDirectory(state.Under(targetParts.Take(targetParts.Count - 1)), create: false, entry.Name))
                {
                    var sourceName = targetParts[^1];
                    var source = Stat(sourceDir.Fd, sourceName);
                    if (source is not { } s || !(s.IsRegular || s.IsSymlink))
                    {
                        throw Hostile(entry.Name, $"is a hard link to '{entry.LinkName}', which is not a file in the {state.Subject}", state.Subject);
                    }

                    if (state.Archive is not null && !state.Written.Contains(sourceDir.Key(sourceName)))
                    {
                        // Into a container only what this archive wrote may be linked: never a file already there.
                        throw Hostile(entry.Name, $"is a hard link to '{entry.LinkName}', which is not an earlier entry of the archive", state.Subject);
                    }

                    string? linkTarget = null;
                    if (s.IsSymlink)
                    {
                        // The same link at another depth may land elsewhere: judged again from here.
                        linkTarget = ReadLink(sourceDir.Fd, sourceName) ?? throw Io("read symlink", entry.LinkName);
                        state.CheckSymlinkTarget(entry.Name, dir.Parts, linkTarget);
                    }

                    if (sourceDir.Key(sourceName) == dir.Key(name))
                    {
                        throw Hostile(entry.Name, "is a hard link to itself", state.Subject);
                    }

                    RemoveAt(dir.Fd, name);
                    if (LibC.linkat(sourceDir.Fd, sourceName, dir.Fd, name, 0) != 0)
                    {
                        throw Io($"link to {entry.LinkName}", entry.Name);
                    }

                    if (linkTarget is not null)
                    {
                        state.RememberLink(dir.Key(name), linkTarget);
                    }
                }

                break;

            case TarEntryType.Fifo:
                RemoveAt(dir.Fd, name);
                if (LibC.mknodat(dir.Fd, name, LibC.S_IFIFO | ((uint)entry.Mode & 0b111_111_111), 0) != 0)
                {
                    throw Io("create fifo", entry.Name);
                }

                Own(state, entry, dir.Fd, name);
                break;

            case TarEntryType.CharacterDevice or TarEntryType.BlockDevice:
                throw Hostile(entry.Name, "is a device node", state.Subject);

            default:
                throw Hostile(entry.Name, $"has an unsupported type ({entry.EntryType})", state.Subject);
        }

        state.Written.Add(dir.Key(name));
    }

    /// <summary>Splits an archive name into components; absolute names and ".." are refused, "." and empty parts dropped.</summary>
    internal static List<string> SplitName(string name, string what, string subject = "layer")
    {
        if (name.Contains('\0', StringComparison.Ordinal))
        {
            throw Hostile(name, $"has a NUL in its {what} name", subject);
        }

        if (name.StartsWith('/'))
        {
            throw Hostile(name, $"has an absolute {what} path", subject);
        }

        var parts = new List<string>();
        foreach (var part in name.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == "..")
            {
                throw Hostile(name, $"has '..' in its {what} path", subject);
            }

            if (part != ".")
            {
                parts.Add(part);
            }
        }

        return parts;
    }

    private static void Whiteout(UnpackState state, DirHandle dir, string hidden)
    {
        RemoveAt(dir.Fd, hidden);
        if (state.Mode == WhiteoutMode.Delete)
        {
            return;
        }

        if (LibC.mknodat(dir.Fd, hidden, LibC.S_IFCHR, 0) != 0)
        {
            throw Io("create the overlay whiteout", dir.Key(hidden));
        }

        state.Written.Add(dir.Key(hidden));
    }

    private static void Opaque(UnpackState state, DirHandle dir)
    {
        if (state.Mode == WhiteoutMode.Delete)
        {
            foreach (var child in ListNames(dir.Fd))
            {
                if (!state.Written.Contains(dir.Key(child)))
                {
                    RemoveAt(dir.Fd, child);
                }
            }

            return;
        }

        var value = "y"u8.ToArray();
        if (LibC.fsetxattr(dir.Fd, "trusted.overlay.opaque", value, (nuint)value.Length, 0) != 0)
        {
            throw Io("mark opaque", dir.Key(""));
        }
    }

    private static void Own(UnpackState state, TarEntry entry, int dirFd, string name)
    {
        if (state.Chown && LibC.fchownat(dirFd, name, state.UidOf(entry), state.GidOf(entry), AtCalls.AT_SYMLINK_NOFOLLOW) != 0)
        {
            throw Io("chown", name);
        }
    }

    private static void SetTimes(int fd, DateTimeOffset time, string what)
    {
        var ticks = time.UtcDateTime - DateTime.UnixEpoch;
        var seconds = (long)Math.Floor(ticks.TotalSeconds);
        var nanos = (ticks - TimeSpan.FromSeconds(seconds)).Ticks * 100;
        if (LibC.futimens(fd, [seconds, nanos, seconds, nanos]) != 0)
        {
            throw Io("set times", what);
        }
    }

    /// <summary>
    /// The host path of <paramref name="relative"/> inside <paramref name="root"/> with every
    /// symlink, the last component's too, resolved inside the root; null when it does not exist.
    /// </summary>
    public static string? ResolveInside(string root, string relative)
    {
        root = Path.GetFullPath(root).TrimEnd('/');
        var pending = new Stack<string>(Enumerable.Reverse(relative.Split('/', StringSplitOptions.RemoveEmptyEntries)));
        var resolved = new List<string>();
        var hops = 0;
        while (pending.Count > 0)
        {
            var part = pending.Pop();
            if (part == ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (resolved.Count > 0)
                {
                    resolved.RemoveAt(resolved.Count - 1);
                }

                continue;
            }

            var host = Path.Combine(root, string.Join('/', resolved), part);
            if (new FileInfo(host).LinkTarget is { } target)
            {
                if (++hops > MaxLinkHops)
                {
                    return null;
                }

                if (target.StartsWith('/'))
                {
                    resolved.Clear();
                }

                foreach (var segment in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse())
                {
                    pending.Push(segment);
                }

                continue;
            }

            if (!Path.Exists(host))
            {
                return null;
            }

            resolved.Add(part);
        }

        return resolved.Count == 0 ? root : Path.Combine(root, string.Join('/', resolved));
    }

    /// <summary>Removes <paramref name="name"/> under a directory fd, a directory with its content, following no symlink.</summary>
    internal static void RemoveAt(int dirFd, string name)
    {
        if (Stat(dirFd, name) is not { } st)
        {
            return;
        }

        if (st.IsDirectory)
        {
            var fd = LibC.openat(dirFd, name, DirFlags, 0);
            if (fd < 0)
            {
                throw Io("open directory", name);
            }

            try
            {
                foreach (var child in ListNames(fd))
                {
                    RemoveAt(fd, child);
                }
            }
            finally
            {
                LibC.close(fd);
            }
        }

        if (LibC.unlinkat(dirFd, name, st.IsDirectory ? AtCalls.AT_REMOVEDIR : 0) != 0)
        {
            throw Io("remove", name);
        }
    }

    /// <summary>The names in the directory an fd holds (read through /proc/self/fd: exactly that directory).</summary>
    internal static List<string> ListNames(int dirFd) =>
        Directory.EnumerateFileSystemEntries($"/proc/self/fd/{dirFd}").Select(p => Path.GetFileName(p)).ToList();

    /// <summary>lstat relative to a directory fd (an empty name: the fd itself); null when it does not exist.</summary>
    internal static FileStatus? Stat(int dirFd, string name) => FileStatus.Of(dirFd, name);

    internal static string? ReadLink(int dirFd, string name)
    {
        var buffer = new byte[4096];
        var n = LibC.readlinkat(dirFd, name, buffer, (nuint)buffer.Length);
        return n < 0 || n >= buffer.Length ? null : Encoding.UTF8.GetString(buffer, 0, (int)n);
    }

    private static IOException Io(string what, string name, int? errno = null) =>
        new($"cannot {what} {Printable(name)}: {LibC.ErrorText(errno ?? Marshal.GetLastPInvokeError())}");

    private static CorralException Hostile(string name, string why, string subject = "layer") =>
        CorralException.Invalid($"refusing {subject}: entry '{Printable(name)}' {why}");

    /// <summary>A name fit for a one-line message: control characters replaced, at most 200 characters.</summary>
    internal static string Printable(string name)
    {
        var builder = new StringBuilder(name.Length);
        foreach (var c in name.Length > 200 ? name[..200] : name)
        {
            builder.Append(char.IsControl(c) ? '?' : c);
        }

        return builder.ToString();
    }

    /// <summary>A directory reached inside the layer: its fd and its real path (no symlink in it) from the root.</summary>
    private sealed class DirHandle(int fd, bool owned, List<string> parts) : IDisposable
    {
        public int Fd => fd;

        public List<string> Parts => parts;

        public string Key(string name) => string.Join('/', name.Length == 0 ? parts : [.. parts, name]);

        public void Dispose()
        {
            if (owned)
            {
                LibC.close(fd);
            }
        }
    }

    private sealed class UnpackState : IDisposable
    {
        private const uint SetIdBits = 0b110_000_000_000;

        private readonly int _rootFd;
        private readonly bool _ownsRoot;
        private readonly Dictionary<string, (FileStatus Stat, uint Mode, DateTimeOffset Time)> _directories = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _links = new(StringComparer.Ordinal);
        private string? _top;

        public UnpackState(string root, WhiteoutMode mode, bool chown)
        {
            Mode = mode;
            Chown = chown;
            _ownsRoot = true;
            _rootFd = LibC.openat(AtCalls.AT_FDCWD, Path.GetFullPath(root), AtCalls.O_DIRECTORY | LibC.O_CLOEXEC, 0);
            if (_rootFd < 0)
            {
                throw Io("open the layer directory", root);
            }
        }

        /// <summary>An archive into a container's root: the caller keeps <paramref name="rootFd"/>.</summary>
        public UnpackState(int rootFd, ArchiveTarget archive, bool chown)
        {
            Mode = WhiteoutMode.Delete;
            Chown = chown;
            Archive = archive;
            _rootFd = rootFd;
        }

        public WhiteoutMode Mode { get; }

        public bool Chown { get; }

        /// <summary>Set when unpacking an archive into a container rather than a layer.</summary>
        public ArchiveTarget? Archive { get; }

        /// <summary>What is refused in messages: "layer" or "archive".</summary>
        public string Subject => Archive is null ? "layer" : "archive";

        /// <summary>What the root is in messages: the layer's or the container's.</summary>
        public string Scope => Archive is null ? "layer" : "container";

        /// <summary>Real paths (relative to the root) this unpack wrote.</summary>
        public HashSet<string> Written { get; } = new(StringComparer.Ordinal);

        /// <summary>Into a container: the real paths of the directories this unpack created (those it may chown and chmod).</summary>
        public HashSet<string> Created { get; } = new(StringComparer.Ordinal);

        public void Dispose()
        {
            if (_ownsRoot)
            {
                LibC.close(_rootFd);
            }
        }

        /// <summary>An archive's directory components placed under the archive's base directory (a layer's: as they are).</summary>
        public List<string> Under(IEnumerable<string> parts) => Archive is null ? parts.ToList() : [.. Archive.BaseParts, .. parts];

        /// <summary>
        /// Into a new name (<c>cp a.txt ID:/etc/b.txt</c>): the archive's one top-level name becomes
        /// <see cref="ArchiveTarget.NewName"/>; a second top-level name, or a directory onto a file, is refused.
        /// </summary>
        public void RenameTop(List<string> parts, TarEntry entry)
        {
            if (Archive?.NewName is not { } newName)
            {
                return;
            }

            if (Archive.OntoFile && (parts.Count > 1 || entry.EntryType == TarEntryType.Directory))
            {
                throw CorralException.Invalid($"cannot copy a directory onto {Printable(Archive.ContainerPath)}: it exists and is not a directory");
            }

            _top ??= parts[0];
            if (parts[0] != _top)
            {
                throw Hostile(entry.Name, $"is a second top-level name beside '{Printable(_top)}'; copying to a new name takes one", Subject);
            }

            parts[0] = newName;
        }

        /// <summary>A hard link's target renamed as its entries were; a target under another top-level name is not in the archive.</summary>
        public void RenameLinkTop(List<string> parts, TarEntry entry)
        {
            if (Archive?.NewName is not { } newName)
            {
                return;
            }

            if (parts[0] != _top)
            {
                throw Hostile(entry.Name, $"is a hard link to '{Printable(entry.LinkName)}', which is not an earlier entry of the archive", Subject);
            }

            parts[0] = newName;
        }

        /// <summary>The entry's permission bits; into a container without set-uid and set-gid.</summary>
        public uint ModeOf(TarEntry entry) => Archive is null ? (uint)entry.Mode : (uint)entry.Mode & ~SetIdBits;

        public int UidOf(TarEntry entry) => Archive?.Owner?.Uid ?? entry.Uid;

        public int GidOf(TarEntry entry) => Archive?.Owner?.Gid ?? entry.Gid;

        /// <summary>
        /// The directory <paramref name="parts"/> names, reached from the root fd one component at a
        /// time with O_NOFOLLOW; a symlink on the way is read and resolved here, inside the root (an
        /// absolute target restarts at the root, ".." stops at it). Missing directories are created.
        /// </summary>
        public DirHandle ResolveDirectory(List<string> parts, bool create, string entryName)
        {
            var pending = new Stack<string>(Enumerable.Reverse(parts));
            var fds = new List<int>();
            var resolved = new List<string>();
            var hops = 0;
            try
            {
                while (pending.Count > 0)
                {
                    var part = pending.Pop();
                    if (part is "." or "")
                    {
                        continue;
                    }

                    if (part == "..")
                    {
                        if (resolved.Count > 0)
                        {
                            LibC.close(fds[^1]);
                            fds.RemoveAt(fds.Count - 1);
                            resolved.RemoveAt(resolved.Count - 1);
                        }

                        continue;
                    }

                    var current = fds.Count == 0 ? _rootFd : fds[^1];
                    var st = Stat(current, part);
                    if (st is { IsSymlink: true })
                    {
                        if (++hops > MaxLinkHops)
                        {
                            throw Hostile(entryName, "goes through too many symlinks", Subject);
                        }

                        var target = ReadLink(current, part) ?? throw Io("read symlink", entryName);
                        if (target.StartsWith('/'))
                        {
                            fds.ForEach(fd => LibC.close(fd));
                            fds.Clear();
                            resolved.Clear();
                        }

                        foreach (var segment in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse())
                        {
                            pending.Push(segment);
                        }

                        continue;
                    }

                    if (st is null)
                    {
                        if (!create)
                        {
                            throw Hostile(entryName, $"refers to a missing directory '{Printable(part)}'", Subject);
                        }

                        if (LibC.mkdirat(current, part, 0b111_101_101) == 0)
                        {
                            if (Archive is not null)
                            {
                                Created.Add(string.Join('/', [.. resolved, part]));
                            }

                            if (Archive?.Owner is { } owner && LibC.fchownat(current, part, owner.Uid, owner.Gid, AtCalls.AT_SYMLINK_NOFOLLOW) != 0)
                            {
                                throw Io("chown", entryName);
                            }
                        }
                        else if (Marshal.GetLastPInvokeError() != AtCalls.EEXIST)
                        {
                            throw Io("create directory", entryName);
                        }
                    }
                    else if (!st.Value.IsDirectory)
                    {
                        throw Hostile(entryName, $"goes through '{Printable(part)}', which is not a directory", Subject);
                    }

                    var next = LibC.openat(current, part, DirFlags, 0);
                    if (next < 0)
                    {
                        var errno = Marshal.GetLastPInvokeError();
                        throw errno is AtCalls.ELOOP or AtCalls.ENOTDIR
                            ? Hostile(entryName, $"goes through '{Printable(part)}', which is not a directory", Subject)
                            : Io("open directory", entryName, errno);
                    }

                    fds.Add(next);
                    resolved.Add(part);
                }
            }
            catch
            {
                fds.ForEach(fd => LibC.close(fd));
                throw;
            }

            for (var i = 0; i < fds.Count - 1; i++)
            {
                LibC.close(fds[i]);
            }

            return fds.Count == 0 ? new DirHandle(_rootFd, owned: false, resolved) : new DirHandle(fds[^1], owned: true, resolved);
        }

        /// <summary>
        /// A relative target may not lead above the layer root, judged from where the link really is
        /// (<paramref name="parentParts"/>, its resolved directory) and through the layer's own links.
        /// Absolute targets are kept: they name the container's root, and Corral never follows a
        /// link on the host.
        /// </summary>
        public void CheckSymlinkTarget(string entryName, List<string> parentParts, string target)
        {
            if (!LandsInside(parentParts, target, out var why))
            {
                throw Hostile(entryName, $"is a symlink to '{Printable(target)}', {why}", Subject);
            }
        }

        public void RememberLink(string key, string target)
        {
            if (!target.StartsWith('/'))
            {
                _links[key] = target;
            }
            else
            {
                _links.Remove(key);
            }
        }

        /// <summary>
        /// Every relative link judged again once the layer is complete: an entry written later can
        /// turn a component of an earlier link's target into a link of its own.
        /// </summary>
        public void CheckLinks()
        {
            foreach (var (key, target) in _links)
            {
                var parts = key.Split('/').ToList();
                var name = parts[^1];
                parts.RemoveAt(parts.Count - 1);
                if (!StillLink(parts, name, target))
                {
                    continue;
                }

                if (!LandsInside(parts, target, out var why))
                {
                    throw Hostile(key, $"is a symlink to '{Printable(target)}', {why}", Subject);
                }
            }
        }

        public void DeferDirectory(string key, FileStatus stat, uint mode, DateTimeOffset time) =>
            _directories[key] = (stat, mode, time);

        /// <summary>
        /// Modes and times of directories, last (a read-only directory must still take its
        /// entries): each reached again from the root with O_NOFOLLOW on every component, and only
        /// when it is still the very directory created (same inode); one a later entry replaced is left.
        /// </summary>
        public void ApplyDirectoryMetadata()
        {
            foreach (var (key, (stat, mode, time)) in _directories.OrderByDescending(d => d.Key.Length))
            {
                var fd = OpenNoFollow(key.Split('/'));
                if (fd < 0)
                {
                    continue;
                }

                try
                {
                    if (Stat(fd, "") is { } now && now.Inode == stat.Inode && now.Device == stat.Device && now.IsDirectory)
                    {
                        if (LibC.fchmod(fd, mode) != 0)
                        {
                            throw Io("chmod", key);
                        }

                        SetTimes(fd, time, key);
                    }
                }
                finally
                {
                    LibC.close(fd);
                }
            }
        }

        /// <summary>A directory fd for a real path, following no symlink anywhere; -1 when it is not there as directories.</summary>
        private int OpenNoFollow(IEnumerable<string> parts)
        {
            var current = LibC.openat(_rootFd, ".", DirFlags, 0);
            foreach (var part in parts)
            {
                if (current < 0)
                {
                    return -1;
                }

                var next = LibC.openat(current, part, DirFlags, 0);
                LibC.close(current);
                current = next;
            }

            return current;
        }

        private bool StillLink(List<string> parentParts, string name, string target)
        {
            var fd = OpenNoFollow(parentParts);
            if (fd < 0)
            {
                return false;
            }

            try
            {
                return Stat(fd, name) is { IsSymlink: true } && ReadLink(fd, name) == target;
            }
            finally
            {
                LibC.close(fd);
            }
        }

        /// <summary>Follows <paramref name="target"/> from <paramref name="from"/> as the container would, through the layer's links; false when ".." climbs above the root.</summary>
        private bool LandsInside(List<string> from, string target, out string why)
        {
            why = "";
            if (target.StartsWith('/'))
            {
                return true;
            }

            var resolved = new List<string>(from);
            var pending = new Stack<string>(target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
            var hops = 0;
            while (pending.Count > 0)
            {
                var part = pending.Pop();
                if (part == ".")
                {
                    continue;
                }

                if (part == "..")
                {
                    if (resolved.Count == 0)
                    {
                        why = $"outside the {Scope}";
                        return false;
                    }

                    resolved.RemoveAt(resolved.Count - 1);
                    continue;
                }

                var fd = OpenNoFollow(resolved);
                string? linked = null;
                if (fd >= 0)
                {
                    try
                    {
                        if (Stat(fd, part) is { IsSymlink: true })
                        {
                            linked = ReadLink(fd, part);
                        }
                    }
                    finally
                    {
                        LibC.close(fd);
                    }
                }

                if (linked is not null)
                {
                    if (++hops > MaxLinkHops)
                    {
                        why = "through too many symlinks";
                        return false;
                    }

                    if (linked.StartsWith('/'))
                    {
                        resolved.Clear();
                    }

                    foreach (var segment in linked.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse())
                    {
                        pending.Push(segment);
                    }

                    continue;
                }

                resolved.Add(part);
            }

            return true;
        }
    }
}
