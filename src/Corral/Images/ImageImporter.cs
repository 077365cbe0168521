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

    /// <summary>Imports <paramref name="path"/>; returns the refs it tagged.</summary>
    public async Task<IReadOnlyList<string>> ImportAsync(string path, string? tag, CancellationToken cancellationToken = default)
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
                await LayerUnpacker.UnpackAsync(archive, temp, WhiteoutMode.Delete, cancellationToken).ConfigureAwait(false);
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

        var tagged = new List<string>();
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
            var reference = ImageReference.Parse(name).Key;
            store.Tag(reference, Digest.Parse(descriptor.Digest));
            tagged.Add(reference);
        }

        return tagged;
    }

    private async Task<IReadOnlyList<string>> ImportDockerArchiveAsync(string dir, string? tag, string defaultName, CancellationToken cancellationToken)
    {
        var entries = ReadJson(Inside(dir, "manifest.json"), ImageJsonContext.Default.ListDockerArchiveEntry, "manifest.json");
        if (entries.Count == 0)
        {
            throw new CorralException("cannot import: the archive's manifest.json lists no images");
        }

        var tagged = new List<string>();
        foreach (var entry in tag is null ? entries : entries.Take(1))
        {
            var configBytes = await File.ReadAllBytesAsync(Inside(dir, entry.Config), cancellationToken).ConfigureAwait(false);
            var configDigest = Digest.Of(configBytes);
            await store.Blobs.WriteAsync(configBytes, configDigest, cancellationToken).ConfigureAwait(false);
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
                    await store.Blobs.WriteAsync(stream, digest, size, cancellationToken).ConfigureAwait(false);
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
            await store.Blobs.WriteAsync(manifestBytes, manifestDigest, cancellationToken).ConfigureAwait(false);
            var names = tag is not null ? [tag] : entry.RepoTags is { Count: > 0 } repoTags ? repoTags : [defaultName];
            foreach (var name in names)
            {
                var reference = ImageReference.Parse(name).Key;
                store.Tag(reference, manifestDigest);
                tagged.Add(reference);
            }
        }

        return tagged;
    }

    private async Task<byte[]> CopyBlobAsync(string dir, Descriptor descriptor, CancellationToken cancellationToken)
    {
        var digest = Digest.Parse(descriptor.Digest);
        if (!store.Blobs.Has(digest))
        {
            var source = FileInside(dir, $"blobs/sha256/{digest.Hex}") ?? throw new CorralException($"cannot import: blob {digest} is missing from the layout");

            await using var stream = File.OpenRead(source);
            await store.Blobs.WriteAsync(stream, digest, descriptor.Size, cancellationToken).ConfigureAwait(false);
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

    private static T ReadJson<T>(string path, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, string what)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), type) ?? throw new CorralException($"cannot import: {what} is empty");
        }
        catch (JsonException ex)
        {
            throw new CorralException($"cannot import: {what} is not valid JSON: {ex.Message}");
        }
    }
}
