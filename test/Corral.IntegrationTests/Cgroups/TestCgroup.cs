using Corral.Cgroups;
using Shouldly;

namespace Corral.IntegrationTests.Cgroups;

/// <summary>A real container cgroup under Corral's parent with a unique id, removed on dispose even when a test fails.</summary>
internal sealed class TestCgroup : IDisposable
{
    private TestCgroup(ICgroupDriver driver, IContainerCgroup cgroup)
    {
        Driver = driver;
        Cgroup = cgroup;
        Directories = ControllerDirectories(driver, cgroup.ContainerId);
    }

    public ICgroupDriver Driver { get; }

    public IContainerCgroup Cgroup { get; }

    public IReadOnlyList<string> Directories { get; }

    public static string NewId() => "it-" + Guid.NewGuid().ToString("N")[..12];

    public static ICgroupDriver DetectDriver() =>
        CgroupDetector.DetectHost().ShouldNotBeNull("these tests need a cgroup memory controller (run as root on Linux)");

    public static TestCgroup Create(ResourceLimits limits)
    {
        var driver = DetectDriver();
        return new TestCgroup(driver, driver.Create(NewId(), limits));
    }

    /// <summary>Every controller directory the container's cgroup has (v1: one per hierarchy).</summary>
    public static IReadOnlyList<string> ControllerDirectories(ICgroupDriver driver, string id) => driver switch
    {
        CgroupV1Driver v1 => v1.PathsFor(id).Directories,
        CgroupV2Driver v2 => [Path.Combine(v2.Root, CgroupV1Driver.DefaultParent, id)],
        _ => [],
    };

    /// <summary>Creates a child cgroup in every controller (what runc does with cgroupsPath) and returns its procs files.</summary>
    public IReadOnlyList<string> CreateChild(string name)
    {
        var dirs = Cgroup.Version == CgroupVersion.V1 ? Directories : [Cgroup.MemoryDirectory];
        var files = new List<string>();
        foreach (var dir in dirs)
        {
            var child = Path.Combine(dir, name);
            Directory.CreateDirectory(child);
            files.Add(Path.Combine(child, "cgroup.procs"));
        }

        return files;
    }

    public void Dispose()
    {
        try
        {
            Cgroup.Remove();
        }
        finally
        {
            foreach (var dir in Directories)
            {
                Directory.Exists(dir).ShouldBeFalse($"test cgroup left behind: {dir}");
            }
        }
    }
}
