using System.Formats.Tar;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Corral.Common;
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
        using var tar = new HashingStream(new CappedStream(Decompress(buffered), budget.MaxBytes, budget.Option), leaveOpen: false);
        using var state = new UnpackState(target, mode, Environment.IsPrivilegedProcess);
        var entries = 0;
        try
        {
            using var reader = new TarReader(tar, leaveOpen: true);
            while (reader.GetNextEntry(copyData: false) is { } entry)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (++entries > budget.MaxEntries)
                {
                    throw new CorralException(ErrorKind.ResourceExhausted, $"refusing layer: it has more than {budget.MaxEntries} entries");
                }

                Apply(state, entry);
            }

            tar.Drain();
        }
        catch (Exception ex) when (ex is EndOfStreamException or InvalidDataException or FormatException)
        {
            throw CorralException.Invalid($"layer is truncated or not a valid tar archive: {ex.Message}");
        }

        state.CheckLinks();
        state.ApplyDirectoryMetadata();
        return new UnpackResult(tar.Digest(), tar.Count, entries);
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

        var parts = SplitName(entry.Name, "entry");
        if (parts.Count == 0)
        {
            if (entry.EntryType == TarEntryType.Directory)
            {
                return;
            }

            throw Hostile(entry.Name, "names the layer root");
        }

        var name = parts[^1];
        var parentParts = parts.Take(parts.Count - 1).ToList();
        using var dir = state.ResolveDirectory(parentParts, create: true, entry.Name);
        if (name.StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
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
                    throw Hostile(entry.Name, "is a whiteout for an invalid name");
                }

                Whiteout(state, dir, hidden);
            }

            return;
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

                Own(state, entry, dir.Fd, name);
                state.DeferDirectory(dir.Key(name), Stat(dir.Fd, name)!.Value, entry);
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
                            data.CopyTo(file);
                            file.Flush();
                            if (file.Length != entry.Length)
                            {
                                throw new EndOfStreamException($"entry {entry.Name} ends after {file.Length} of {entry.Length} bytes");
                            }
                        }

                        // Owner before mode: chown clears the set-id bits.
                        if (state.Chown && LibC.fchown(fd, entry.Uid, entry.Gid) != 0)
                        {
                            throw Io("chown", entry.Name);
                        }

                        if (LibC.fchmod(fd, (uint)entry.Mode) != 0)
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
                    throw Hostile(entry.Name, "is a symlink with an empty target");
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
                var targetParts = SplitName(entry.LinkName, "hard link target");
                if (targetParts.Count == 0)
                {
                    throw Hostile(entry.Name, "is a hard link to the layer root");
                }

                using (var sourceDir = state.ResolveDirectory(targetParts.Take(targetParts.Count - 1).ToList(), create: false, entry.Name))
                {
                    var sourceName = targetParts[^1];
                    var source = Stat(sourceDir.Fd, sourceName);
                    if (source is not { } s || !(s.IsRegular || s.IsSymlink))
                    {
                        throw Hostile(entry.Name, $"is a hard link to '{entry.LinkName}', which is not a file in the layer");
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
                        throw Hostile(entry.Name, "is a hard link to itself");
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
                throw Hostile(entry.Name, "is a device node");

            default:
                throw Hostile(entry.Name, $"has an unsupported type ({entry.EntryType})");
        }

        state.Written.Add(dir.Key(name));
    }

    /// <summary>Splits an archive name into components; absolute names and ".." are refused, "." and empty parts dropped.</summary>
    internal static List<string> SplitName(string name, string what)
    {
        if (name.Contains('\0', StringComparison.Ordinal))
        {
            throw Hostile(name, $"has a NUL in its {what} name");
        }

        if (name.StartsWith('/'))
        {
            throw Hostile(name, $"has an absolute {what} path");
        }

        var parts = new List<string>();
        foreach (var part in name.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == "..")
            {
                throw Hostile(name, $"has '..' in its {what} path");
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
        if (state.Chown && LibC.fchownat(dirFd, name, entry.Uid, entry.Gid, AtCalls.AT_SYMLINK_NOFOLLOW) != 0)
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

    internal static bool IsSymlink(string path) => new FileInfo(path).LinkTarget is not null;

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
    private static List<string> ListNames(int dirFd) =>
        Directory.EnumerateFileSystemEntries($"/proc/self/fd/{dirFd}").Select(p => Path.GetFileName(p)).ToList();

    internal readonly record struct StatInfo(uint Mode, ulong Inode, ulong Device)
    {
        public bool IsDirectory => (Mode & AtCalls.S_IFMT) == AtCalls.S_IFDIR;

        public bool IsRegular => (Mode & AtCalls.S_IFMT) == AtCalls.S_IFREG;

        public bool IsSymlink => (Mode & AtCalls.S_IFMT) == AtCalls.S_IFLNK;
    }

    /// <summary>lstat relative to a directory fd (an empty name: the fd itself); null when it does not exist.</summary>
    internal static StatInfo? Stat(int dirFd, string name)
    {
        var buffer = new byte[256];
        if (LibC.statx(dirFd, name, AtCalls.AT_SYMLINK_NOFOLLOW | (name.Length == 0 ? AtCalls.AT_EMPTY_PATH : 0), AtCalls.STATX_BASIC_STATS, buffer) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno is LibC.ENOENT or AtCalls.ENOTDIR ? null : throw Io("stat", name, errno);
        }

        return new StatInfo(
            BitConverter.ToUInt16(buffer, 28),
            BitConverter.ToUInt64(buffer, 32),
            ((ulong)BitConverter.ToUInt32(buffer, 136) << 32) | BitConverter.ToUInt32(buffer, 140));
    }

    private static string? ReadLink(int dirFd, string name)
    {
        var buffer = new byte[4096];
        var n = LibC.readlinkat(dirFd, name, buffer, (nuint)buffer.Length);
        return n < 0 || n >= buffer.Length ? null : Encoding.UTF8.GetString(buffer, 0, (int)n);
    }

    private static IOException Io(string what, string name, int? errno = null) =>
        new($"cannot {what} {Printable(name)}: {LibC.ErrorText(errno ?? Marshal.GetLastPInvokeError())}");

    private static CorralException Hostile(string name, string why) =>
        CorralException.Invalid($"refusing layer: entry '{Printable(name)}' {why}");

    private static string Printable(string name)
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
        private readonly int _rootFd;
        private readonly Dictionary<string, (StatInfo Stat, uint Mode, DateTimeOffset Time)> _directories = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _links = new(StringComparer.Ordinal);

        public UnpackState(string root, WhiteoutMode mode, bool chown)
        {
            Mode = mode;
            Chown = chown;
            _rootFd = LibC.openat(-100, Path.GetFullPath(root), AtCalls.O_DIRECTORY | LibC.O_CLOEXEC, 0);
            if (_rootFd < 0)
            {
                throw Io("open the layer directory", root);
            }
        }

        public WhiteoutMode Mode { get; }

        public bool Chown { get; }

        /// <summary>Real paths (relative to the root) this unpack wrote.</summary>
        public HashSet<string> Written { get; } = new(StringComparer.Ordinal);

        public void Dispose() => LibC.close(_rootFd);

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
                            throw Hostile(entryName, "goes through too many symlinks");
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
                            throw Hostile(entryName, $"refers to a missing directory '{Printable(part)}'");
                        }

                        if (LibC.mkdirat(current, part, 0b111_101_101) != 0 && Marshal.GetLastPInvokeError() != AtCalls.EEXIST)
                        {
                            throw Io("create directory", entryName);
                        }
                    }
                    else if (!st.Value.IsDirectory)
                    {
                        throw Hostile(entryName, $"goes through '{Printable(part)}', which is not a directory");
                    }

                    var next = LibC.openat(current, part, DirFlags, 0);
                    if (next < 0)
                    {
                        var errno = Marshal.GetLastPInvokeError();
                        throw errno is AtCalls.ELOOP or AtCalls.ENOTDIR
                            ? Hostile(entryName, $"goes through '{Printable(part)}', which is not a directory")
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
                throw Hostile(entryName, $"is a symlink to '{Printable(target)}', {why}");
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
                    throw Hostile(key, $"is a symlink to '{Printable(target)}', {why}");
                }
            }
        }

        public void DeferDirectory(string key, StatInfo stat, TarEntry entry) =>
            _directories[key] = (stat, (uint)entry.Mode, entry.ModificationTime);

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
                        why = "outside the layer";
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
