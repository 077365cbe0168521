using Corral.Cgroups;
using Corral.Common;
using Corral.Daemon.Sandboxes;
using Corral.Supervision;

namespace Corral.Daemon.Stats;

/// <summary>A running sandbox's cgroup counters, read when asked.</summary>
public sealed class SandboxStatsReader(SandboxRegistry registry, ContainerSupervisor supervisor)
{
    public CgroupStats Read(string id)
    {
        var sandbox = registry.Get(id);
        ThrowIfEnded(sandbox);
        CgroupStats? stats;
        try
        {
            stats = supervisor.ReadStats(id);
        }
        catch (IOException)
        {
            // The cgroup went away under the read: the sandbox ended meanwhile.
            ThrowIfEnded(sandbox);
            throw;
        }

        if (stats is null)
        {
            ThrowIfEnded(sandbox);
            throw sandbox.Record.Status == SandboxStatus.Created
                ? CorralException.Precondition($"sandbox {id} has no cgroup yet: it is still starting; ask again once it runs")
                : CorralException.Precondition($"sandbox {id} has no cgroup to read: it is ending, or the daemon's host has no usable cgroup hierarchy");
        }

        return stats;
    }

    private static void ThrowIfEnded(Sandbox sandbox)
    {
        if (sandbox.HasEnded)
        {
            throw CorralException.Precondition($"sandbox {sandbox.Id} has ended: its exit record (Wait, Inspect) has its peak memory and cpu time");
        }
    }
}
