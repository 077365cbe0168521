using Corral.Cgroups;
using Shouldly;
using Xunit;

namespace Corral.Tests.Cgroups;

public sealed class CgroupDetectorTests
{
    // /proc/self/mountinfo of the development machine: v1 controllers, an empty cgroup2 at unified.
    private const string HybridV1 = """
        22 27 0:21 / /proc rw,relatime - proc proc rw
        23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
        24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,nr_inodes=3083623,mode=755
        27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
        33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
        34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
        37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
        38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """;

    private const string PureV2 = """
        22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
        27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
        31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
        """;

    [Fact]
    public void Hybrid_host_with_the_v1_memory_controller_gets_the_v1_driver()
    {
        var fs = new FakeCgroupFileSystem();
        fs["/sys/fs/cgroup/unified/cgroup.controllers"] = "\n";

        var driver = new CgroupDetector(fs).Detect(HybridV1).ShouldBeOfType<CgroupV1Driver>();

        driver.Version.ShouldBe(CgroupVersion.V1);
        driver.Mounts.ShouldBe(new CgroupV1Mounts("/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/pids") { Others = driver.Mounts.Others });
        driver.Mounts.Others.ShouldBe(["/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/devices", "/sys/fs/cgroup/freezer", "/sys/fs/cgroup/blkio", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]);
        driver.PathsFor("x").RuntimeOnly.ShouldContain("/sys/fs/cgroup/unified/corral/x");
        driver.PathsFor("x").Memory.ShouldBe("/sys/fs/cgroup/memory/corral/x");
    }

    [Fact]
    public void Pure_v2_with_memory_in_the_root_controllers_gets_the_v2_driver()
    {
        var fs = new FakeCgroupFileSystem();
        fs["/sys/fs/cgroup/cgroup.controllers"] = "cpuset cpu io memory hugetlb pids\n";

        var driver = new CgroupDetector(fs).Detect(PureV2).ShouldBeOfType<CgroupV2Driver>();

        driver.Root.ShouldBe("/sys/fs/cgroup");
    }

    [Fact]
    public void Parent_name_is_configurable()
    {
        var fs = new FakeCgroupFileSystem();
        var driver = new CgroupDetector(fs, parentName: "other").Detect(HybridV1).ShouldBeOfType<CgroupV1Driver>();
        driver.PathsFor("x").Memory.ShouldBe("/sys/fs/cgroup/memory/other/x");
    }

    [Fact]
    public void No_memory_controller_anywhere_gives_null()
    {
        var fs = new FakeCgroupFileSystem();
        fs["/sys/fs/cgroup/cgroup.controllers"] = "cpu pids\n";
        var withoutV1Memory = string.Join('\n', HybridV1.Split('\n').Where(l => !l.Contains("memory", StringComparison.Ordinal)));

        new CgroupDetector(fs).Detect(PureV2).ShouldBeNull();
        new CgroupDetector(fs).Detect(withoutV1Memory).ShouldBeNull();
        new CgroupDetector(fs).Detect("").ShouldBeNull();
    }

    [Fact]
    public void Detect_reads_mountinfo_through_its_seam()
    {
        var fs = new FakeCgroupFileSystem();
        new CgroupDetector(fs, readMountInfo: () => HybridV1).Detect().ShouldBeOfType<CgroupV1Driver>();
    }

    [Fact]
    public void Mountinfo_parsing_unescapes_mount_points()
    {
        var entry = MountInfo.Parse("50 31 0:40 / /mnt/my\\040cgroup rw - cgroup cgroup rw,memory,cpu").ShouldHaveSingleItem();
        entry.MountPoint.ShouldBe("/mnt/my cgroup");
        entry.FileSystemType.ShouldBe("cgroup");
        entry.SuperOptions.ShouldBe(["rw", "memory", "cpu"]);
    }
}
