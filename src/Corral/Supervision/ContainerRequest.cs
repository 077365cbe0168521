using Corral.Cgroups;
using Corral.Networking;
using Corral.Runtimes;

namespace Corral.Supervision;

/// <summary>What a caller asks Corral to run.</summary>
public sealed record ContainerRequest
{
    /// <summary>Container id; generated when null.</summary>
    public string? Id { get; init; }

    public RuntimeKind Runtime { get; init; } = RuntimeKind.Gvisor;

    /// <summary>Root filesystem directory, used read-only; with <see cref="ImageLayers"/>, only a name for logs.</summary>
    public required string Rootfs { get; init; }

    /// <summary>
    /// An image's unpacked layer directories, bottom first: the root filesystem is then an overlay
    /// of them mounted in the bundle (upper and work directories there too), removed with the container.
    /// </summary>
    public IReadOnlyList<string>? ImageLayers { get; init; }

    public required IReadOnlyList<string> Command { get; init; }

    public IReadOnlyList<KeyValuePair<string, string>> Env { get; init; } = [];

    public string? Workdir { get; init; }

    /// <summary>Kill the container after this long.</summary>
    public TimeSpan? Timeout { get; init; }

    public ResourceLimits Limits { get; init; } = ResourceLimits.None;

    public bool Gpu { get; init; }

    /// <summary>none (loopback only, the default) or a bridged namespace with ports and an egress policy.</summary>
    public NetworkRequest Network { get; init; } = NetworkRequest.Disabled;
}
