using Corral.Cgroups;
using Corral.Networking;
using Corral.Rootfs;
using Corral.Runtimes;

namespace Corral.Supervision;

/// <summary>What a caller asks Corral to run.</summary>
public sealed record ContainerRequest
{
    /// <summary>Container id; generated when null.</summary>
    public string? Id { get; init; }

    public RuntimeKind Runtime { get; init; } = RuntimeKind.Gvisor;

    /// <summary>
    /// Root filesystem directory, never written: the container writes to a copy-on-write layer of its own
    /// above it (see <see cref="ReadOnlyRoot"/>); with <see cref="ImageLayers"/>, only a name for logs.
    /// </summary>
    public required string Rootfs { get; init; }

    /// <summary>
    /// An image's unpacked layer directories, bottom first: the lower layers of the container's overlay.
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

    /// <summary>
    /// `--read-only`: the root as it is, unwritable, with a tmpfs /tmp (a root filesystem directory is
    /// then used without an overlay). Default: writable, each container its own copy-on-write layer.
    /// </summary>
    public bool ReadOnlyRoot { get; init; }

    /// <summary>The root is an overlay (of the image's layers, or of a writable directory's): everything but a --read-only directory.</summary>
    public bool HasOverlayRoot => ImageLayers is not null || !ReadOnlyRoot;

    /// <summary>`--disk`: the most the container can write to its root (ENOSPC beyond); null: no cap but the host disk's.</summary>
    public long? DiskBytes { get; init; }

    /// <summary>Bind and tmpfs mounts (`-v`, `--tmpfs`), after the defaults.</summary>
    public IReadOnlyList<MountRequest> Mounts { get; init; } = [];

    /// <summary>`--user`: name or uid[:gid|group], looked up in the container's own /etc/passwd and /etc/group; null: root (or the image's User).</summary>
    public string? User { get; init; }

    /// <summary>
    /// Where the container's writable root lives when it must outlive the run (a daemon sandbox's files,
    /// read until the sandbox is removed): the caller removes it with <see cref="WritableRoot.Remove"/>.
    /// Null: in the bundle, removed with the container.
    /// </summary>
    public string? KeptRootDir { get; init; }
}
