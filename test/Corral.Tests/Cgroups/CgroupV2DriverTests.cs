using Corral.Cgroups;
using Corral.Common;
using Microsoft.Extensions.Logging.Abstractions;
using Shouldly;
using Xunit;

namespace Corral.Tests.Cgroups;

public sealed class CgroupV2DriverTests
{
    private const string Root = "/sys/fs/cgroup";
    private const string Parent = "/sys/fs/cgroup/corral";
    private const string Dir = "/sys/fs/cgroup/corral/c1";

    private readonly FakeCgroupFileSystem _fs = NewFileSystem("cpuset cpu io memory hugetlb pids");

    internal static FakeCgroupFileSystem NewFileSystem(string rootControllers)
    {
        var fs = new FakeCgroupFileSystem();
        fs[$"{Root}/cgroup.controllers"] = rootControllers + "\n";
        fs[$"{Root}/cgroup.subtree_control"] = "";
        fs.Template = dir =>
        {
            // A child offers what its parent enabled for it.
            var offered = fs.ReadAllText(Path.Combine(Path.GetDirectoryName(dir)!, "cgroup.subtree_control")).Trim();
            var files = new Dictionary<string, string>
            {
                ["cgroup.controllers"] = offered,
                ["cgroup.subtree_control"] = "",
                ["cgroup.procs"] = "",
                ["cgroup.kill"] = "",
                ["cgroup.events"] = "populated 0\nfrozen 0\n",
            };
            if (offered.Contains("memory", StringComparison.Ordinal))
            {
                files["memory.max"] = "max";
                files["memory.swap.max"] = "max";
                files["memory.current"] = "0";
                files["memory.events"] = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n";
            }

            if (offered.Contains("cpu", StringComparison.Ordinal))
            {
                files["cpu.max"] = "max 100000";
            }

            if (offered.Contains("pids", StringComparison.Ordinal))
            {
                files["pids.max"] = "max";
                files["pids.current"] = "0";
            }

            files["cpu.stat"] = "usage_usec 0\nuser_usec 0\nsystem_usec 0\n";
            return files;
        };
        return fs;
    }

    private CgroupV2Driver Driver(IProcessSignaller? signaller = null) =>
        new(Root, _fs, NullLogger.Instance, signaller: signaller ?? new FakeSignaller(_fs, []));

    [Fact]
    public void Create_enables_controllers_down_the_tree_and_puts_the_runtime_in_a_leaf()
    {
        var cg = Driver().Create("c1", ResourceLimits.None);

        cg.Version.ShouldBe(CgroupVersion.V2);
        cg.MemoryDirectory.ShouldBe(Dir);
        cg.ProcsFiles.ShouldBe([$"{Dir}/runtime/cgroup.procs"]);
        cg.RuntimeCgroupsPath.ShouldBe("/corral/c1/ctr");
        _fs.WritesTo($"{Root}/cgroup.subtree_control").ShouldBe(["+memory +cpu +pids"]);
        _fs.WritesTo($"{Parent}/cgroup.subtree_control").ShouldBe(["+memory +cpu +pids"]);
        _fs.WritesTo($"{Dir}/cgroup.subtree_control").ShouldBe(["+memory +cpu +pids"]);
        _fs.DirectoryExists($"{Dir}/runtime").ShouldBeTrue();
    }

    [Theory]
    [InlineData(0.5, "50000 100000")]
    [InlineData(2.0, "200000 100000")]
    public void Create_writes_memory_with_swap_off_cpu_max_and_pids(double cpus, string cpuMax)
    {
        Driver().Create("c1", new ResourceLimits(64L << 20, cpus, 100));

        _fs.WritesTo($"{Dir}/memory.max").ShouldBe(["67108864"]);
        _fs.WritesTo($"{Dir}/memory.swap.max").ShouldBe(["0"]);
        _fs.WritesTo($"{Dir}/cpu.max").ShouldBe([cpuMax]);
        _fs.WritesTo($"{Dir}/pids.max").ShouldBe(["100"]);

        // Limits go on the container cgroup before its children exist.
        _fs.Writes.FindIndex(w => w.Path == $"{Dir}/memory.max")
            .ShouldBeLessThan(_fs.Writes.FindIndex(w => w.Path == $"{Dir}/cgroup.subtree_control"));
    }

