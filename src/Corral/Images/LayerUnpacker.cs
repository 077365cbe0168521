using System.Formats.Tar;
using System.Text;
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

/// <summary>
/// Unpacks one image layer (tar, gzip-compressed or not) into a directory, refusing anything that
/// would write outside it: absolute names, "..", links whose targets escape, device nodes, and
/// truncated archives. Every path component is resolved against the root without following a
/// symlink out of it (absolute link targets count from the root, as in the container).
/// </summary>
public static class LayerUnpacker
{
    private const string WhiteoutPrefix = ".wh.";
    private const string OpaqueMarker = ".wh..wh..opq";
    private const int MaxLinkHops = 40;

    /// <summary>Unpacks <paramref name="layer"/> into <paramref name="target"/> and returns the diff id (the uncompressed tar's digest).</summary>
    public static Task<Digest> UnpackAsync(Stream layer, string target, WhiteoutMode mode, CancellationToken cancellationToken = default) =>
        Task.Run(() => Unpack(layer, target, mode, cancellationToken), cancellationToken);

    public static Digest Unpack(Stream layer, string target, WhiteoutMode mode, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(layer);
        Directory.CreateDirectory(target);
        var root = Path.GetFullPath(target).TrimEnd('/');
        var buffered = new BufferedStream(layer, 1 << 16);
        using var tar = new HashingStream(Decompress(buffered), leaveOpen: false);
        var state = new UnpackState(root, mode, Environment.IsPrivilegedProcess);
        try
        {
            using var reader = new TarReader(tar, leaveOpen: true);
            while (reader.GetNextEntry(copyData: false) is { } entry)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Apply(state, entry);
            }

            tar.Drain();
        }
        catch (Exception ex) when (ex is EndOfStreamException or InvalidDataException or FormatException)
        {
            throw new CorralException($"layer is truncated or not a valid tar archive: {ex.Message}", inner: ex);
        }

        foreach (var (path, mode2) in state.DirectoryModes)
        {
            // A later entry may have replaced the directory with a symlink: chmod would follow it out.
            if (!IsSymlink(path) && Directory.Exists(path))
            {
                File.SetUnixFileMode(path, mode2);
            }
        }

