using System.Text.Json;
using Corral.Common;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Corral.Images;

/// <summary>What a pull reports as it goes: one call per blob started, progress in bytes, and done.</summary>
public interface IPullObserver
{
    void OnBlob(Descriptor layer, bool cached)
    {
    }

    void OnProgress(Descriptor layer, long bytes)
    {
    }

    void OnBlobDone(Descriptor layer)
    {
    }

    void OnUnpacking(Descriptor layer)
    {
    }
}

/// <summary>Pulls an image from a registry into the store: manifest (platform chosen from an index), config, layers, unpacked.</summary>
public sealed class ImagePuller(ImageStore store, RegistryClient registry, ILogger? logger = null)
{
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    public async Task<StoredImage> PullAsync(ImageReference image, IPullObserver? observer = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(image);
        observer ??= new NullPullObserver();
        var fetched = await registry.GetManifestAsync(image, image.ManifestReference, cancellationToken).ConfigureAwait(false);
        for (var depth = 0; MediaTypes.IsIndex(fetched.MediaType); depth++)
        {
            if (depth > 2)
            {
                throw new CorralException($"image {image}: image indexes nest too deeply");
            }

            var index = JsonSerializer.Deserialize(fetched.Body, ImageJsonContext.Default.ImageIndex) ?? throw new CorralException($"image {image}: empty index");
            var chosen = PlatformSelector.Select(index, $"image {image}");
            ImageLog.PlatformSelected(_logger, chosen.Digest, chosen.Platform is { } p ? $"{p.Os}/{p.Architecture}" : "-");
            fetched = await registry.GetManifestAsync(image, Digest.Parse(chosen.Digest).ToString(), cancellationToken).ConfigureAwait(false);
        }

        var manifest = ImageStore.ParseManifest(fetched.Body, fetched.Digest.ToString());
        var added = new List<Digest>();
        var unpacked = new List<string>();
        try
        {
            await DownloadAsync(image, manifest.Config, added, null, cancellationToken).ConfigureAwait(false);
            foreach (var layer in manifest.Layers)
            {
                var cached = store.Blobs.Has(Digest.Parse(layer.Digest));
                observer.OnBlob(layer, cached);
                await DownloadAsync(image, layer, added, bytes => observer.OnProgress(layer, bytes), cancellationToken).ConfigureAwait(false);
                observer.OnBlobDone(layer);
            }

            if (!store.Blobs.Has(fetched.Digest))
            {
                added.Add(fetched.Digest);
            }

            await store.Blobs.WriteAsync(fetched.Body, fetched.Digest, cancellationToken).ConfigureAwait(false);
            var stored = store.Load(image.Key, fetched.Digest);
            for (var i = 0; i < manifest.Layers.Count; i++)
            {
                observer.OnUnpacking(manifest.Layers[i]);
            }

            // The ref is written last, once every blob is verified and every layer unpacked.
            await store.EnsureLayersAsync(stored, cancellationToken, unpacked).ConfigureAwait(false);
            store.Tag(image.Key, fetched.Digest);
            return stored;
        }
        catch (Exception ex) when (!IsResumable(ex))
        {
            // A refused image leaves nothing: what this pull added goes, unless another image has it.
            DiscardQuietly(added, unpacked);
            throw;
        }
    }

    /// <summary>An interrupted or cancelled download keeps its blobs (and its .partial) for the next pull.</summary>
    private static bool IsResumable(Exception ex) =>
        ex is OperationCanceledException or CorralException { Kind: ErrorKind.Unavailable };

    private async Task DownloadAsync(ImageReference image, Descriptor descriptor, List<Digest> added, Action<long>? progress, CancellationToken cancellationToken)
    {
        var digest = Digest.Parse(descriptor.Digest);
        var had = store.Blobs.Has(digest);
        await registry.DownloadBlobAsync(image, descriptor, store.Blobs, progress, cancellationToken).ConfigureAwait(false);
        if (!had)
        {
            added.Add(digest);
        }
    }

    private void DiscardQuietly(List<Digest> blobs, List<string> layers)
    {
        try
        {
            store.Discard(blobs, layers);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CorralException)
        {
            ImageLog.DiscardFailed(_logger, ex.Message);
        }
    }

    private sealed class NullPullObserver : IPullObserver;
}
