using System.Diagnostics;
using System.Text.Json;
using Corral.Common;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Corral.Images;

/// <summary>An image in the store, resolved: its manifest, its config, and its layers in order (bottom first).</summary>
public sealed record StoredImage(string Ref, Digest ManifestDigest, ImageManifest Manifest, ImageConfigFile Config, long Size);

/// <summary>
/// Corral's image store under &lt;data-dir&gt;/images: content-addressed blobs, a ref index
/// (refs.json, replaced atomically under a lock), and layers unpacked once each into
/// layers/&lt;diff id&gt;/ and shared by every image that has them.
/// </summary>
public sealed class ImageStore
{
    private readonly ILogger _logger;
    private readonly TimeProvider _time;

    public ImageStore(string dataDir, TimeProvider? time = null, ILogger<ImageStore>? logger = null)
    {
        Root = Path.Combine(dataDir, "images");
        Blobs = new BlobStore(Path.Combine(Root, "blobs"));
        _time = time ?? TimeProvider.System;
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    public string Root { get; }

    public BlobStore Blobs { get; }

    public string LayersDir => Path.Combine(Root, "layers");

    private string RefsPath => Path.Combine(Root, "refs.json");

    public RefIndex ReadRefs()
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(RefsPath), ImageJsonContext.Default.RefIndex) ?? new RefIndex();
        }
        catch (FileNotFoundException)
        {
            return new RefIndex();
        }
        catch (DirectoryNotFoundException)
        {
            return new RefIndex();
        }
        catch (JsonException ex)
        {
            throw new CorralException($"the image index {RefsPath} is corrupt: {ex.Message}");
        }
    }

    /// <summary>Points <paramref name="reference"/> at a manifest that is in the store, with everything it needs.</summary>
    public void Tag(string reference, Digest manifest)
    {
        var image = Load(reference, manifest);
        UpdateRefs(refs => refs.Refs[reference] = new ImageRecord { Manifest = manifest.ToString(), Size = image.Size, CreatedAt = _time.GetUtcNow() });
        ImageLog.Tagged(_logger, reference, manifest.ToString());
    }

    /// <summary>The image a ref, a short name or a manifest digest names; null when the store does not have it.</summary>
    public StoredImage? Find(string text)
    {
        var refs = ReadRefs().Refs;
        if (Digest.TryParse(text, out var bare))
        {
            return Blobs.Has(bare) ? Load(text, bare) : null;
        }

        string key;
        try
        {
            key = ImageReference.Parse(text).Key;
        }
        catch (CorralException) when (refs.ContainsKey(text))
        {
            key = text;
        }

        if (refs.TryGetValue(key, out var record) || refs.TryGetValue(text, out record))
        {
            return Load(key, Digest.Parse(record.Manifest));
        }

        // A digest reference is satisfied by any stored manifest with that digest.
        if (ImageReference.Parse(text).Digest is { } digest && Blobs.Has(digest))
        {
            return Load(key, digest);
        }

        return null;
    }

    public StoredImage Load(string reference, Digest manifestDigest)
    {
        var manifest = ParseManifest(Blobs.ReadAll(manifestDigest), manifestDigest.ToString());
        var configDigest = Digest.Parse(manifest.Config.Digest);
        ImageConfigFile config;
        try
        {
            config = JsonSerializer.Deserialize(Blobs.ReadAll(configDigest), ImageJsonContext.Default.ImageConfigFile) ?? new ImageConfigFile();
        }
        catch (JsonException ex)
        {
            throw new CorralException($"image config {configDigest} is not valid JSON: {ex.Message}");
        }

        if (config.Rootfs is { } rootfs && rootfs.DiffIds.Count != manifest.Layers.Count)
        {
            throw new CorralException($"image {reference}: its config lists {rootfs.DiffIds.Count} layers, its manifest {manifest.Layers.Count}");
        }

        var size = manifest.Config.Size + manifest.Layers.Sum(l => l.Size);
        return new StoredImage(reference, manifestDigest, manifest, config, size);
    }

    public static ImageManifest ParseManifest(byte[] json, string what)
    {
        ImageManifest? manifest;
        try
        {
            manifest = JsonSerializer.Deserialize(json, ImageJsonContext.Default.ImageManifest);
        }
        catch (JsonException ex)
        {
            throw new CorralException($"manifest {what} is not valid JSON: {ex.Message}");
        }

        if (manifest is null || manifest.SchemaVersion != 2 || string.IsNullOrEmpty(manifest.Config.Digest))
        {
            throw new CorralException($"manifest {what} is not an OCI or Docker v2 image manifest");
        }

        foreach (var layer in manifest.Layers)
        {
            _ = Digest.Parse(layer.Digest);
            if (layer.MediaType is MediaTypes.OciLayerZstd)
            {
                throw new CorralException($"layer {layer.Digest} is zstd-compressed, which Corral does not support yet");
            }
        }

        return manifest;
    }

    /// <summary>Host directories of the image's unpacked layers, bottom first; unpacks each layer the first time.</summary>
    public async Task<IReadOnlyList<string>> EnsureLayersAsync(StoredImage image, CancellationToken cancellationToken = default)
    {
        var dirs = new List<string>();
        for (var i = 0; i < image.Manifest.Layers.Count; i++)
        {
            var blob = Digest.Parse(image.Manifest.Layers[i].Digest);
            var diffId = image.Config.Rootfs?.DiffIds is { Count: > 0 } ids ? Digest.Parse(ids[i]) : (Digest?)null;
            dirs.Add(await EnsureLayerAsync(blob, diffId, cancellationToken).ConfigureAwait(false));
        }

        return dirs;
    }

    /// <summary>Unpacks a layer blob once into layers/&lt;diff id&gt; (the blob digest when no diff id is known).</summary>
    public async Task<string> EnsureLayerAsync(Digest blob, Digest? diffId, CancellationToken cancellationToken = default)
    {
        var key = (diffId ?? blob).Hex;
        var dir = Path.Combine(LayersDir, key);
        if (Directory.Exists(dir))
        {
            return dir;
        }

        Directory.CreateDirectory(LayersDir);
        var temp = Path.Combine(LayersDir, $".tmp-{key}-{Guid.NewGuid():N}");
        var watch = Stopwatch.StartNew();
        try
        {
            Digest actual;
            await using (var stream = Blobs.Open(blob))
            {
                actual = await LayerUnpacker.UnpackAsync(stream, temp, WhiteoutMode.Overlay, cancellationToken).ConfigureAwait(false);
            }

            if (diffId is { } expected && actual != expected)
            {
                throw new CorralException($"layer {blob} unpacks to {actual}, but the image config says {expected}");
            }

            try
            {
                Directory.Move(temp, dir);
            }
            catch (IOException) when (Directory.Exists(dir))
            {
                // Another process unpacked it first; theirs is as good.
            }

            ImageLog.LayerUnpacked(_logger, blob.ToString(), actual.ToString(), watch.Elapsed.TotalMilliseconds);
            return dir;
        }
        finally
        {
            if (Directory.Exists(temp))
            {
                Directory.Delete(temp, recursive: true);
            }
        }
    }

    /// <summary>Removes a ref; then every blob and layer no remaining ref needs.</summary>
    public bool Remove(string text)
    {
        var key = Digest.TryParse(text, out _) ? text : ImageReference.Parse(text).Key;
        var removed = false;
        UpdateRefs(refs =>
        {
            removed = refs.Refs.Remove(key) || refs.Refs.Remove(text);
            if (!removed && Digest.TryParse(text, out _))
            {
                foreach (var k in refs.Refs.Where(kv => kv.Value.Manifest == text).Select(kv => kv.Key).ToList())
                {
                    removed |= refs.Refs.Remove(k);
                }
            }
        });
        if (!removed)
        {
            return false;
        }

        var (blobs, layers) = CollectGarbage();
        ImageLog.Removed(_logger, key, blobs, layers);
        return true;
    }

    /// <summary>Deletes blobs and unpacked layers that no ref reaches. Layers in use by a running container stay mounted (overlayfs holds them).</summary>
    public (int Blobs, int Layers) CollectGarbage()
    {
        var keepBlobs = new HashSet<Digest>();
        var keepLayers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, record) in ReadRefs().Refs)
        {
            var image = Load(name, Digest.Parse(record.Manifest));
            keepBlobs.Add(image.ManifestDigest);
            keepBlobs.Add(Digest.Parse(image.Manifest.Config.Digest));
            for (var i = 0; i < image.Manifest.Layers.Count; i++)
            {
                var blob = Digest.Parse(image.Manifest.Layers[i].Digest);
                keepBlobs.Add(blob);
                keepLayers.Add(blob.Hex);
                if (image.Config.Rootfs?.DiffIds is { Count: > 0 } ids)
                {
                    keepLayers.Add(Digest.Parse(ids[i]).Hex);
                }
            }
        }

        var blobs = 0;
        foreach (var blob in Blobs.List().Where(b => !keepBlobs.Contains(b)).ToList())
        {
            Blobs.Delete(blob);
            blobs++;
        }

        var layers = 0;
        if (Directory.Exists(LayersDir))
        {
            // A layer a running container's overlay still uses stays until a later collection.
            var mounts = File.Exists("/proc/self/mountinfo") ? File.ReadAllText("/proc/self/mountinfo") : "";
            foreach (var dir in Directory.EnumerateDirectories(LayersDir).Where(d => !keepLayers.Contains(Path.GetFileName(d)) && !Path.GetFileName(d).StartsWith('.') && !mounts.Contains(d, StringComparison.Ordinal)).ToList())
            {
                Directory.Delete(dir, recursive: true);
                layers++;
            }
        }

        SweepLeftovers();
        return (blobs, layers);
    }

    /// <summary>What a process killed mid-write leaves (temp blobs, half-unpacked layers, import dirs), once it is an hour old.</summary>
    private void SweepLeftovers()
    {
        var cutoff = _time.GetUtcNow().UtcDateTime - TimeSpan.FromHours(1);
        var blobTemps = Path.Combine(Blobs.Root, "sha256");
        if (Directory.Exists(blobTemps))
        {
            foreach (var file in Directory.EnumerateFiles(blobTemps, "*.tmp").Where(f => File.GetLastWriteTimeUtc(f) < cutoff).ToList())
            {
                File.Delete(file);
            }
        }

        foreach (var (dir, pattern) in new[] { (LayersDir, ".tmp-*"), (Root, ".import-*") })
        {
            if (!Directory.Exists(dir))
            {
                continue;
            }

            foreach (var leftover in Directory.EnumerateDirectories(dir, pattern).Where(d => Directory.GetLastWriteTimeUtc(d) < cutoff).ToList())
            {
                Directory.Delete(leftover, recursive: true);
            }
        }
    }

    private void UpdateRefs(Action<RefIndex> change)
    {
        Directory.CreateDirectory(Root);
        using var lockFile = AcquireLock();
        var refs = ReadRefs();
        change(refs);
        var temp = $"{RefsPath}.{Environment.ProcessId}.tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(refs, ImageJsonContext.Default.RefIndex));
        File.Move(temp, RefsPath, overwrite: true);
    }

    private FileStream AcquireLock()
    {
        var path = Path.Combine(Root, "refs.lock");
        var deadline = _time.GetUtcNow() + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (_time.GetUtcNow() < deadline)
            {
                Thread.Sleep(20);
            }
        }
    }
}
