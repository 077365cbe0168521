using System.Globalization;
using Corral.Common;
using Corral.Daemon.Metrics;
using Corral.Daemon.Sandboxes;
using Corral.Supervision;

namespace Corral.Daemon.Admission;

/// <summary>A create refused because its cpus or memory do not fit next to what running sandboxes reserved.</summary>
public sealed class AdmissionRefusedException(string message) : Exception(message);

/// <summary>What running sandboxes hold: their limits summed.</summary>
public readonly record struct Reservations(int Sandboxes, double Cpus, long MemoryBytes);

/// <summary>
/// Admits a sandbox only when its cpus and memory limits fit in the host's capacity next to the
/// limits of every sandbox that has not ended. A sandbox reserves exactly its limits: one without
/// a cpus or memory limit reserves none of it (nothing is known to reserve, and the kernel does not
/// hold it to anything), so capacity is a promise only to sandboxes that state their needs.
/// </summary>
public sealed class SandboxAdmission(SandboxRegistry registry, HostCapacity capacity, DaemonMetrics? metrics = null)
{
    // Check and create are one step: two creates that each fit alone cannot both pass the check.
    private readonly Lock _gate = new();

    public HostCapacity Capacity { get; } = capacity;

    public async Task<Sandbox> CreateAsync(ContainerRequest request, IReadOnlyDictionary<string, string> labels)
    {
        ArgumentNullException.ThrowIfNull(request);
        Sandbox sandbox;
        lock (_gate)
        {
            if (Check(Capacity, Reserved(), request.Limits.Cpus ?? 0, request.Limits.MemoryBytes ?? 0) is { } refusal)
            {
                metrics?.AdmissionRefused();
                throw new AdmissionRefusedException(refusal);
            }

            // Registered (and so reserving its limits) before the lock goes; nothing slow under it.
            sandbox = registry.Create(request, labels);
        }

        // An image sandbox's shim checks its command in the image: up to seconds, and other creates go on meanwhile.
        return await registry.CompleteCreateAsync(sandbox, request.ImageLayers is not null).ConfigureAwait(false);
    }

    /// <summary>What sandboxes that have not ended reserve; ended ones have released everything they held.</summary>
    public Reservations Reserved()
    {
        var count = 0;
        var cpus = 0.0;
        var memory = 0L;
        foreach (var sandbox in registry.List())
        {
            if (sandbox.HasEnded)
            {
                continue;
            }

            var record = sandbox.Record;
            count++;
            cpus += record.Cpus ?? 0;
            memory += record.MemoryBytes ?? 0;
        }

        return new Reservations(count, cpus, memory);
    }

    /// <summary>Null when <paramref name="cpus"/> and <paramref name="memoryBytes"/> fit; else why not, in words a person can act on.</summary>
    public static string? Check(HostCapacity capacity, Reservations reserved, double cpus, long memoryBytes)
    {
        ArgumentNullException.ThrowIfNull(capacity);

        // A thousandth of a CPU of slack: 0.1 + 0.2 must fit in 0.3.
        var freeCpus = capacity.Cpus - reserved.Cpus;
        var freeMemory = capacity.MemoryBytes - reserved.MemoryBytes;
        var cpusFit = cpus <= freeCpus + 0.001;
        var memoryFit = memoryBytes <= freeMemory;
        if (cpusFit && memoryFit)
        {
            return null;
        }

        var asked = new List<string>();
        if (!cpusFit)
        {
            asked.Add(string.Create(CultureInfo.InvariantCulture, $"{cpus:0.###} cpus (free: {Math.Max(0, freeCpus):0.###} of {capacity.Cpus:0.###})"));
        }

        if (!memoryFit)
        {
            asked.Add($"{Size(memoryBytes)} memory (free: {Size(Math.Max(0, freeMemory))} of {Size(capacity.MemoryBytes)})");
        }

        var advice = cpus > capacity.Cpus + 0.001 || memoryBytes > capacity.MemoryBytes
            ? "that is more than the daemon's whole capacity: ask for less"
            : "wait until one ends, or ask for less";
        return string.Create(
            CultureInfo.InvariantCulture,
            $"not enough capacity for {string.Join(" and ", asked)}; {reserved.Sandboxes} running sandboxes reserve {reserved.Cpus:0.###} cpus and {Size(reserved.MemoryBytes)}: {advice}");
    }

    /// <summary>Exact binary units where they fit (64Mi), else one decimal (22.9Gi).</summary>
    private static string Size(long bytes) => bytes switch
    {
        0 => "0",
        _ when ByteSize.Format(bytes) is var exact && !char.IsDigit(exact[^1]) => exact,
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):0.0}Gi"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):0.0}Mi"),
        _ => ByteSize.Format(bytes),
    };
}
