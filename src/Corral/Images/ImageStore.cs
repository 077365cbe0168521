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

    /// <summary>How much a layer and an image may unpack to (defaults, then $CORRAL_MAX_LAYER_SIZE and friends).</summary>
    public UnpackLimits Limits { get; set; } = UnpackLimits.From();

    /// <summary>An image config larger than this is refused before it is read (real ones are a few KiB).</summary>
    public const long MaxConfigBytes = 16 << 20;

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
        if (Blobs.SizeOf(configDigest) is { } stored && stored != manifest.Config.Size)
        {
            throw CorralException.Invalid($"image {reference}: its config {configDigest} is stored with {stored} bytes, the manifest says {manifest.Config.Size}");
        }

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

        _ = Digest.Parse(manifest.Config.Digest);
        if (manifest.Config.Size is < 0 or > MaxConfigBytes)
        {
            throw CorralException.Invalid($"manifest {what}: its config is {manifest.Config.Size} bytes, more than the {MaxConfigBytes} an image config may have");
        }

        foreach (var layer in manifest.Layers)
        {
            _ = Digest.Parse(layer.Digest);
            if (layer.Size < 0)
            {
                throw CorralException.Invalid($"manifest {what}: layer {layer.Digest} has a negative size");
            }

            if (layer.MediaType is MediaTypes.OciLayerZstd)
            {
                throw new CorralException($"layer {layer.Digest} is zstd-compressed, which Corral does not support yet");
            }
        }

        return manifest;
    }

    /// <summary>
    /// Host directories of the image's unpacked layers, bottom first; unpacks each layer the first
    /// time, within <see cref="Limits"/> (per layer, and all of the image's layers together).
    /// The keys of layers this call unpacked are added to <paramref name="unpacked"/>.
    /// </summary>
    public async Task<IReadOnlyList<string>> EnsureLayersAsync(StoredImage image, CancellationToken cancellationToken = default, ICollection<string>? unpacked = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        var dirs = new List<string>();
        long total = 0;
        for (var i = 0; i < image.Manifest.Layers.Count; i++)
        {
            var layer = image.Manifest.Layers[i];
            var blob = Digest.Parse(layer.Digest);
            var diffId = image.Config.Rootfs?.DiffIds is { Count: > 0 } ids ? Digest.Parse(ids[i]) : (Digest?)null;
            var budget = Limits.LayerBudget(layer.Size, Limits.MaxImageBytes - total);
            var (dir, size, fresh) = await EnsureLayerCoreAsync(blob, diffId, budget, cancellationToken).ConfigureAwait(false);
            if (fresh)
            {
                unpacked?.Add(Path.GetFileName(dir));
            }

            total += size;
            if (total > Limits.MaxImageBytes)
            {
                throw new CorralException(ErrorKind.ResourceExhausted, $"image {image.Ref} unpacks to more than {ByteSize.Format(Limits.MaxImageBytes)} ({Limits.MaxImageBytes} bytes; raise it with --max-image-size)");
            }

            dirs.Add(dir);
        }

        return dirs;
    }

    /// <summary>Unpacks a layer blob once into layers/&lt;diff id&gt; (the blob digest when no diff id is known).</summary>
    public async Task<string> EnsureLayerAsync(Digest blob, Digest? diffId, CancellationToken cancellationToken = default) =>
        (await EnsureLayerCoreAsync(blob, diffId, Limits.LayerBudget(Blobs.SizeOf(blob), Limits.MaxImageBytes), cancellationToken).ConfigureAwait(false)).Dir;

    private async Task<(string Dir, long Size, bool Fresh)> EnsureLayerCoreAsync(Digest blob, Digest? diffId, UnpackBudget budget, CancellationToken cancellationToken)
    {
        var key = (diffId ?? blob).Hex;
        var dir = Path.Combine(LayersDir, key);
        if (Directory.Exists(dir))
        {
            return (dir, ReadLayerSize(key), false);
        }

        Directory.CreateDirectory(LayersDir);
        var temp = Path.Combine(LayersDir, $".tmp-{key}-{Guid.NewGuid():N}");
        var watch = Stopwatch.StartNew();
        try
        {
            UnpackResult result;
            await using (var stream = Blobs.Open(blob))
            {
                result = await LayerUnpacker.UnpackAsync(stream, temp, WhiteoutMode.Overlay, budget, cancellationToken).ConfigureAwait(false);
            }

            if (diffId is { } expected && result.DiffId != expected)
            {
                throw CorralException.Invalid($"layer {blob} unpacks to {result.DiffId}, but the image config says {expected}");
            }

            File.WriteAllText(SizePath(key), result.Bytes.ToString(System.Globalization.CultureInfo.InvariantCulture));
            var fresh = true;
            try
            {
                Directory.Move(temp, dir);
            }
            catch (IOException) when (Directory.Exists(dir))
            {
                // Another process unpacked it first; theirs is as good.
                fresh = false;
            }

            ImageLog.LayerUnpacked(_logger, blob.ToString(), result.DiffId.ToString(), watch.Elapsed.TotalMilliseconds);
            return (dir, result.Bytes, fresh);
        }
        finally
        {
            if (Directory.Exists(temp))
            {
                Directory.Delete(temp, recursive: true);
            }
        }
    }

    /// <summary>Beside each layer directory: the size of its tar (what the image cap counts).</summary>
    private string SizePath(string key) => Path.Combine(LayersDir, $".size-{key}");

    private long ReadLayerSize(string key)
    {
        try
        {
            return long.TryParse(File.ReadAllText(SizePath(key)), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var size) ? size : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>
    /// After a failed import or pull: deletes the blobs and layers it added that no ref reaches
    /// (and no overlay uses), so nothing of it is left.
    /// </summary>
    public void Discard(IEnumerable<Digest> blobs, IEnumerable<string> layers)
    {
        ArgumentNullException.ThrowIfNull(blobs);
        ArgumentNullException.ThrowIfNull(layers);
        Directory.CreateDirectory(Root);
        using var lockFile = AcquireLock();
        var (keepBlobs, keepLayers) = Reachable();
        foreach (var blob in blobs.Where(b => !keepBlobs.Contains(b)))
        {
            Blobs.Delete(blob);
        }

        var mounts = Mounts();
        foreach (var key in layers.Where(k => !keepLayers.Contains(k)))
        {
            DeleteLayer(key, mounts);
        }
    }

    /// <summary>
    /// Layers that <see cref="CollectGarbage"/> had to leave because an overlay used them, and that
    /// no ref reaches now, are deleted once no overlay uses them (called when a container's overlay
    /// is unmounted). Returns how many went.
    /// </summary>
    public int CollectReleasedLayers()
    {
        if (!Directory.Exists(LayersDir) || !Directory.EnumerateFiles(LayersDir, ".collect-*").Any())
        {
            return 0;
        }

        using var lockFile = AcquireLock();
        var (_, keepLayers) = Reachable();
        var mounts = Mounts();
        var removed = 0;
        foreach (var marker in Directory.EnumerateFiles(LayersDir, ".collect-*").ToList())
        {
            var key = Path.GetFileName(marker)[".collect-".Length..];
            if (keepLayers.Contains(key))
            {
                File.Delete(marker);
            }
            else if (DeleteLayer(key, mounts))
            {
                removed++;
            }
        }

        return removed;
    }

    /// <summary>The store whose layers these directories are (&lt;data&gt;/images/layers/&lt;key&gt;); null for other directories.</summary>
    public static ImageStore? OfLayers(IReadOnlyList<string>? layerDirs, ILogger<ImageStore>? logger = null)
    {
        if (layerDirs is not { Count: > 0 } || Path.GetDirectoryName(Path.GetFullPath(layerDirs[0])) is not { } layers || Path.GetFileName(layers) != "layers")
        {
            return null;
        }

        var root = Path.GetDirectoryName(layers)!;
        return Path.GetFileName(root) == "images" && Path.GetDirectoryName(root) is { } dataDir ? new ImageStore(dataDir, logger: logger) : null;
    }

    /// <summary>Deletes layers/&lt;key&gt; unless an overlay uses it; then a marker asks <see cref="CollectReleasedLayers"/> to try again.</summary>
    private bool DeleteLayer(string key, string mounts)
    {
        var dir = Path.Combine(LayersDir, key);
        var marker = Path.Combine(LayersDir, $".collect-{key}");
        if (Directory.Exists(dir) && mounts.Contains(dir, StringComparison.Ordinal))
        {
            File.WriteAllText(marker, "");
            return false;
        }

        if (Directory.Exists(dir))
        {
            Directory.Delete(dir, recursive: true);
        }

        File.Delete(SizePath(key));
        File.Delete(marker);
        return true;
    }

    private static string Mounts() => File.Exists("/proc/self/mountinfo") ? File.ReadAllText("/proc/self/mountinfo") : "";

    private (HashSet<Digest> Blobs, HashSet<string> Layers) Reachable()
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

        return (keepBlobs, keepLayers);
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

    /// <summary>
    /// Deletes blobs and unpacked layers that no ref reaches. A layer a running container's overlay
    /// still uses stays (overlayfs holds it) and is marked: it goes when that overlay is unmounted
    /// (<see cref="CollectReleasedLayers"/>).
    /// </summary>
    public (int Blobs, int Layers) CollectGarbage()
    {
        var (keepBlobs, keepLayers) = Reachable();
        var blobs = 0;
        foreach (var blob in Blobs.List().Where(b => !keepBlobs.Contains(b)).ToList())
        {
            Blobs.Delete(blob);
            blobs++;
        }

        var layers = 0;
        if (Directory.Exists(LayersDir))
        {
            var mounts = Mounts();
            foreach (var dir in Directory.EnumerateDirectories(LayersDir).Where(d => !keepLayers.Contains(Path.GetFileName(d)) && !Path.GetFileName(d).StartsWith('.')).ToList())
            {
                if (DeleteLayer(Path.GetFileName(dir), mounts))
                {
                    layers++;
                }
            }

            // Size files of layers that are gone.
            foreach (var size in Directory.EnumerateFiles(LayersDir, ".size-*").Where(f => !Directory.Exists(Path.Combine(LayersDir, Path.GetFileName(f)[".size-".Length..]))).ToList())
            {
                File.Delete(size);
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
