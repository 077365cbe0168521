using System.Globalization;
using Corral.Common;

namespace Corral.Oci;

/// <summary>
/// The host's NVIDIA device nodes as OCI devices, so a runc container (created and allowed in the
/// device cgroup) or a gVisor sandbox with nvproxy sees the GPUs. Majors come from /proc/devices,
/// minors follow the driver's fixed layout (nvidiaN = N, nvidiactl = 255, nvidia-uvm = 0,
/// nvidia-uvm-tools = 1), the same rules the NVIDIA container toolkit uses.
/// </summary>
public static class GpuDevices
{
    public static IReadOnlyList<DeviceSpec> Discover() =>
        Discover(File.Exists("/proc/devices") ? File.ReadAllText("/proc/devices") : string.Empty, Directory.Exists("/dev") ? Directory.GetFiles("/dev", "nvidia*") : []);

    public static IReadOnlyList<DeviceSpec> Discover(string procDevices, IEnumerable<string> devNodes)
    {
        var majors = procDevices.Split('\n')
            .Select(line => line.Trim().Split(' ', 2, StringSplitOptions.RemoveEmptyEntries))
            .Where(parts => parts.Length == 2 && int.TryParse(parts[0], CultureInfo.InvariantCulture, out _))
            .GroupBy(parts => parts[1])
            .ToDictionary(g => g.Key, g => long.Parse(g.First()[0], CultureInfo.InvariantCulture));
        long? frontend = majors.TryGetValue("nvidia-frontend", out var f) ? f : majors.TryGetValue("nvidia", out var n) ? n : null;
        long? uvm = majors.TryGetValue("nvidia-uvm", out var u) ? u : null;

        var devices = new List<DeviceSpec>();
        foreach (var path in devNodes.Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(path);
            (long? major, long minor) = name switch
            {
                "nvidiactl" => (frontend, 255L),
                "nvidia-uvm" => (uvm, 0L),
                "nvidia-uvm-tools" => (uvm, 1L),
                _ when name.Length > 6 && long.TryParse(name.AsSpan(6), CultureInfo.InvariantCulture, out var index) => (frontend, index),
                _ => (null, 0L),
            };
            if (major is { } m)
            {
                devices.Add(new DeviceSpec(path, "c", m, minor, FileMode: 438u, Uid: 0, Gid: 0));
            }
        }

        if (!devices.Any(d => d.Path == "/dev/nvidiactl") || !devices.Any(d => d.Minor != 255 && d.Major == frontend))
        {
            throw CorralException.Precondition("--gpu: no NVIDIA GPU on this host (need /dev/nvidiactl and /dev/nvidiaN, and the nvidia driver in /proc/devices)");
        }

        return devices;
    }
}
