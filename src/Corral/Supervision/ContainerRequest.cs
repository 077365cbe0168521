using Corral.Cgroups;
using Corral.Runtimes;

namespace Corral.Supervision;

/// <summary>What a caller asks Corral to run.</summary>
public sealed record ContainerRequest
{
    /// <summary>Container id; generated when null.</summary>
    public string? Id { get; init; }

    public RuntimeKind Runtime { get; init; } = RuntimeKind.Gvisor;

    /// <summary>Root filesystem directory, used read-only.</summary>
    public required string Rootfs { get; init; }

    public required IReadOnlyList<string> Command { get; init; }

    public IReadOnlyList<KeyValuePair<string, string>> Env { get; init; } = [];

    public string? Workdir { get; init; }

    /// <summary>Kill the container after this long.</summary>
    public TimeSpan? Timeout { get; init; }

    public ResourceLimits Limits { get; init; } = ResourceLimits.None;

    public bool Gpu { get; init; }
}
