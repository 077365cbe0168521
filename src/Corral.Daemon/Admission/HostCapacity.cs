using System.Globalization;
using Corral.Common;

namespace Corral.Daemon.Admission;

/// <summary>The CPUs and memory the daemon admits sandboxes against.</summary>
public sealed record HostCapacity(double Cpus, long MemoryBytes)
{
    public const string MeminfoPath = "/proc/meminfo";

    /// <summary>The options' values where given, else the host's: CPUs this process may use, MemTotal less the reserve.</summary>
    public static HostCapacity Detect(AdmissionOptions options, Func<string> readMeminfo)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(readMeminfo);

        // ProcessorCount honours the affinity mask and the cgroup CPU quota the daemon runs under.
        var cpus = options.CapacityCpus ?? Environment.ProcessorCount;
        var memory = options.CapacityMemoryBytes ?? Math.Max(0, ParseMemTotal(readMeminfo()) - options.MemoryReserveBytes);
        return new HostCapacity(cpus, memory);
    }

    public static HostCapacity Detect(AdmissionOptions options) => Detect(options, () => File.ReadAllText(MeminfoPath));

    /// <summary>MemTotal in bytes from the text of /proc/meminfo ("MemTotal:  16314444 kB").</summary>
    public static long ParseMemTotal(string meminfo)
    {
        ArgumentNullException.ThrowIfNull(meminfo);
        foreach (var line in meminfo.Split('\n'))
        {
            if (!line.StartsWith("MemTotal:", StringComparison.Ordinal))
            {
                continue;
            }

            var parts = line["MemTotal:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && parts[1] == "kB" && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var kib))
            {
                return kib * 1024;
            }

            throw CorralException.Host($"cannot read the host's memory: unexpected MemTotal line '{line.Trim()}' in {MeminfoPath}");
        }

        throw CorralException.Host($"cannot read the host's memory: no MemTotal in {MeminfoPath}; give --capacity-memory");
    }
}
