using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Corral.Cgroups;

/// <summary>Picks the cgroup driver for this host from its mounts; null when no memory controller is usable.</summary>
public sealed class CgroupDetector(
    ICgroupFileSystem fs,
    ILoggerFactory? loggerFactory = null,
    string parentName = CgroupV1Driver.DefaultParent,
    Func<string>? readMountInfo = null)
{
    private readonly ILoggerFactory _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
    private readonly Func<string> _readMountInfo = readMountInfo ?? (() => File.ReadAllText(MountInfo.SelfPath));

    public static ICgroupDriver? DetectHost(ILoggerFactory? loggerFactory = null, string parentName = CgroupV1Driver.DefaultParent) =>
        new CgroupDetector(RealCgroupFileSystem.Instance, loggerFactory, parentName).Detect();

    public ICgroupDriver? Detect() => Detect(_readMountInfo());

    public ICgroupDriver? Detect(string mountInfo)
    {
        var logger = _loggerFactory.CreateLogger("Corral.Cgroups");
        var mounts = MountInfo.Parse(mountInfo);

        // Pure v2 first: /sys/fs/cgroup itself, then any other cgroup2 mount that owns the memory controller.
        var v2Mounts = mounts
            .Where(m => m.FileSystemType == "cgroup2")
            .OrderBy(m => m.MountPoint == CgroupV2Driver.DefaultRoot ? 0 : 1)
            .Select(m => m.MountPoint);
        foreach (var mountPoint in v2Mounts)
        {
            if (HasMemoryController(mountPoint))
            {
                logger.CgroupDriverDetected(CgroupVersion.V2, mountPoint);
                return new CgroupV2Driver(mountPoint, fs, _loggerFactory.CreateLogger<CgroupV2Driver>(), parentName);
            }
        }

        if (CgroupV1Mounts.FromMountInfo(mounts) is { } v1)
        {
            logger.CgroupDriverDetected(CgroupVersion.V1, v1.Memory);
            return new CgroupV1Driver(v1, fs, _loggerFactory.CreateLogger<CgroupV1Driver>(), parentName);
        }

        logger.CgroupUnavailable("neither a cgroup2 mount with the memory controller nor a cgroup v1 memory mount");
        return null;
    }

    private bool HasMemoryController(string mountPoint)
    {
        var file = Path.Combine(mountPoint, "cgroup.controllers");
        try
        {
            return fs.FileExists(file)
                && fs.ReadAllText(file).Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Contains("memory");
        }
        catch (IOException)
        {
            return false;
        }
    }
}
