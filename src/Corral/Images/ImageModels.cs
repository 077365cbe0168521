using System.Text.Json;
using System.Text.Json.Serialization;

namespace Corral.Images;

/// <summary>The media types Corral reads.</summary>
public static class MediaTypes
{
    public const string OciManifest = "application/vnd.oci.image.manifest.v1+json";
    public const string OciIndex = "application/vnd.oci.image.index.v1+json";
    public const string OciConfig = "application/vnd.oci.image.config.v1+json";
    public const string OciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    public const string OciLayerTar = "application/vnd.oci.image.layer.v1.tar";
    public const string OciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    public const string DockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
    public const string DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";
    public const string DockerConfig = "application/vnd.docker.container.image.v1+json";
    public const string DockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    public static bool IsIndex(string? mediaType) => mediaType is OciIndex or DockerManifestList;

    public static bool IsManifest(string? mediaType) => mediaType is OciManifest or DockerManifest;
}

public sealed record Descriptor
{
    public string MediaType { get; init; } = "";

    public string Digest { get; init; } = "";

    public long Size { get; init; }

    public Platform? Platform { get; init; }

    public Dictionary<string, string>? Annotations { get; init; }
}

public sealed record Platform
{
    public string Architecture { get; init; } = "";

    public string Os { get; init; } = "";

    public string? Variant { get; init; }
}

/// <summary>An OCI image manifest or a Docker v2 schema 2 manifest (the same shape).</summary>
public sealed record ImageManifest
{
    public int SchemaVersion { get; init; }

    public string? MediaType { get; init; }

    public Descriptor Config { get; init; } = new();

    public List<Descriptor> Layers { get; init; } = [];
}

/// <summary>An OCI image index or a Docker manifest list; also an OCI layout's index.json.</summary>
public sealed record ImageIndex
{
    public int SchemaVersion { get; init; }

    public string? MediaType { get; init; }

    public List<Descriptor> Manifests { get; init; } = [];
}

/// <summary>Only what a shape probe needs: which media type, and which list a document has.</summary>
public sealed record ManifestProbe
{
    public string? MediaType { get; init; }

    public JsonElement? Manifests { get; init; }

    public JsonElement? Layers { get; init; }
}

public sealed record ImageConfigFile
{
    public string? Architecture { get; init; }

    public string? Os { get; init; }

    public ContainerConfig? Config { get; init; }

    public RootfsDiffs? Rootfs { get; init; }
}

public sealed record ContainerConfig
{
    [JsonPropertyName("Env")]
    public List<string>? Env { get; init; }

    [JsonPropertyName("Entrypoint")]
    public List<string>? Entrypoint { get; init; }

    [JsonPropertyName("Cmd")]
    public List<string>? Cmd { get; init; }

    [JsonPropertyName("WorkingDir")]
    public string? WorkingDir { get; init; }

    [JsonPropertyName("User")]
    public string? User { get; init; }
}

public sealed record RootfsDiffs
{
    public string? Type { get; init; }

    [JsonPropertyName("diff_ids")]
    public List<string> DiffIds { get; init; } = [];
}

/// <summary>One entry of a `docker save` archive's manifest.json.</summary>
public sealed record DockerArchiveEntry
{
    [JsonPropertyName("Config")]
    public string Config { get; init; } = "";

    [JsonPropertyName("RepoTags")]
    public List<string>? RepoTags { get; init; }

    [JsonPropertyName("Layers")]
    public List<string> Layers { get; init; } = [];
}

/// <summary>The store's ref index: name:tag to manifest digest.</summary>
public sealed record RefIndex
{
    public SortedDictionary<string, ImageRecord> Refs { get; init; } = new(StringComparer.Ordinal);
}

public sealed record ImageRecord
{
    public string Manifest { get; init; } = "";

    public long Size { get; init; }

    public DateTimeOffset CreatedAt { get; init; }
}

/// <summary>docker-style config.json: only `auths`.</summary>
public sealed record DockerConfigFile
{
    public Dictionary<string, DockerAuth>? Auths { get; init; }
}

public sealed record DockerAuth
{
    public string? Auth { get; init; }

    public string? Username { get; init; }

    public string? Password { get; init; }
}

public sealed record TokenResponse
{
    public string? Token { get; init; }

    [JsonPropertyName("access_token")]
    public string? AccessToken { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, PropertyNameCaseInsensitive = true)]
[JsonSerializable(typeof(ImageManifest))]
[JsonSerializable(typeof(ImageIndex))]
[JsonSerializable(typeof(ManifestProbe))]
[JsonSerializable(typeof(ImageConfigFile))]
[JsonSerializable(typeof(List<DockerArchiveEntry>))]
[JsonSerializable(typeof(RefIndex))]
[JsonSerializable(typeof(DockerConfigFile))]
[JsonSerializable(typeof(TokenResponse))]
public sealed partial class ImageJsonContext : JsonSerializerContext;
