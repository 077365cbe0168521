using Corral.Common;
using Corral.Daemon.Sandboxes;
using Corral.Files;
using Corral.Images;
using Corral.Rootfs;
using Corral.Supervision;
using Corral.Users;

namespace Corral.Daemon.Files;

/// <summary>
/// Files into and out of a sandbox's root, running or ended (until it is removed): a path is found
/// where the sandbox sees it (its writable root, or the host directory of a bind mount) and every
/// step inside is resolved by <see cref="ContainerFiles"/> within that root, never on the host.
/// </summary>
internal sealed class SandboxFiles(SandboxRegistry registry)
{
    public CopyResult CopyIn(string id, string path, Stream tar, CancellationToken cancellationToken)
    {
        var place = Locate(id, path, writing: true);
        return ContainerFiles.CopyIn(place.Root, place.Path, tar, place.Owner, CopyLimits.Default, cancellationToken);
    }

    public CopyResult CopyOut(string id, string path, Stream output, CancellationToken cancellationToken)
    {
        var place = Locate(id, path, writing: false);
        return ContainerFiles.CopyOut(place.Root, place.Path, output, CopyLimits.Default, cancellationToken);
    }

    /// <summary>Which host directory serves as the root for <paramref name="path"/>, and the path inside it.</summary>
    private Place Locate(string id, string path, bool writing)
    {
        InputRules.NoControl("path", path);
        if (!path.StartsWith('/'))
        {
            throw CorralException.Invalid($"invalid path {InputRules.Quote(path)}: must be an absolute path in the sandbox");
        }

        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries).Where(p => p != ".").ToList();
        if (parts.Contains(".."))
        {
            throw CorralException.Invalid($"invalid path {InputRules.Quote(path)}: '..' is not allowed");
        }

        var normal = "/" + string.Join('/', parts);
        var sandbox = registry.Get(id);
        var request = sandbox.Files.ReadSpec()?.Request
            ?? throw CorralException.Precondition($"sandbox {id} has no files yet");
        var overlay = request.ImageLayers is not null || !request.ReadOnlyRoot;
        var root = overlay && request.KeptRootDir is { } kept ? WritableRoot.RootfsOf(kept) : request.Rootfs;
        if (overlay && !OverlayRootfs.IsMounted(root))
        {
            throw CorralException.Precondition(sandbox.HasEnded
                ? $"sandbox {id} ended before its root filesystem was made: there are no files to copy"
                : $"sandbox {id} has not started yet: its root filesystem is not there yet");
        }

        // The innermost mount over the path decides (longest container path first).
        foreach (var mount in request.Mounts.OrderByDescending(m => m.Target.Length))
        {
            if (normal != mount.Target && !normal.StartsWith(mount.Target + "/", StringComparison.Ordinal))
            {
                continue;
            }

            if (mount.Kind == MountKind.Tmpfs)
            {
                throw CorralException.Precondition($"{normal} is on a tmpfs mount ({mount.Target}) that lives only inside the sandbox: copy through exec instead");
            }

            if (writing && mount.ReadOnly)
            {
                throw CorralException.Precondition($"{normal} is on a read-only bind mount ({mount.Target})");
            }

            if (!Directory.Exists(mount.Source))
            {
                throw CorralException.Precondition($"{normal} is a bind-mounted file ({mount.Source} on the host): copy it on the host");
            }

            return new Place(mount.Source!, "/" + normal[mount.Target.Length..].TrimStart('/'), writing ? Owner(root, request) : null);
        }

        if (request.ReadOnlyRoot && (writing || normal == "/tmp" || normal.StartsWith("/tmp/", StringComparison.Ordinal)))
        {
            throw CorralException.Precondition(writing
                ? $"sandbox {id} has a read-only root (--read-only): nothing can be copied into it"
                : $"{normal} is on the read-only sandbox's tmpfs /tmp, which lives only inside it: copy through exec instead");
        }

        return new Place(root, normal, writing ? Owner(root, request) : null);
    }

    /// <summary>Copied-in files belong to the sandbox's user, as its own processes see it.</summary>
    private static FileOwner Owner(string root, ContainerRequest request)
    {
        var user = ContainerUsers.Resolve(root, request.User);
        return new FileOwner((int)user.Uid, (int)user.Gid);
    }

    private sealed record Place(string Root, string Path, FileOwner? Owner);
}
