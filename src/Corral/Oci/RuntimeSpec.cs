using System.Text.Json.Serialization;

namespace Corral.Oci;

/// <summary>The subset of the OCI runtime spec (config.json) Corral writes.</summary>
public sealed record RuntimeSpec
{
    public string OciVersion { get; init; } = "1.0.2";

    public required ProcessSpec Process { get; init; }

    public required RootSpec Root { get; init; }

    public string Hostname { get; init; } = "corral";

    public IReadOnlyList<MountSpec> Mounts { get; init; } = [];

    public required LinuxSpec Linux { get; init; }

    public IReadOnlyDictionary<string, string>? Annotations { get; init; }
}

public sealed record ProcessSpec
{
    public bool Terminal { get; init; }

    public UserSpec User { get; init; } = new();

    public required IReadOnlyList<string> Args { get; init; }

    public IReadOnlyList<string> Env { get; init; } = [];

    public string Cwd { get; init; } = "/";

    public CapabilitiesSpec? Capabilities { get; init; }

    public IReadOnlyList<RlimitSpec> Rlimits { get; init; } = [];

    public bool NoNewPrivileges { get; init; } = true;
}

public sealed record UserSpec
{
    public uint Uid { get; init; }

    public uint Gid { get; init; }

    public IReadOnlyList<uint>? AdditionalGids { get; init; }
}

public sealed record CapabilitiesSpec
{
    public IReadOnlyList<string> Bounding { get; init; } = [];

    public IReadOnlyList<string> Effective { get; init; } = [];

    public IReadOnlyList<string> Permitted { get; init; } = [];

    public IReadOnlyList<string> Ambient { get; init; } = [];
}

public sealed record RlimitSpec(string Type, ulong Hard, ulong Soft);

public sealed record RootSpec(string Path, bool Readonly);

public sealed record MountSpec(string Destination, string Type, string Source, IReadOnlyList<string>? Options = null);

public sealed record LinuxSpec
{
    public IReadOnlyList<NamespaceSpec> Namespaces { get; init; } = [];

    public string? CgroupsPath { get; init; }

    public ResourcesSpec? Resources { get; init; }

    public IReadOnlyList<DeviceSpec>? Devices { get; init; }

    public IReadOnlyList<string> MaskedPaths { get; init; } = [];

    public IReadOnlyList<string> ReadonlyPaths { get; init; } = [];
}

public sealed record NamespaceSpec(string Type, string? Path = null);

public sealed record ResourcesSpec
{
    public IReadOnlyList<DeviceCgroupSpec> Devices { get; init; } = [];
}

public sealed record DeviceCgroupSpec(bool Allow, string Access, string? Type = null, long? Major = null, long? Minor = null);

public sealed record DeviceSpec(string Path, string Type, long Major, long Minor, uint? FileMode = null, uint? Uid = null, uint? Gid = null);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    WriteIndented = true)]
[JsonSerializable(typeof(RuntimeSpec))]
[JsonSerializable(typeof(ProcessSpec))]
internal sealed partial class OciJsonContext : JsonSerializerContext;
