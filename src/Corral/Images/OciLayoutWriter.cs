using System.Text.Json;

namespace Corral.Images;

/// <summary>Writes a single-image OCI image layout from layer files: what `corral import` reads and skopeo pushes.</summary>
public static class OciLayoutWriter
{
    /// <summary>Writes <paramref name="dir"/> with one image tagged <paramref name="tag"/>; returns its manifest digest.</summary>
    /// <param name="layers">Layer files (tar or tar+gzip), bottom first.</param>
    public static Digest Write(string dir, string tag, IReadOnlyList<string> layers, ContainerConfig? config = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        var blobs = Path.Combine(dir, "blobs", "sha256");
        Directory.CreateDirectory(blobs);
        var descriptors = new List<Descriptor>();
        var diffIds = new List<string>();
        foreach (var layer in layers)
        {
            Digest digest;
            Digest diffId;
            bool gzip;
            using (var file = File.OpenRead(layer))
            {
                gzip = file.ReadByte() == 0x1f && file.ReadByte() == 0x8b;
                file.Position = 0;
                using var hashing = new HashingStream(file, leaveOpen: true);
                hashing.Drain();
                digest = hashing.Digest();
                file.Position = 0;
                using var raw = new HashingStream(gzip ? new System.IO.Compression.GZipStream(file, System.IO.Compression.CompressionMode.Decompress, leaveOpen: true) : file, leaveOpen: !gzip);
                raw.Drain();
                diffId = raw.Digest();
            }

            File.Copy(layer, Path.Combine(blobs, digest.Hex), overwrite: true);
            descriptors.Add(new Descriptor { MediaType = gzip ? MediaTypes.OciLayerGzip : MediaTypes.OciLayerTar, Digest = digest.ToString(), Size = new FileInfo(layer).Length });
            diffIds.Add(diffId.ToString());
        }

        var configFile = new ImageConfigFile
        {
            Architecture = PlatformSelector.HostArchitecture,
            Os = "linux",
            Config = config ?? new ContainerConfig(),
            Rootfs = new RootfsDiffs { Type = "layers", DiffIds = diffIds },
        };
        var configDescriptor = WriteBlob(blobs, JsonSerializer.SerializeToUtf8Bytes(configFile, ImageJsonContext.Default.ImageConfigFile), MediaTypes.OciConfig);
        var manifest = new ImageManifest { SchemaVersion = 2, MediaType = MediaTypes.OciManifest, Config = configDescriptor, Layers = descriptors };
        var manifestDescriptor = WriteBlob(blobs, JsonSerializer.SerializeToUtf8Bytes(manifest, ImageJsonContext.Default.ImageManifest), MediaTypes.OciManifest) with
        {
            Annotations = new() { ["org.opencontainers.image.ref.name"] = tag },
        };
        var index = new ImageIndex { SchemaVersion = 2, MediaType = MediaTypes.OciIndex, Manifests = [manifestDescriptor] };
        File.WriteAllBytes(Path.Combine(dir, "index.json"), JsonSerializer.SerializeToUtf8Bytes(index, ImageJsonContext.Default.ImageIndex));
        File.WriteAllText(Path.Combine(dir, "oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
        return Digest.Parse(manifestDescriptor.Digest);
    }

    private static Descriptor WriteBlob(string blobs, byte[] content, string mediaType)
    {
        var digest = Digest.Of(content);
        File.WriteAllBytes(Path.Combine(blobs, digest.Hex), content);
        return new Descriptor { MediaType = mediaType, Digest = digest.ToString(), Size = content.Length };
    }
}
