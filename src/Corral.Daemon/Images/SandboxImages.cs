using Corral.Common;
using Corral.Daemon.Metrics;
using Corral.Daemon.Sandboxes;
using Corral.Images;
using Corral.Supervision;

namespace Corral.Daemon.Images;

/// <summary>
/// Where a sandbox's root filesystem comes from: a directory (rootfs), an image from the daemon
/// host's store (its layers as an overlay the supervisor mounts in the bundle and unmounts when the
/// sandbox ends), or, with neither, the host's default image, as `corral run` does.
/// </summary>
public sealed class SandboxImages(ImageStore store, DefaultImage defaultImage, DaemonMetrics? metrics = null)
{
    /// <summary>The request with its root filesystem settled; an image also gives its Entrypoint/Cmd/Env/WorkingDir as defaults.</summary>
    public async Task<ContainerRequest> ApplyAsync(ContainerRequest request, string? image, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var hasRootfs = !string.IsNullOrEmpty(request.Rootfs);
        if (string.IsNullOrEmpty(image))
        {
            if (hasRootfs)
            {
                return request;
            }

            return defaultImage.IsReady
                ? request with { Rootfs = defaultImage.RootfsPath }
                : throw new CorralException("neither rootfs nor image given, and the daemon's host has no default image: give one, or run `corral prepare` on that host");
        }

        if (hasRootfs)
        {
            throw new CorralException($"rootfs '{request.Rootfs}' and image '{image}' given: a sandbox has one root filesystem, choose one");
        }

        var since = System.Diagnostics.Stopwatch.GetTimestamp();
        StoredImage stored;
        try
        {
            stored = store.Find(image) ?? throw CorralException.NotFound(NotInStore(image));
        }
        catch (CorralException ex) when (ex.Kind is not ErrorKind.NotFound)
        {
            throw CorralException.Invalid($"invalid image '{image}': {ex.Message}");
        }

        var layers = await store.EnsureLayersAsync(stored, cancellationToken).ConfigureAwait(false);
        metrics?.ImageLayersPrepared(System.Diagnostics.Stopwatch.GetElapsedTime(since));
        var config = stored.Config.Config;
        return request with
        {
            Rootfs = stored.Ref,
            ImageLayers = layers,
            Command = ImageRunDefaults.Command(config, request.Command),
            Env = LastWins(ImageRunDefaults.Env(config, request.Env)),
            Workdir = ImageRunDefaults.Workdir(config, request.Workdir),
            User = ImageRunDefaults.User(config, request.User),
        };
    }

    private string NotInStore(string image) =>
        $"no image '{image}' in the daemon's image store ({store.Root}): pull or import it on the daemon's host first (corral pull/import)";

    /// <summary>One entry per name, the caller's over the image's, in first-seen order.</summary>
    private static List<KeyValuePair<string, string>> LastWins(IReadOnlyList<KeyValuePair<string, string>> env)
    {
        var order = new List<string>();
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in env)
        {
            if (!values.ContainsKey(key))
            {
                order.Add(key);
            }

            values[key] = value;
        }

        return [.. order.Select(key => new KeyValuePair<string, string>(key, values[key]))];
    }
}
