using Corral.Cgroups;
using Corral.Common;
using Microsoft.Extensions.Logging.Abstractions;
using Shouldly;
using Xunit;

namespace Corral.Tests.Cgroups;

public sealed class CgroupV1DriverTests
{
    private const string Unlimited = "9223372036854771712";
    private const string Mem = "/sys/fs/cgroup/memory/corral/c1";
    private const string Cpu = "/sys/fs/cgroup/cpu/corral/c1";
    private const string CpuAcct = "/sys/fs/cgroup/cpuacct/corral/c1";
    private const string Pids = "/sys/fs/cgroup/pids/corral/c1";

    private readonly FakeCgroupFileSystem _fs = NewFileSystem();

    internal static FakeCgroupFileSystem NewFileSystem(bool memsw = true)
    {
        var fs = new FakeCgroupFileSystem();
        fs.Template = dir =>
        {
            var files = new Dictionary<string, string> { ["cgroup.procs"] = "" };
            if (dir.StartsWith("/sys/fs/cgroup/memory", StringComparison.Ordinal))
            {
                files["memory.limit_in_bytes"] = Unlimited;
                files["memory.usage_in_bytes"] = "0";
                files["memory.max_usage_in_bytes"] = "0";
                files["memory.failcnt"] = "0";
                files["memory.oom_control"] = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
                files["cgroup.event_control"] = "";
                if (memsw)
                {
                    files["memory.memsw.limit_in_bytes"] = Unlimited;
                    files["memory.memsw.failcnt"] = "0";
                }
            }

            if (dir.StartsWith("/sys/fs/cgroup/cpu/", StringComparison.Ordinal) || dir.StartsWith("/sys/fs/cgroup/cpu,cpuacct/", StringComparison.Ordinal))
            {
                files["cpu.cfs_period_us"] = "100000";
                files["cpu.cfs_quota_us"] = "-1";
            }

            if (dir.StartsWith("/sys/fs/cgroup/cpuacct/", StringComparison.Ordinal) || dir.StartsWith("/sys/fs/cgroup/cpu,cpuacct/", StringComparison.Ordinal))
            {
                files["cpuacct.usage"] = "0";
            }

            if (dir.StartsWith("/sys/fs/cgroup/pids/", StringComparison.Ordinal))
            {
                files["pids.max"] = "max";
                files["pids.current"] = "0";
            }

            return files;
        };
        foreach (var controller in new[] { "memory", "cpu", "cpuacct", "pids" })
        {
            fs.AddDirectory($"/sys/fs/cgroup/{controller}");
        }

        return fs;
    }

    private static CgroupV1Mounts SeparateMounts => new(
        "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/pids");

    private CgroupV1Driver Driver(CgroupV1Mounts? mounts = null, IProcessSignaller? signaller = null) =>
        new(mounts ?? SeparateMounts, _fs, NullLogger.Instance, signaller: signaller ?? new FakeSignaller(_fs, []));

    [Fact]
    public void Create_makes_one_directory_per_controller_and_names_the_runtime_child()
    {
        var cg = Driver().Create("c1", ResourceLimits.None);

        cg.Version.ShouldBe(CgroupVersion.V1);
        cg.MemoryDirectory.ShouldBe(Mem);
        cg.RuntimeCgroupsPath.ShouldBe("/corral/c1/ctr");
        cg.ProcsFiles.ShouldBe([$"{Mem}/cgroup.procs", $"{Cpu}/cgroup.procs", $"{CpuAcct}/cgroup.procs", $"{Pids}/cgroup.procs"]);
        new[] { Mem, Cpu, CpuAcct, Pids }.ShouldAllBe(d => _fs.DirectoryExists(d));
        _fs.Writes.ShouldBeEmpty("no limit asked, nothing written");
    }

    [Theory]
    [InlineData(0.5, "50000")]
    [InlineData(2.0, "200000")]
    [InlineData(1.25, "125000")]
    public void Create_writes_memory_without_swap_cpu_quota_and_pids(double cpus, string quota)
    {
        Driver().Create("c1", new ResourceLimits(64L << 20, cpus, 100));

        _fs.WritesTo($"{Mem}/memory.limit_in_bytes").ShouldBe(["67108864"]);
        _fs.WritesTo($"{Mem}/memory.memsw.limit_in_bytes").ShouldBe([(67108864 + CgroupV1Driver.MemswHeadroomBytes).ToString()]);
        _fs.Writes.FindIndex(w => w.Path.EndsWith("memory.limit_in_bytes", StringComparison.Ordinal))
            .ShouldBeLessThan(_fs.Writes.FindIndex(w => w.Path.EndsWith("memsw.limit_in_bytes", StringComparison.Ordinal)));
        _fs.WritesTo($"{Cpu}/cpu.cfs_period_us").ShouldBe(["100000"]);
        _fs.WritesTo($"{Cpu}/cpu.cfs_quota_us").ShouldBe([quota]);
        _fs.WritesTo($"{Pids}/pids.max").ShouldBe(["100"]);
    }

