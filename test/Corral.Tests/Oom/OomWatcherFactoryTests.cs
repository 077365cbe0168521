using Corral.Cgroups;
using Corral.Oom;
using Corral.Tests.Cgroups;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Shouldly;
using Xunit;

namespace Corral.Tests.Oom;

public sealed class OomWatcherFactoryTests
{
    private readonly FakeCgroupFileSystem _fs = CgroupV2DriverTests.NewFileSystem("cpu memory pids");

    private OomWatcherFactory Factory() => new(_fs, Options.Create(new OomOptions()), new FakeTimeProvider());

    [Fact]
    public void No_memory_limit_means_no_watcher()
    {
        var cgroup = new CgroupV2Driver("/sys/fs/cgroup", _fs, NullLogger.Instance).Create("c1", ResourceLimits.None);
        Factory().Create(cgroup, null, () => null).ShouldBeNull();
        Factory().Create(null, null, () => 1).ShouldBeNull();
    }

    [Fact]
    public void A_cgroup_with_a_limit_gets_the_cgroup_watcher()
    {
        var cgroup = new CgroupV2Driver("/sys/fs/cgroup", _fs, NullLogger.Instance).Create("c1", new ResourceLimits(MemoryBytes: 64L << 20));
        Factory().Create(cgroup, null, () => null).ShouldBeOfType<CgroupOomWatcher>().Strategy.ShouldBe(OomStrategy.Cgroup);
    }

    [Fact]
    public void Without_a_cgroup_the_process_tree_fallback_is_used()
    {
        Factory().Create(null, 64L << 20, () => null).ShouldBeOfType<ProcessTreeMemoryWatcher>().Strategy.ShouldBe(OomStrategy.ProcessTree);
    }
}