    [Fact]
    public void Only_available_controllers_are_enabled_and_a_missing_one_that_is_needed_fails()
    {
        var fs = NewFileSystem("memory pids");
        var driver = new CgroupV2Driver(Root, fs, NullLogger.Instance);
        driver.Create("c1", new ResourceLimits(MemoryBytes: 1 << 20));
        fs.WritesTo($"{Root}/cgroup.subtree_control").ShouldBe(["+memory +pids"]);

        Should.Throw<CorralException>(() => driver.Create("c2", new ResourceLimits(Cpus: 1))).Message.ShouldContain("cpu controller");
        fs.DirectoryExists($"{Parent}/c2").ShouldBeFalse();
    }

    [Fact]
    public void Already_enabled_controllers_are_not_written_again()
    {
        _fs[$"{Root}/cgroup.subtree_control"] = "cpu memory pids\n";
        Driver().Create("c1", ResourceLimits.None);
        _fs.WritesTo($"{Root}/cgroup.subtree_control").ShouldBeEmpty();
    }

    [Fact]
    public void Create_is_all_or_nothing_when_the_kernel_refuses_a_value()
    {
        _fs.FailWrite($"{Dir}/memory.max", "Device or resource busy");

        var ex = Should.Throw<CorralException>(() => Driver().Create("c1", new ResourceLimits(MemoryBytes: 4096)));

        ex.Message.ShouldStartWith("cannot create cgroup for container c1:");
        ex.Message.ShouldContain("memory.max");
        _fs.DirectoryExists(Dir).ShouldBeFalse();
        _fs.DirectoryExists(Parent).ShouldBeTrue();
    }

    [Fact]
    public void Failure_after_the_leaf_step_removes_leaf_then_container()
    {
        _fs.FailWrite($"{Dir}/cgroup.subtree_control");
        Should.Throw<CorralException>(() => Driver().Create("c1", ResourceLimits.None));
        _fs.Deleted.ShouldBe([Dir]);
    }

    [Fact]
    public void ReadStats_parses_memory_events_cpu_stat_and_max()
    {
        var cg = Driver().Create("c1", new ResourceLimits(MemoryBytes: 64L << 20));
        _fs[$"{Dir}/memory.current"] = "5000\n";
        _fs[$"{Dir}/memory.peak"] = "67108864\n";
        _fs[$"{Dir}/memory.events"] = "low 0\nhigh 0\nmax 1234\noom 2\noom_kill 2\noom_group_kill 0\n";
        _fs[$"{Dir}/cpu.stat"] = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        _fs[$"{Dir}/pids.current"] = "4\n";

        cg.ReadStats().ShouldBe(new CgroupStats
        {
            MemoryCurrentBytes = 5000,
            MemoryPeakBytes = 67108864,
            MemoryLimitBytes = 64L << 20,
            CpuUsageNs = 1_500_000,
            PidsCurrent = 4,
            PidsLimit = null,
            OomKills = 2,
            MemoryLimitHits = 1234,
        });
    }

    [Fact]
    public void ReadStats_without_memory_peak_on_old_kernels_gives_null()
    {
        var cg = Driver().Create("c1", ResourceLimits.None);
        var stats = cg.ReadStats();
        stats.MemoryPeakBytes.ShouldBeNull();
        stats.MemoryLimitBytes.ShouldBeNull();
    }

    [Fact]
    public void Open_reads_limits_back_and_misses_absent_cgroups()
    {
        Driver().Create("c1", new ResourceLimits(64L << 20, 0.5, 100));
        Driver().Open("c1").ShouldNotBeNull().Limits.ShouldBe(new ResourceLimits(64L << 20, 0.5, 100));
        Driver().Open("nope").ShouldBeNull();
    }

    [Fact]
    public void KillAll_writes_cgroup_kill_and_Remove_removes_bottom_up()
    {
        var procs = new[] { $"{Dir}/runtime/cgroup.procs", $"{Dir}/ctr/cgroup.procs" };
        var signaller = new FakeSignaller(_fs, procs);
        var cg = Driver(signaller).Create("c1", ResourceLimits.None);
        _fs.CreateDirectory($"{Dir}/ctr");
        _fs[$"{Dir}/runtime/cgroup.procs"] = "7\n";
        _fs[$"{Dir}/ctr/cgroup.procs"] = "8\n";

        cg.Remove();

        _fs.WritesTo($"{Dir}/cgroup.kill").ShouldBe(["1"]);
        signaller.Killed.Order().ShouldBe([7, 8]);
        _fs.Deleted.ShouldBe([$"{Dir}/ctr", $"{Dir}/runtime", Dir]);
    }
}