    [Fact]
    public void Memsw_is_skipped_when_the_kernel_has_no_swap_accounting()
    {
        var fs = NewFileSystem(memsw: false);
        new CgroupV1Driver(SeparateMounts, fs, NullLogger.Instance).Create("c1", new ResourceLimits(MemoryBytes: 1 << 20));

        fs.Writes.ShouldBe([($"{Mem}/memory.limit_in_bytes", "1048576")]);
    }

    [Fact]
    public void Co_mounted_cpu_and_cpuacct_share_one_directory()
    {
        var mounts = CgroupV1Mounts.FromMountInfo(MountInfo.Parse(
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"))!;
        mounts.Cpu.ShouldBe("/sys/fs/cgroup/cpu,cpuacct");
        mounts.CpuAcct.ShouldBe("/sys/fs/cgroup/cpu,cpuacct");
        mounts.Pids.ShouldBeNull();

        var cg = Driver(mounts).Create("c1", new ResourceLimits(Cpus: 1));

        cg.ProcsFiles.ShouldBe([$"{Mem}/cgroup.procs", "/sys/fs/cgroup/cpu,cpuacct/corral/c1/cgroup.procs"]);
        _fs.WritesTo("/sys/fs/cgroup/cpu,cpuacct/corral/c1/cpu.cfs_quota_us").ShouldBe(["100000"]);
        Should.Throw<CorralException>(() => Driver(mounts).Create("c2", new ResourceLimits(Pids: 10)))
            .Message.ShouldContain("pids controller is not mounted");
    }

    [Fact]
    public void Create_is_all_or_nothing_when_the_kernel_refuses_a_value()
    {
        _fs.FailWrite($"{Pids}/pids.max");

        var ex = Should.Throw<CorralException>(() => Driver().Create("c1", new ResourceLimits(64L << 20, 0.5, 10)));

        ex.Message.ShouldStartWith("cannot create cgroup for container c1:");
        ex.Message.ShouldContain($"{Pids}/pids.max");
        ex.Message.ShouldNotContain("\n");
        new[] { Mem, Cpu, CpuAcct, Pids }.ShouldAllBe(d => !_fs.DirectoryExists(d));
        _fs.DirectoryExists("/sys/fs/cgroup/memory/corral").ShouldBeTrue("the shared parent stays");
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-1.0)]
    public void Invalid_cpus_are_refused_and_rolled_back(double cpus)
    {
        Should.Throw<CorralException>(() => Driver().Create("c1", new ResourceLimits(Cpus: cpus)));
        _fs.DirectoryExists(Mem).ShouldBeFalse();
    }

    [Fact]
    public void Create_refuses_an_existing_cgroup_that_holds_processes()
    {
        Driver().Create("c1", ResourceLimits.None);
        _fs[$"{Mem}/cgroup.procs"] = "42\n";

        Should.Throw<CorralException>(() => Driver().Create("c1", ResourceLimits.None)).Message.ShouldContain("holds 1 process");
        _fs.DirectoryExists(Mem).ShouldBeTrue("not ours to remove");
    }

    [Fact]
    public void ReadStats_parses_counters_and_sums_oom_kills_of_children()
    {
        var cg = Driver().Create("c1", new ResourceLimits(64L << 20, 1, 100));
        _fs.CreateDirectory($"{Mem}/ctr");
        _fs[$"{Mem}/memory.usage_in_bytes"] = "1000\n";
        _fs[$"{Mem}/memory.max_usage_in_bytes"] = "67108864\n";
        _fs[$"{Mem}/memory.failcnt"] = "7\n";
        _fs[$"{Mem}/memory.memsw.failcnt"] = "3\n";
        _fs[$"{Mem}/memory.oom_control"] = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        _fs[$"{Mem}/ctr/memory.oom_control"] = "oom_kill_disable 0\nunder_oom 1\noom_kill 2\n";
        _fs[$"{CpuAcct}/cpuacct.usage"] = "123456789\n";
        _fs[$"{Pids}/pids.current"] = "3\n";

        var stats = cg.ReadStats();

        stats.ShouldBe(new CgroupStats
        {
            MemoryCurrentBytes = 1000,
            MemoryPeakBytes = 67108864,
            MemoryLimitBytes = 67108864,
            CpuUsageNs = 123456789,
            PidsCurrent = 3,
            PidsLimit = 100,
            OomKills = 3,
            MemoryLimitHits = 10,
        });
    }

    [Fact]
    public void ReadStats_reports_unlimited_as_null()
    {
        var cg = Driver().Create("c1", ResourceLimits.None);
        var stats = cg.ReadStats();
        stats.MemoryLimitBytes.ShouldBeNull();
        stats.PidsLimit.ShouldBeNull();
        stats.OomKills.ShouldBe(0);
    }

    [Fact]
    public void Open_finds_existing_cgroups_with_their_limits_and_not_missing_ones()
    {
        Driver().Create("c1", new ResourceLimits(64L << 20, 0.5, 100));

        var opened = Driver().Open("c1").ShouldNotBeNull();
        opened.Limits.ShouldBe(new ResourceLimits(64L << 20, 0.5, 100));
        opened.MemoryDirectory.ShouldBe(Mem);
        Driver().Open("c2").ShouldBeNull();
    }

    [Fact]
    public void ListProcesses_unites_memory_and_pids_trees_with_children()
    {
        var cg = Driver().Create("c1", ResourceLimits.None);
        _fs.CreateDirectory($"{Mem}/ctr");
        _fs.CreateDirectory($"{Pids}/ctr");
        _fs[$"{Mem}/cgroup.procs"] = "10\n";
        _fs[$"{Mem}/ctr/cgroup.procs"] = "11\n12\n";
        _fs[$"{Pids}/ctr/cgroup.procs"] = "12\n13\n";

        cg.ListProcesses().ShouldBe([10, 11, 12, 13]);
    }

    [Fact]
    public void Remove_kills_then_removes_children_before_parents_in_every_controller()
    {
        var procs = new[] { $"{Mem}/cgroup.procs", $"{Mem}/ctr/cgroup.procs", $"{Pids}/ctr/cgroup.procs" };
        var signaller = new FakeSignaller(_fs, procs);
        var cg = Driver(signaller: signaller).Create("c1", ResourceLimits.None);
        foreach (var dir in new[] { Mem, Cpu, CpuAcct, Pids })
        {
            _fs.CreateDirectory($"{dir}/ctr");
        }

        _fs[$"{Mem}/ctr/cgroup.procs"] = "11\n12\n";
        _fs[$"{Pids}/ctr/cgroup.procs"] = "12\n";

        cg.Remove();

        signaller.Killed.Order().ShouldBe([11, 12]);
        _fs.Deleted.ShouldBe([$"{Mem}/ctr", Mem, $"{Cpu}/ctr", Cpu, $"{CpuAcct}/ctr", CpuAcct, $"{Pids}/ctr", Pids]);
        _fs.DirectoryExists("/sys/fs/cgroup/memory/corral").ShouldBeTrue();
    }

    [Fact]
    public void Remove_goes_on_when_the_runtime_removes_its_own_leaf_meanwhile()
    {
        var cg = Driver().Create("c1", ResourceLimits.None);
        _fs.CreateDirectory($"{Mem}/ctr");
        _fs.CreateDirectory($"{Pids}/ctr");

        // runc deletes its ctr leaf between the check that it exists and the listing of its children.
        _fs.RemovedWhileListed.Add($"{Mem}/ctr");

        cg.Remove();

        _fs.DirectoryExists(Mem).ShouldBeFalse();
        _fs.DirectoryExists($"{Mem}/ctr").ShouldBeFalse();
        _fs.DirectoryExists(Pids).ShouldBeFalse();
    }

    [Fact]
    public void Remove_also_removes_what_runc_made_in_the_other_hierarchies_and_never_creates_it()
    {
        var mounts = SeparateMounts with { Others = ["/sys/fs/cgroup/devices", "/sys/fs/cgroup/unified"] };
        var cg = Driver(mounts).Create("c1", ResourceLimits.None);
        _fs.DirectoryExists("/sys/fs/cgroup/devices/corral/c1").ShouldBeFalse("the driver leaves those to runc");

        // What runc leaves after `runc delete`: its ctr leaf is gone, the parent stays.
        _fs.AddDirectory("/sys/fs/cgroup/devices/corral/c1");
        _fs.AddDirectory("/sys/fs/cgroup/unified/corral/c1/ctr");

        cg.Remove();

        _fs.DirectoryExists("/sys/fs/cgroup/devices/corral/c1").ShouldBeFalse();
        _fs.DirectoryExists("/sys/fs/cgroup/unified/corral/c1").ShouldBeFalse();
        _fs.Deleted.ShouldContain("/sys/fs/cgroup/unified/corral/c1/ctr");
    }

    [Fact]
    public void Invalid_container_ids_never_reach_the_filesystem()
    {
        Should.Throw<CorralException>(() => Driver().Create("../etc", ResourceLimits.None));
        _fs.Created.ShouldBeEmpty();
    }
}
