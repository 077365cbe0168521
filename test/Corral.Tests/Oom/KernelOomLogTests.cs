using Corral.Oom;
using Shouldly;
using Xunit;

namespace Corral.Tests.Oom;

/// <summary>The kernel's OOM kill lines as /dev/kmsg gives them (kernel 6.x text).</summary>
public sealed class KernelOomLogTests
{
    private const string Kill =
        "3,4821,912345678,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=c-1,mems_allowed=0,oom_memcg=/corral-0123456789ab/c-1,task_memcg=/corral-0123456789ab/c-1,task=python3,pid=4242,uid=0";

    [Fact]
    public void AKillLineNamesTheProcessItsCgroupsAndWhen()
    {
        var victim = KernelOomLog.ParseRecord(Kill).ShouldNotBeNull();

        victim.Pid.ShouldBe(4242);
        victim.Process.ShouldBe("python3");
        victim.OomCgroup.ShouldBe("/corral-0123456789ab/c-1");
        victim.TaskCgroup.ShouldBe("/corral-0123456789ab/c-1");
        victim.BootTimeMicroseconds.ShouldBe(912345678);
    }

    [Theory]
    [InlineData("6,4820,912345000,-;python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0")]
    [InlineData("3,4822,912345900,-;Memory cgroup out of memory: Killed process -4 (python3) total-vm:20000kB")]
    [InlineData("3,4822,912345900,-;Memory cgroup out of memory: Killed process 4242 total-vm:20000kB")]
    [InlineData("3,4822,912345900,-;Memory cgroup out of memory: Killed process 4242 () total-vm:20000kB")]
    [InlineData("6,4822,912345900,-;oom_reaper: reaped process 4242 (python3), now anon-rss:0kB")]
    [InlineData("6,4822,912345900,-;sh[1]: Killed process 4242 (python3) total-vm:20000kB")]
    [InlineData("3,4821,912345678,-;oom-kill:constraint=CONSTRAINT_MEMCG,task=python3,uid=0")]
    [InlineData("3,4821,912345678,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a,task=python3,pid=-1,uid=0")]
    [InlineData("no header at all")]
    [InlineData("")]
    public void OtherLinesAndBrokenKillLinesNameNoOne(string record) =>
        KernelOomLog.ParseRecord(record).ShouldBeNull();

    [Theory]
    [InlineData("3,4822,912345900,-;Memory cgroup out of memory: Killed process 4242 (python3) total-vm:20000kB, anon-rss:65000kB", "python3")]
    [InlineData("3,4822,912345900,-;Out of memory: Killed process 4242 (my) prog) total-vm:20000kB", "my) prog")]
    public void TheAlwaysLoggedKillLineNamesTheProcessButNoCgroup(string record, string process)
    {
        var victim = KernelOomLog.ParseRecord(record).ShouldNotBeNull();

        victim.Pid.ShouldBe(4242);
        victim.Process.ShouldBe(process);
        victim.NamesCgroups.ShouldBeFalse();
        victim.BootTimeMicroseconds.ShouldBe(912345900);
        KernelOomLog.IsFor(victim, "/").ShouldBeFalse("a bare kill line is never matched by cgroup");
    }

    [Fact]
    public void ContinuationLinesAfterTheMessageAreIgnored()
    {
        var victim = KernelOomLog.ParseRecord(Kill + "\n SUBSYSTEM=memory\n DEVICE=+memcg:1\n").ShouldNotBeNull();
        victim.Pid.ShouldBe(4242);
    }

    [Theory]
    [InlineData("/corral-0123456789ab/c-1", "/corral-0123456789ab/c-1", true)]
    [InlineData("corral-0123456789ab/c-1", "/corral-0123456789ab/c-1", true)]
    [InlineData("/corral-0123456789ab/c-1", "/system.slice/host/corral-0123456789ab/c-1", true)] // seen from a cgroup namespace
    [InlineData("/corral-0123456789ab/c-1", "/corral-0123456789ab/c-1/runc-child", true)]
    [InlineData("/corral-0123456789ab/c-1", "/corral-0123456789ab/c-10", false)]
    [InlineData("/corral-0123456789ab/c-1", "/corral-ffffffffffff/c-1x", false)]
    [InlineData("/corral-0123456789ab/c-1", "/", false)]
    public void AKillIsMatchedToItsContainerByCgroupNeverByPrefix(string container, string memcg, bool matches)
    {
        var victim = new OomVictim(1, "p", memcg, memcg, 0);
        KernelOomLog.IsFor(victim, container).ShouldBe(matches);
    }

    [Fact]
    public void AReportedKillCountsOnceAndOnlyForItsOwnCgroup()
    {
        var records = new[]
        {
            new OomVictim(4242, "python3", "/corral-0123456789ab/c-1", "/corral-0123456789ab/c-1", 10),
            new OomVictim(4242, "python3", null, null, 11),
            new OomVictim(5151, "python3", "/corral-0123456789ab/c-2", "/corral-0123456789ab/c-2", 12),
            new OomVictim(5151, "python3", null, null, 13),
        };

        KernelOomLog.Attribute(records, "/corral-0123456789ab/c-1", 4242).ShouldHaveSingleItem().BootTimeMicroseconds.ShouldBe(10);
        KernelOomLog.Attribute(records, "/corral-0123456789ab/c-1", 5151).ShouldHaveSingleItem().Pid.ShouldBe(4242, "another cgroup's reported kill is not ours, whatever its pid");
    }

    [Fact]
    public void AKillWhoseReportWasRateLimitedIsOursOnlyByTheKnownPid()
    {
        // The kernel's report was suppressed: only the bare kill lines were logged.
        var records = new[] { new OomVictim(4242, "python3", null, null, 11), new OomVictim(777, "python3", null, null, 12) };

        KernelOomLog.Attribute(records, "/corral-0123456789ab/c-1", 4242).ShouldHaveSingleItem().Pid.ShouldBe(4242);
        KernelOomLog.Attribute(records, "/corral-0123456789ab/c-1", null).ShouldBeEmpty();
        KernelOomLog.Attribute(records, "/corral-0123456789ab/c-1", 1).ShouldBeEmpty();
    }
}
