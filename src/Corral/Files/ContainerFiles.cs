using System.Formats.Tar;
using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Images;
using Corral.Interop;
using Microsoft.Win32.SafeHandles;

namespace Corral.Files;

/// <summary>
/// Copies files into and out of a container's root filesystem as uncompressed tar (docker cp),
/// safe against a hostile archive and a hostile container: the container path is resolved by the
/// kernel inside the root (openat2 RESOLVE_IN_ROOT), an archive is unpacked by the hardened
/// <see cref="LayerUnpacker"/> (every entry reached from a directory fd, symlinks resolved inside the
/// root), and a tree is archived by walking directory fds with O_NOFOLLOW, never by host path.
/// </summary>
public static class ContainerFiles
{
    private const int MaxLinkHops = 40;
    private const int DirFlags = AtCalls.O_DIRECTORY | AtCalls.O_NOFOLLOW | LibC.O_CLOEXEC;

    /// <summary>
    /// Unpacks the uncompressed tar <paramref name="tar"/> at <paramref name="containerPath"/>
    /// inside <paramref name="rootDir"/>, as docker cp does. An existing directory takes the
    /// archive's entries as they are; a name that does not exist (its parent does) takes the
    /// archive's one top-level name (<c>cp a.txt ID:/etc/b.txt</c> creates /etc/b.txt); an existing
    /// non-directory is replaced by the archive's one top-level file. <paramref name="owner"/>, when
    /// set, owns every entry created; otherwise the archive's uid and gid are kept. Modes (less
    /// set-uid and set-gid) and modification times are kept. An archive that would write outside
    /// the root, or has a device node, is refused; a directory never replaces a non-directory nor the
    /// other way round. When the copy creates a new name and fails, what it created is removed.
    /// </summary>
    public static CopyResult CopyIn(string rootDir, string containerPath, Stream tar, FileOwner? owner, CopyLimits limits, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tar);
        ContainerRoot.CheckPath(containerPath);
        using var root = ContainerRoot.Open(rootDir);
        using var destination = Destination.Resolve(root, containerPath);
        // Counted, and failing as soon as it passes its cap; the caller keeps the stream.
        var archive = new CappedStream(tar, limits.MaxBytes, $"refusing archive: it is larger than {ByteSize.Format(limits.MaxBytes)} ({limits.MaxBytes} bytes)", leaveOpen: true);
        var target = new ArchiveTarget(
            destination.BaseParts,
            destination.NewName,
            destination.OntoFile,
            containerPath,
            owner is null ? null : (owner.Uid, owner.Gid));
        try
        {
            var entries = LayerUnpacker.UnpackArchive(archive, root.Fd, target, limits.MaxEntries, cancellationToken);

            // The rest after the end-of-archive blocks (a request body's padding), under the same cap.
            archive.CopyTo(Stream.Null);
            return new CopyResult(archive.Count, entries);
        }
        catch when (destination.NewName is not null && !destination.OntoFile)
        {
            destination.RemoveCreated();
            throw;
        }
    }

    /// <summary>
    /// Writes a PAX tar of <paramref name="containerPath"/> (symlinks on the way, the last one too,
    /// resolved inside the root) to <paramref name="output"/>. A file or directory is archived under
    /// the last component of the path as given (<c>/etc/hosts</c> as <c>hosts</c>, a directory's
    /// content under <c>name/</c>); the container's root (<c>/</c>) and a path ending in <c>/.</c>
    /// give the directory's content only, named relative to it (as <c>tar -C dir .</c> without the
    /// <c>./</c>). Inside the tree symlinks are archived as symlinks, regular files with their
    /// content (hard links as copies), directories and fifos as such; device nodes and sockets are
    /// left out. Modes, owners and modification times are kept. On failure the output ends where
    /// the failure was, without a tar trailer.
    /// </summary>
    public static CopyResult CopyOut(string rootDir, string containerPath, Stream output, CopyLimits limits, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        ContainerRoot.CheckPath(containerPath);
        using var root = ContainerRoot.Open(rootDir);
        var fd = root.OpenInside(containerPath, LibC.O_PATH);
        if (fd < 0)
        {
            throw NoSuchPath(containerPath);
        }

        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        var status = FileStatus.Of(fd, "") ?? throw NoSuchPath(containerPath);
        var name = ArchiveName(containerPath);
        if (status.Kind == ContainerPathKind.Other)
        {
            throw CorralException.Invalid($"cannot copy {LayerUnpacker.Printable(containerPath)} out of the container: it is a device node or a socket");
        }

        if (name is null && !status.IsDirectory)
        {
            throw CorralException.Invalid($"cannot copy the content of {LayerUnpacker.Printable(containerPath)}: it is not a directory");
        }

        var counted = new ArchiveOutputStream(output);
        var writer = new TarWriter(counted, TarEntryFormat.Pax, leaveOpen: true);
        var walk = new TreeWriter(writer, counted, containerPath, limits, cancellationToken);
        try
        {
            walk.WriteTop(fd, status, name);
        }
        catch
        {
            counted.Discard = true;
            throw;
        }
        finally
        {
            writer.Dispose();
        }

        return new CopyResult(counted.Count, walk.Entries);
    }

    /// <summary>What <paramref name="containerPath"/> is (symlinks resolved inside the root); null when it does not exist.</summary>
    public static ContainerPathInfo? Stat(string rootDir, string containerPath)
    {
        ContainerRoot.CheckPath(containerPath);
        using var root = ContainerRoot.Open(rootDir);
        var fd = root.OpenInside(containerPath, LibC.O_PATH);
        if (fd < 0)
        {
            return null;
        }

        try
        {
            if (FileStatus.Of(fd, "") is not { } status)
            {
                return null;
            }

            var name = ArchiveName(containerPath) ?? "/";
            return new ContainerPathInfo(name, status.Kind, status.IsRegular ? status.Size : 0, status.Permissions, status.Uid, status.Gid, status.ModificationTime);
        }
        finally
        {
            LibC.close(fd);
        }
    }

    private static CorralException NoSuchPath(string containerPath) =>
        CorralException.NotFound($"no such file or directory in the container: {LayerUnpacker.Printable(containerPath)}");

    /// <summary>
    /// The archive's top-level name for a path: its last component, "." and ".." taken lexically;
    /// null for the root and for a path ending in "/." (the directory's content only).
    /// </summary>
    private static string? ArchiveName(string containerPath)
    {
        if (containerPath.EndsWith("/.", StringComparison.Ordinal))
        {
            return null;
        }

        var parts = ContainerRoot.Clean(containerPath);
        return parts.Count == 0 ? null : parts[^1];
    }

    /// <summary>Where a copy in lands: the directory the archive's names start from, and the name its top-level entry takes.</summary>
    private sealed class Destination : IDisposable
    {
        private readonly int _dirFd;

        private Destination(int dirFd, List<string> baseParts, string? newName, bool ontoFile)
        {
            _dirFd = dirFd;
            BaseParts = baseParts;
            NewName = newName;
            OntoFile = ontoFile;
        }

        public List<string> BaseParts { get; }

        public string? NewName { get; }

        public bool OntoFile { get; }

        /// <summary>
        /// Resolves the destination in the root. The parent directory is opened by the kernel inside
        /// the root; the last component is looked at without following it, and a symlink there is
        /// followed by starting over at its target (judged inside the root the same way), so a copy
        /// onto a link writes where the link points, in the container.
        /// </summary>
        public static Destination Resolve(ContainerRoot root, string containerPath)
        {
            var path = containerPath;
            for (var hops = 0; hops <= MaxLinkHops; hops++)
            {
                var trimmed = path.TrimEnd('/');
                var slash = trimmed.LastIndexOf('/');
                var last = slash < 0 ? trimmed : trimmed[(slash + 1)..];
                if (trimmed.Length == 0 || last is "." or ".." || trimmed.Length != path.Length)
                {
                    // "/", "/x/.", "/x/..", "/x/": an existing directory or nothing.
                    return Into(root, root.OpenInside(path, LibC.O_PATH | AtCalls.O_DIRECTORY), containerPath);
                }

                var parentPath = slash <= 0 ? "/" : trimmed[..slash];
                var parentFd = root.OpenInside(parentPath, LibC.O_PATH | AtCalls.O_DIRECTORY);
                if (parentFd < 0)
                {
                    throw CorralException.Invalid($"cannot copy to {LayerUnpacker.Printable(containerPath)}: its parent directory does not exist in the container");
                }

                var keep = false;
                try
                {
                    var status = FileStatus.Of(parentFd, last);
                    if (status is { IsSymlink: true })
                    {
                        var target = LayerUnpacker.ReadLink(parentFd, last)
                            ?? throw CorralException.Invalid($"cannot read the symlink {LayerUnpacker.Printable(path)} in the container");
                        path = target.StartsWith('/') ? target : $"{parentPath.TrimEnd('/')}/{target}";
                        continue;
                    }

                    if (status is { IsDirectory: true })
                    {
                        return Into(root, LibC.openat(parentFd, last, LibC.O_PATH | DirFlags, 0), containerPath);
                    }

                    var parts = root.PartsOf(parentFd, containerPath);
                    keep = true;
                    return new Destination(parentFd, parts, last, ontoFile: status is not null);
                }
                finally
                {
                    if (!keep)
                    {
                        LibC.close(parentFd);
                    }
                }
            }

            throw CorralException.Invalid($"too many levels of symbolic links in the container: {LayerUnpacker.Printable(containerPath)}");
        }

        /// <summary>Removes what a failed copy to a new name created (best effort: the copy's own error is what matters).</summary>
        public void RemoveCreated()
        {
            try
            {
                LayerUnpacker.RemoveAt(_dirFd, NewName!);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        public void Dispose() => LibC.close(_dirFd);

        private static Destination Into(ContainerRoot root, int dirFd, string containerPath)
        {
            if (dirFd < 0)
            {
                throw CorralException.Invalid($"cannot copy to {LayerUnpacker.Printable(containerPath)}: no such directory in the container");
            }

            try
            {
                return new Destination(dirFd, root.PartsOf(dirFd, containerPath), newName: null, ontoFile: false);
            }
            catch
            {
                LibC.close(dirFd);
                throw;
            }
        }
    }

    /// <summary>Archives a file or a tree, walking directory fds with O_NOFOLLOW; one fd held per directory level.</summary>
    private sealed class TreeWriter(TarWriter writer, ArchiveOutputStream counted, string containerPath, CopyLimits limits, CancellationToken cancellationToken)
    {
        // A tar header, a PAX header and its data, and padding: what an entry adds besides its content, at most (long names aside).
        private const long HeaderAllowance = 3 * 512;
        private const int F_DUPFD_CLOEXEC = 1030;

        public int Entries { get; private set; }

        /// <summary>The resolved top (an O_PATH fd) under <paramref name="name"/>; a null name: a directory's content only.</summary>
        public void WriteTop(int pathFd, FileStatus status, string? name)
        {
            if (!status.IsDirectory)
            {
                WriteEntry(pathFd, "", status, name!);
                return;
            }

            var dirFd = LibC.openat(pathFd, ".", AtCalls.O_DIRECTORY | LibC.O_CLOEXEC, 0);
            if (dirFd < 0)
            {
                throw Io("open", containerPath);
            }

            var prefix = "";
            List<string> names;
            try
            {
                if (name is not null)
                {
                    Write(new PaxTarEntry(TarEntryType.Directory, name + "/"), status);
                    prefix = name + "/";
                }

                names = Names(dirFd);
            }
            catch
            {
                LibC.close(dirFd);
                throw;
            }

            WalkTree(dirFd, prefix, names);
        }

        /// <summary>Archives the content of <paramref name="topFd"/> (closed once done) depth first, in name order.</summary>
        private void WalkTree(int topFd, string topPrefix, List<string> topNames)
        {
            var stack = new Stack<(int Fd, string Prefix, List<string> Names, int Next)>();
            stack.Push((topFd, topPrefix, topNames, 0));
            try
            {
                while (stack.Count > 0)
                {
                    var (fd, prefix, names, next) = stack.Pop();
                    if (next == names.Count)
                    {
                        LibC.close(fd);
                        continue;
                    }

                    stack.Push((fd, prefix, names, next + 1));
                    var child = names[next];
                    if (FileStatus.Of(fd, child) is not { } status)
                    {
                        continue;
                    }

                    if (!status.IsDirectory)
                    {
                        WriteEntry(fd, child, status, prefix + child);
                        continue;
                    }

                    var childFd = LibC.openat(fd, child, DirFlags, 0);
                    if (childFd < 0)
                    {
                        if (Gone())
                        {
                            continue;
                        }

                        throw Io("open", prefix + child);
                    }

                    // The metadata of what was opened, not of what was stat'ed before.
                    if (FileStatus.Of(childFd, "") is not { IsDirectory: true } opened)
                    {
                        LibC.close(childFd);
                        continue;
                    }

                    List<string> childNames;
                    try
                    {
                        childNames = Names(childFd);
                    }
                    catch
                    {
                        LibC.close(childFd);
                        throw;
                    }

                    stack.Push((childFd, prefix + child + "/", childNames, 0));
                    Write(new PaxTarEntry(TarEntryType.Directory, prefix + child + "/"), opened);
                }
            }
            finally
            {
                foreach (var frame in stack)
                {
                    LibC.close(frame.Fd);
                }
            }
        }

        /// <summary>A non-directory: <paramref name="child"/> under <paramref name="dirFd"/> (empty: the O_PATH fd itself).</summary>
        private void WriteEntry(int dirFd, string child, FileStatus status, string entryName)
        {
            if (status.IsSymlink)
            {
                var target = LayerUnpacker.ReadLink(dirFd, child);
                if (target is not null)
                {
                    Write(new PaxTarEntry(TarEntryType.SymbolicLink, entryName) { LinkName = target }, status);
                }
            }
            else if (status.IsFifo)
            {
                Write(new PaxTarEntry(TarEntryType.Fifo, entryName), status);
            }
            else if (status.IsRegular)
            {
                WriteFile(dirFd, child, entryName);
            }
        }

        /// <summary>
        /// A regular file: pinned with O_PATH|O_NOFOLLOW, checked to be a regular file, and only then
        /// opened for reading (through its own fd), so a name swapped for a fifo or a device is never opened.
        /// </summary>
        private void WriteFile(int dirFd, string child, string entryName)
        {
            var pathFd = child.Length == 0
                ? LibC.fcntl(dirFd, F_DUPFD_CLOEXEC, 0)
                : LibC.openat(dirFd, child, LibC.O_PATH | AtCalls.O_NOFOLLOW | LibC.O_CLOEXEC, 0);
            if (pathFd < 0)
            {
                if (Gone())
                {
                    return;
                }

                throw Io("open", entryName);
            }

            try
            {
                if (FileStatus.Of(pathFd, "") is not { IsRegular: true } status)
                {
                    return;
                }

                var fd = LibC.open($"/proc/self/fd/{pathFd}", LibC.O_RDONLY | LibC.O_CLOEXEC);
                if (fd < 0)
                {
                    throw Io("open", entryName);
                }

                using var file = new SafeFileHandle(fd, ownsHandle: true);
                Reserve(status.Size, entryName);
                Write(new PaxTarEntry(TarEntryType.RegularFile, entryName) { DataStream = new ExactLengthStream(file, status.Size, cancellationToken) }, status);
            }
            finally
            {
                LibC.close(pathFd);
            }
        }

        private void Write(PaxTarEntry entry, FileStatus status)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (++Entries > limits.MaxEntries)
            {
                throw new CorralException(ErrorKind.ResourceExhausted, $"refusing to copy {LayerUnpacker.Printable(containerPath)}: it has more than {limits.MaxEntries} entries");
            }

            Reserve(0, entry.Name);
            entry.Mode = status.Permissions;
            entry.Uid = status.Uid;
            entry.Gid = status.Gid;
            entry.ModificationTime = status.ModificationTime;
            writer.WriteEntry(entry);
        }

        private void Reserve(long size, string entryName)
        {
            if (counted.Count + size + HeaderAllowance + entryName.Length > limits.MaxBytes)
            {
                throw new CorralException(
                    ErrorKind.ResourceExhausted,
                    $"refusing to copy {LayerUnpacker.Printable(containerPath)}: it is larger than {ByteSize.Format(limits.MaxBytes)} ({limits.MaxBytes} bytes)");
            }
        }

        private static List<string> Names(int dirFd)
        {
            var names = LayerUnpacker.ListNames(dirFd);
            names.Sort(StringComparer.Ordinal);
            return names;
        }

        /// <summary>The last call failed because the name went away or changed kind (the container is running): left out.</summary>
        private static bool Gone() => Marshal.GetLastPInvokeError() is LibC.ENOENT or AtCalls.ENOTDIR or AtCalls.ELOOP;

        private static IOException Io(string what, string name) =>
            new($"cannot {what} {LayerUnpacker.Printable(name)} in the container: {LibC.ErrorText(Marshal.GetLastPInvokeError())}");
    }
}