        return tar.Digest();
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
            throw new CorralException("zstd-compressed layers are not supported; use gzip or uncompressed layers");
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
        if (name.StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
        {
            var parent = state.ResolveDirectory(parentParts, create: true, entry.Name);
            if (name == OpaqueMarker)
            {
                Opaque(state, parent);
            }
            else
            {
                var hidden = name[WhiteoutPrefix.Length..];
                if (hidden is "" or "." or "..")
                {
                    throw Hostile(entry.Name, "is a whiteout for an invalid name");
                }

                Whiteout(state, Path.Combine(parent, hidden));
            }

            return;
        }

        var dir = state.ResolveDirectory(parentParts, create: true, entry.Name);
        var path = Path.Combine(dir, name);
        switch (entry.EntryType)
        {
            case TarEntryType.Directory:
                if (IsSymlink(path) || (Path.Exists(path) && !Directory.Exists(path)))
                {
                    RemoveAny(path);
                }

                Directory.CreateDirectory(path);
                Own(state, entry, path);
                state.DirectoryModes[path] = entry.Mode;
                break;

            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                RemoveAny(path);
                using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                {
                    if (entry.DataStream is { } data)
                    {
                        data.CopyTo(file);
                        if (file.Length != entry.Length)
                        {
                            throw new EndOfStreamException($"entry {entry.Name} ends after {file.Length} of {entry.Length} bytes");
                        }
                    }
                }

                Own(state, entry, path);
                File.SetUnixFileMode(path, entry.Mode);
                File.SetLastWriteTimeUtc(path, entry.ModificationTime.UtcDateTime);
                break;

            case TarEntryType.SymbolicLink:
                CheckSymlinkTarget(entry.Name, parentParts.Count, entry.LinkName);
                RemoveAny(path);
                File.CreateSymbolicLink(path, entry.LinkName);
                Own(state, entry, path);
                break;

            case TarEntryType.HardLink:
                var targetParts = SplitName(entry.LinkName, "hard link target");
                if (targetParts.Count == 0)
                {
                    throw Hostile(entry.Name, "is a hard link to the layer root");
                }

                var targetDir = state.ResolveDirectory(targetParts.Take(targetParts.Count - 1).ToList(), create: false, entry.Name);
                var source = Path.Combine(targetDir, targetParts[^1]);
                if (!IsSymlink(source) && !File.Exists(source))
                {
                    throw Hostile(entry.Name, $"is a hard link to '{entry.LinkName}', which is not a file in the layer");
                }

                RemoveAny(path);
                if (LibC.link(source, path) != 0)
                {
                    throw new IOException($"cannot link {entry.Name} to {entry.LinkName}: {LibC.ErrorText(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
                }

                break;

            case TarEntryType.Fifo:
                RemoveAny(path);
                if (LibC.mknod(path, LibC.S_IFIFO | (uint)entry.Mode, 0) != 0)
                {
                    throw new IOException($"cannot create fifo {entry.Name}");
                }

                Own(state, entry, path);
                break;

            case TarEntryType.CharacterDevice or TarEntryType.BlockDevice:
                throw Hostile(entry.Name, "is a device node");

            default:
                throw Hostile(entry.Name, $"has an unsupported type ({entry.EntryType})");
        }

        state.Written.Add(path);
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

    /// <summary>A relative target may not climb above the layer root from where the link is.</summary>
    private static void CheckSymlinkTarget(string name, int depth, string target)
    {
        if (string.IsNullOrEmpty(target) || target.Contains('\0', StringComparison.Ordinal))
        {
            throw Hostile(name, "is a symlink with an empty target");
        }

        if (target.StartsWith('/'))
        {
            return;
        }

        var level = depth;
        foreach (var part in target.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == "..")
            {
                if (--level < 0)
                {
                    throw Hostile(name, $"is a symlink to '{target}', outside the layer");
                }
            }
            else if (part != ".")
            {
                level++;
            }
        }
    }

    private static void Whiteout(UnpackState state, string path)
    {
        if (state.Mode == WhiteoutMode.Delete)
        {
            RemoveAny(path);
            return;
        }

        RemoveAny(path);
        if (LibC.mknod(path, LibC.S_IFCHR, 0) != 0)
        {
            throw new IOException($"cannot create the overlay whiteout {path}: {LibC.ErrorText(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }

        state.Written.Add(path);
    }

    private static void Opaque(UnpackState state, string dir)
    {
        if (state.Mode == WhiteoutMode.Delete)
        {
            foreach (var child in Directory.EnumerateFileSystemEntries(dir).ToList())
            {
                if (!state.Written.Contains(child))
                {
                    RemoveAny(child);
                }
            }

            return;
        }

        var value = "y"u8.ToArray();
        if (LibC.lsetxattr(dir, "trusted.overlay.opaque", value, (nuint)value.Length, 0) != 0)
        {
            throw new IOException($"cannot mark {dir} opaque: {LibC.ErrorText(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }
    }

    private static void Own(UnpackState state, TarEntry entry, string path)
    {
        if (state.Chown && LibC.lchown(path, entry.Uid, entry.Gid) != 0)
        {
            throw new IOException($"cannot chown {path}: {LibC.ErrorText(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
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

    private static void RemoveAny(string path)
    {
        if (IsSymlink(path) || File.Exists(path))
        {
            File.Delete(path);
        }
        else if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
        else if (Path.Exists(path))
        {
            File.Delete(path);
        }
    }

    private static CorralException Hostile(string name, string why) =>
        new($"refusing layer: entry '{Printable(name)}' {why}");

    private static string Printable(string name)
    {
        var builder = new StringBuilder(name.Length);
        foreach (var c in name.Length > 200 ? name[..200] : name)
        {
            builder.Append(char.IsControl(c) ? '?' : c);
        }

        return builder.ToString();
    }

    private sealed class UnpackState(string root, WhiteoutMode mode, bool chown)
    {
        public string Root => root;

        public WhiteoutMode Mode => mode;

        public bool Chown => chown;

        public HashSet<string> Written { get; } = new(StringComparer.Ordinal);

        public Dictionary<string, UnixFileMode> DirectoryModes { get; } = new(StringComparer.Ordinal);

        /// <summary>
        /// The host directory for <paramref name="parts"/>, following symlinks only inside the root
        /// (an absolute target restarts at the root, ".." stops at it); missing directories are created.
        /// </summary>
        public string ResolveDirectory(List<string> parts, bool create, string entryName)
        {
            var pending = new Stack<string>(Enumerable.Reverse(parts));
            var resolved = new List<string>();
            var hops = 0;
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
                        resolved.RemoveAt(resolved.Count - 1);
                    }

                    continue;
                }

                var host = resolved.Count == 0 ? Path.Combine(root, part) : Path.Combine(root, string.Join('/', resolved), part);
                var info = new FileInfo(host);
                if (info.LinkTarget is { } target)
                {
                    if (++hops > MaxLinkHops)
                    {
                        throw Hostile(entryName, "goes through too many symlinks");
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

                if (!Directory.Exists(host))
                {
                    if (Path.Exists(host))
                    {
                        throw Hostile(entryName, $"goes through '{part}', which is not a directory");
                    }

                    if (!create)
                    {
                        throw Hostile(entryName, $"refers to a missing directory '{part}'");
                    }

                    Directory.CreateDirectory(host);
                }

                resolved.Add(part);
            }

            return resolved.Count == 0 ? root : Path.Combine(root, string.Join('/', resolved));
        }
    }
}
