using System.Text.Json;
using Corral.Common;

namespace Corral.Images;

/// <summary>
/// Imports an OCI image layout (a directory, or a tar of one) or a `docker save` archive into the
/// store. Archives are unpacked with the same checks as layers before anything is read from them.
/// </summary>
public sealed class ImageImporter(ImageStore store)
{
    private const string RefNameAnnotation = "org.opencontainers.image.ref.name";
    private const int MaxJsonBytes = 4 << 20;

    private readonly List<Digest> _added = [];
    private readonly List<string> _unpacked = [];

    /// <summary>
    /// Imports <paramref name="path"/>; returns the refs it tagged. Refs are written last, once
    /// every blob is verified and every layer unpacked; a refused import leaves nothing.
    /// </summary>
    public async Task<IReadOnlyList<string>> ImportAsync(string path, string? tag, CancellationToken cancellationToken = default)
    {
        _added.Clear();
        _unpacked.Clear();
        try
        {
            return await ImportPathAsync(path, tag, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception)
        {
            try
            {
                store.Discard(_added, _unpacked);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CorralException)
            {
                // The first error is the one to report; the sweep of leftovers gets the rest.
            }

            throw;
        }
    }

    private async Task<IReadOnlyList<string>> ImportPathAsync(string path, string? tag, CancellationToken cancellationToken)
    {
        if (Directory.Exists(path))
        {
            return await ImportDirectoryAsync(path, tag, DefaultName(path), cancellationToken).ConfigureAwait(false);
        }

        if (!File.Exists(path))
        {
            throw new CorralException($"cannot import '{path}': no such file or directory");
        }

        Directory.CreateDirectory(store.Root);
        var temp = Path.Combine(store.Root, $".import-{Guid.NewGuid():N}");
        try
        {
            await using (var archive = File.OpenRead(path))
            {
                var budget = store.Limits.LayerBudget(archive.Length, store.Limits.MaxImageBytes);
                await LayerUnpacker.UnpackAsync(archive, temp, WhiteoutMode.Delete, budget with { Option = budget.Option == "--max-layer-size" ? "--max-image-size" : budget.Option }, cancellationToken).ConfigureAwait(false);
            }

            return await ImportDirectoryAsync(temp, tag, DefaultName(path), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (Directory.Exists(temp))
            {
                Directory.Delete(temp, recursive: true);
            }
        }
    }

    private async Task<IReadOnlyList<string>> ImportDirectoryAsync(string dir, string? tag, string defaultName, CancellationToken cancellationToken)
    {
        if (FileInside(dir, "oci-layout") is not null && FileInside(dir, "index.json") is not null)
        {
            return await ImportLayoutAsync(dir, tag, defaultName, cancellationToken).ConfigureAwait(false);
        }

        if (FileInside(dir, "manifest.json") is not null)
        {
            return await ImportDockerArchiveAsync(dir, tag, defaultName, cancellationToken).ConfigureAwait(false);
        }

        throw new CorralException("cannot import: not an OCI image layout (oci-layout, index.json) or a docker-save archive (manifest.json)");
    }

    private async Task<IReadOnlyList<string>> ImportLayoutAsync(string dir, string? tag, string defaultName, CancellationToken cancellationToken)
    {
        var index = ReadJson(Inside(dir, "index.json"), ImageJsonContext.Default.ImageIndex, "index.json");
        if (index.Manifests.Count == 0)
        {
            throw new CorralException("cannot import: the layout's index.json lists no images");
        }

        var images = new List<(string Reference, Digest Manifest)>();
        var chosen = tag is null ? index.Manifests : [index.Manifests.Count == 1 ? index.Manifests[0] : PlatformSelector.Select(index, "the image layout")];
        foreach (var top in chosen)
        {
            var descriptor = top;
            while (MediaTypes.IsIndex(descriptor.MediaType))
            {
                var nested = await CopyBlobAsync(dir, descriptor, cancellationToken).ConfigureAwait(false);
                var inner = JsonSerializer.Deserialize(nested, ImageJsonContext.Default.ImageIndex) ?? throw new CorralException($"index {descriptor.Digest} is empty");
                descriptor = PlatformSelector.Select(inner, $"index {descriptor.Digest}");
            }

            var manifestBytes = await CopyBlobAsync(dir, descriptor, cancellationToken).ConfigureAwait(false);
            var manifest = ImageStore.ParseManifest(manifestBytes, descriptor.Digest);
            await CopyBlobAsync(dir, manifest.Config, cancellationToken).ConfigureAwait(false);
            foreach (var layer in manifest.Layers)
            {
                await CopyBlobAsync(dir, layer, cancellationToken).ConfigureAwait(false);
            }

            var name = tag ?? RefFromAnnotation(top, defaultName);
            images.Add((ImageReference.Parse(name).Key, Digest.Parse(descriptor.Digest)));
        }

        return await TagAllAsync(images, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Unpacks every image's layers, then writes the refs: none before all are good.</summary>
    private async Task<IReadOnlyList<string>> TagAllAsync(List<(string Reference, Digest Manifest)> images, CancellationToken cancellationToken)
    {
        foreach (var (reference, manifest) in images)
        {
            await store.EnsureLayersAsync(store.Load(reference, manifest), cancellationToken, _unpacked).ConfigureAwait(false);
        }

        foreach (var (reference, manifest) in images)
        {
            store.Tag(reference, manifest);
        }

        return images.Select(i => i.Reference).ToList();
    }

    private async Task WriteBlobAsync(Stream content, Digest digest, long? size, CancellationToken cancellationToken)
    {
        var had = store.Blobs.Has(digest);
        await store.Blobs.WriteAsync(content, digest, size, cancellationToken).ConfigureAwait(false);
        if (!had)
        {
            _added.Add(digest);
        }
    }

    private Task WriteBlobAsync(byte[] content, Digest digest, CancellationToken cancellationToken) =>
        WriteBlobAsync(new MemoryStream(content, writable: false), digest, content.Length, cancellationToken);

    private async Task<IReadOnlyList<string>> ImportDockerArchiveAsync(string dir, string? tag, string defaultName, CancellationToken cancellationToken)
    {
        var entries = ReadJson(Inside(dir, "manifest.json"), ImageJsonContext.Default.ListDockerArchiveEntry, "manifest.json");
        if (entries.Count == 0)
        {
            throw new CorralException("cannot import: the archive's manifest.json lists no images");
        }

        var images = new List<(string Reference, Digest Manifest)>();
        foreach (var entry in tag is null ? entries : entries.Take(1))
        {
            var configBytes = ReadBounded(Inside(dir, entry.Config), ImageStore.MaxConfigBytes, "the image config");
            var configDigest = Digest.Of(configBytes);
            await WriteBlobAsync(configBytes, configDigest, cancellationToken).ConfigureAwait(false);
            var layers = new List<Descriptor>();
            foreach (var layerPath in entry.Layers)
            {
                var file = Inside(dir, layerPath);
                Digest digest;
                bool gzip;
                await using (var stream = File.OpenRead(file))
                {
                    gzip = stream.ReadByte() == 0x1f && stream.ReadByte() == 0x8b;
                    stream.Position = 0;
                    using var hashing = new HashingStream(stream, leaveOpen: true);
                    hashing.Drain();
                    digest = hashing.Digest();
                }

                var size = new FileInfo(file).Length;
                await using (var stream = File.OpenRead(file))
                {
                    await WriteBlobAsync(stream, digest, size, cancellationToken).ConfigureAwait(false);
                }

                layers.Add(new Descriptor { MediaType = gzip ? MediaTypes.OciLayerGzip : MediaTypes.OciLayerTar, Digest = digest.ToString(), Size = size });
            }

            var manifest = new ImageManifest
            {
                SchemaVersion = 2,
                MediaType = MediaTypes.OciManifest,
                Config = new Descriptor { MediaType = MediaTypes.OciConfig, Digest = configDigest.ToString(), Size = configBytes.Length },
                Layers = layers,
            };
            var manifestBytes = JsonSerializer.SerializeToUtf8Bytes(manifest, ImageJsonContext.Default.ImageManifest);
            var manifestDigest = Digest.Of(manifestBytes);
            await WriteBlobAsync(manifestBytes, manifestDigest, cancellationToken).ConfigureAwait(false);
            var names = tag is not null ? [tag] : entry.RepoTags is { Count: > 0 } repoTags ? repoTags : [defaultName];
            foreach (var name in names)
            {
                images.Add((ImageReference.Parse(name).Key, manifestDigest));
            }
        }

        return await TagAllAsync(images, cancellationToken).ConfigureAwait(false);
    }

    private async Task<byte[]> CopyBlobAsync(string dir, Descriptor descriptor, CancellationToken cancellationToken)
    {
        var digest = Digest.Parse(descriptor.Digest);
        if (!store.Blobs.Has(digest))
        {
            var source = FileInside(dir, $"blobs/sha256/{digest.Hex}") ?? throw new CorralException($"cannot import: blob {digest} is missing from the layout");

            await using var stream = File.OpenRead(source);
            await WriteBlobAsync(stream, digest, descriptor.Size, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            store.Blobs.CheckStoredSize(digest, descriptor.Size);
        }

        return descriptor.Size <= 4 << 20 ? store.Blobs.ReadAll(digest) : [];
    }

    /// <summary>A file named inside an archive or layout; ".." is refused and symlinks never lead out of it.</summary>
    private static string Inside(string dir, string relative)
    {
        _ = LayerUnpacker.SplitName(relative, "archive");
        return FileInside(dir, relative) ?? throw new CorralException($"cannot import: '{relative}' is missing from the archive or is not a file");
    }

    private static string? FileInside(string dir, string relative) =>
        LayerUnpacker.ResolveInside(dir, relative) is { } path && File.Exists(path) ? path : null;

    private static string RefFromAnnotation(Descriptor descriptor, string defaultName)
    {
        if (descriptor.Annotations?.GetValueOrDefault(RefNameAnnotation) is { Length: > 0 } name)
        {
            // ref.name is often only a tag ("latest"); a full reference has a name part.
            return name.Contains('/', StringComparison.Ordinal) || name.Contains(':', StringComparison.Ordinal) ? name : $"{defaultName.Split(':')[0]}:{name}";
        }

        return defaultName;
    }

    private static string DefaultName(string path)
    {
        var name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path))).ToLowerInvariant();
        var dot = name.IndexOf('.', StringComparison.Ordinal);
        if (dot > 0)
        {
            name = name[..dot];
        }

        var clean = new string(name.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '-').ToArray()).Trim('-');
        return $"localhost/{(clean.Length == 0 ? "image" : clean)}:latest";
    }

    private static byte[] ReadBounded(string path, long max, string what) =>
        new FileInfo(path).Length > max
            ? throw CorralException.Invalid($"cannot import: {what} is larger than {max} bytes")
            : File.ReadAllBytes(path);

    private static T ReadJson<T>(string path, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, string what)
    {
        try
        {
            return JsonSerializer.Deserialize(ReadBounded(path, MaxJsonBytes, what), type) ?? throw new CorralException($"cannot import: {what} is empty");
        }
        catch (JsonException ex)
        {
            throw new CorralException($"cannot import: {what} is not valid JSON: {ex.Message}");
        }
    }
}
