namespace Corral.Daemon.Admission;

/// <summary>What the daemon may hand out to sandboxes; unset values are read from the host.</summary>
public sealed class AdmissionOptions
{
    /// <summary>CPUs sandboxes may reserve in all (default: the CPUs this process may run on).</summary>
    public double? CapacityCpus { get; set; }

    /// <summary>Memory sandboxes may reserve in all (default: MemTotal from /proc/meminfo less <see cref="MemoryReserveBytes"/>).</summary>
    public long? CapacityMemoryBytes { get; set; }

    /// <summary>Kept back from the host's memory for the host itself; ignored with <see cref="CapacityMemoryBytes"/>.</summary>
    public long MemoryReserveBytes { get; set; }
}
