using Corral.Daemon.Sandboxes;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Corral.Daemon.Hosting;

/// <summary>grpc.health.v1: SERVING while the daemon accepts sandboxes, NOT_SERVING once it shuts down.</summary>
internal sealed class SandboxRegistryHealthCheck(SandboxRegistry registry) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(registry.IsStopping
            ? HealthCheckResult.Unhealthy("the daemon is shutting down")
            : HealthCheckResult.Healthy($"{registry.Count} sandboxes"));
}
