using System.Collections.Concurrent;
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
    private static readonly TimeSpan MountDeadline = TimeSpan.FromSeconds(30);

    /// <summary>How long a copy into a sandbox still being created waits for its root.</summary>
    private static readonly TimeSpan StartWait = TimeSpan.FromSeconds(60);

    /// <summary>One copy at a time per ended sandbox: its root is mounted for the copy and unmounted after.</summary>
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _gates = new(StringComparer.Ordinal);

    public Task<CopyResult> CopyInAsync(string id, string path, Stream tar, CancellationToken cancellationToken) =>
        WithRootAsync(id, path, writing: true, place => ContainerFiles.CopyIn(place.Root, place.Path, tar, place.Owner, CopyLimits.Default, cancellationToken), cancellationToken);

    public Task<CopyResult> CopyOutAsync(string id, string path, Stream output, CancellationToken cancellationToken) =>
        WithRootAsync(id, path, writing: false, place => ContainerFiles.CopyOut(place.Root, place.Path, output, CopyLimits.Default, cancellationToken), cancellationToken);

    /// <summary>
    /// Runs <paramref name="copy"/> on the place <paramref name="path"/> names. A running sandbox's root
    /// is mounted by its shim; an ended one's (kept until it is removed, nothing mounted meanwhile) is
    /// mounted for the copy and unmounted after.
    /// </summary>
    private async Task<CopyResult> WithRootAsync(string id, string path, bool writing, Func<Place, CopyResult> copy, CancellationToken cancellationToken)
    {
        var normal = Normalize(path);
        var (sandbox, request) = Find(id);
        var kept = request.HasOverlayRoot ? request.KeptRootDir : null;
        var root = kept is null ? request.Rootfs : WritableRoot.RootfsOf(kept);
        if (kept is null || await MountedByShimAsync(sandbox, root, cancellationToken).ConfigureAwait(false))
        {
            return await Task.Run(() => copy(Locate(id, normal, writing, request, root)), cancellationToken).ConfigureAwait(false);
        }

        if (!WritableRoot.HasLayer(kept))
        {
            throw CorralException.Precondition($"sandbox {id} ended before its root filesystem was made: there are no files to copy");
        }

        var gate = _gates.GetOrAdd(id, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await WritableRoot.RemountAsync(kept, request.ImageLayers ?? [request.Rootfs], MountDeadline, cancellationToken).ConfigureAwait(false);
            try
            {
                return await Task.Run(() => copy(Locate(id, normal, writing, request, root)), cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                WritableRoot.Unmount(kept);
            }
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// True while the sandbox's shim holds its root mounted; a sandbox still being created is waited for
    /// (its shim mounts the root before it starts the runtime). False once it ended (nothing mounted).
    /// </summary>
    private static async Task<bool> MountedByShimAsync(Sandbox sandbox, string root, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + StartWait;
        while (!OverlayRootfs.IsMounted(root))
        {
            if (sandbox.HasEnded)
            {
                return false;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw CorralException.Precondition($"sandbox {sandbox.Id} has not started yet: its root filesystem is not there yet");
            }

            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    private (Sandbox Sandbox, ContainerRequest Request) Find(string id)
    {
        var sandbox = registry.Get(id);
        var request = sandbox.Files.ReadSpec()?.Request
            ?? throw CorralException.Precondition($"sandbox {id} has no files yet");
        return (sandbox, request);
    }

    /// <summary>Which host directory serves as the root for <paramref name="normal"/> (a normalised sandbox path), and the path inside it.</summary>
    private static Place Locate(string id, string normal, bool writing, ContainerRequest request, string root)
    {
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

    /// <summary>An absolute sandbox path without ".." (checked before anything is mounted), "." and doubled slashes dropped.</summary>
    private static string Normalize(string path)
    {
        InputRules.NoControl("path", path);
        if (!path.StartsWith('/'))
        {
            throw CorralException.Invalid($"invalid path {InputRules.Quote(path)}: must be an absolute path in the sandbox");
        }

        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries).Where(p => p != ".").ToList();
        return parts.Contains("..")
            ? throw CorralException.Invalid($"invalid path {InputRules.Quote(path)}: '..' is not allowed")
            : "/" + string.Join('/', parts);
    }

    /// <summary>Copied-in files belong to the sandbox's user, as its own processes see it.</summary>
    private static FileOwner Owner(string root, ContainerRequest request)
    {
        var user = ContainerUsers.Resolve(root, request.User);
        return new FileOwner((int)user.Uid, (int)user.Gid);
    }

    private sealed record Place(string Root, string Path, FileOwner? Owner);
}
