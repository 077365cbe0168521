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
        await registry.DownloadBlobAsync(image, manifest.Config, store.Blobs, null, cancellationToken).ConfigureAwait(false);
        foreach (var layer in manifest.Layers)
        {
            var cached = store.Blobs.Has(Digest.Parse(layer.Digest));
            observer.OnBlob(layer, cached);
            if (!cached)
            {
                await registry.DownloadBlobAsync(image, layer, store.Blobs, bytes => observer.OnProgress(layer, bytes), cancellationToken).ConfigureAwait(false);
            }

            observer.OnBlobDone(layer);
        }

        await store.Blobs.WriteAsync(fetched.Body, fetched.Digest, cancellationToken).ConfigureAwait(false);
        var stored = store.Load(image.Key, fetched.Digest);
        for (var i = 0; i < manifest.Layers.Count; i++)
        {
            observer.OnUnpacking(manifest.Layers[i]);
        }

        await store.EnsureLayersAsync(stored, cancellationToken).ConfigureAwait(false);
        store.Tag(image.Key, fetched.Digest);
        return stored;
    }

    private sealed class NullPullObserver : IPullObserver;
}
