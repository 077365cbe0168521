using Corral.Oom;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Supervision;

/// <summary>How a container ended, decided from what the supervisor saw: every rule of the verdict, no I/O.</summary>
public sealed class ExitVerdictTests
{
    private static readonly OomSummary Counted = new(OomKills: 1, Livelock: false, Likely: false, OomNotified: true);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(125)]
    [InlineData(143)]
    public void TheWorkloadsOwnCodeIsTheVerdict(int code)
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = code });

        verdict.ShouldBe(new ExitVerdict(code, OomKilled: false, OomReason: null, OomKills: 0, KillInferred: false, ExitNote: null, RuntimeFailure: null));
    }

    [Theory]
    [InlineData(137)] // runc and crun: PID 1 killed by SIGKILL
    [InlineData(128)] // gVisor: the sandbox killed by the host
    public void ASigkillWithAKillCountedIsAnOomKill137OnEveryRuntime(int code)
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = code, Oom = Counted });

        verdict.ExitCode.ShouldBe(137);
        verdict.OomKilled.ShouldBeTrue();
        verdict.OomReason.ShouldBe("kernel");
        verdict.OomKills.ShouldBe(1);
        verdict.KillInferred.ShouldBeFalse();
    }

    [Fact]
    public void TheCgroupsOwnCountersCountWhenTheWatcherMissedTheKill()
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 137, CgroupOomKills = 2 });

        verdict.OomKilled.ShouldBeTrue();
        verdict.OomKills.ShouldBe(2);
    }

    [Fact]
    public void CorralsOwnKillIsNeverTheKernels()
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 137, Oom = Counted, KilledByCorral = true });

        verdict.OomKilled.ShouldBeFalse();
        verdict.OomReason.ShouldBeNull();
        verdict.ExitCode.ShouldBe(137);
        verdict.OomKills.ShouldBe(1, "the kill the kernel counted is still reported");
    }

    [Fact]
    public void AChildKilledWhilePid1ExitsCleanlyIsCountedNotTheVerdict()
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 0, Oom = Counted, CgroupOomKills = 1 });

        verdict.ExitCode.ShouldBe(0);
        verdict.OomKilled.ShouldBeFalse();
        verdict.OomKills.ShouldBe(1);
    }

    [Fact]
    public void AKillCountedOnlyInRuncsVanishedChildIsInferredFromTheNotification()
    {
        // cgroup v1: the kill counter was in runc's child cgroup, removed before it was read.
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 137, Oom = new OomSummary(0, false, false, OomNotified: true), CgroupOomKills = 0 });

        verdict.OomKilled.ShouldBeTrue();
        verdict.OomKills.ShouldBe(1);
        verdict.KillInferred.ShouldBeTrue();
    }

    [Fact]
    public void ASigkillFromElsewhereWithNoKillAndNoNotificationIsASignal()
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 137, CgroupOomKills = 0 });

        verdict.OomKilled.ShouldBeFalse();
        verdict.KillInferred.ShouldBeFalse();
        verdict.ExitCode.ShouldBe(137);
    }

    [Fact]
    public void TheLivelockRuleIsAnOomKillWhateverTheCode()
    {
        // gVisor under a limit too small for it: Corral ended the sandbox that could no longer make progress.
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 143, Oom = new OomSummary(0, Livelock: true, Likely: true), KilledByCorral = true });

        verdict.ExitCode.ShouldBe(137);
        verdict.OomKilled.ShouldBeTrue();
        verdict.OomReason.ShouldBe("livelock");
    }

    [Fact]
    public void ATimeoutIs137AndNotAnOomKill()
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 1, TimedOut = true, KilledByCorral = true, RuntimeFailure = "container init was killed" });

        verdict.ExitCode.ShouldBe(137);
        verdict.OomKilled.ShouldBeFalse();
        verdict.RuntimeFailure.ShouldBeNull("the timeout decides, not what the runtime said as it was killed");
    }

    [Fact]
    public void TheRuntimesOwnFailureIsAFailureNotAnExitCode()
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 1, RuntimeFailure = "mount `tmpfs` to `dev`: Not a directory" });

        verdict.RuntimeFailure.ShouldBe("mount `tmpfs` to `dev`: Not a directory");
        verdict.ExitNote.ShouldBeNull();
    }

    [Fact]
    public void CorralsSignalLandingBeforeTheWorkloadRanIsThatSignalsExit()
    {
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 1, RuntimeFailure = "error during container init", SignalFromCorral = 15, RuntimeName = "runc" });

        verdict.RuntimeFailure.ShouldBeNull();
        verdict.ExitCode.ShouldBe(143);
        verdict.ExitNote.ShouldBe("ended by SIGTERM from Corral before the workload ran; runc said: error during container init");
    }

    [Fact]
    public void AnOomKillOutranksWhatTheRuntimeSaid()
    {
        // gVisor's 128 comes with its own FATAL line when the sandbox was killed; the kernel's kill decides.
        var verdict = ExitVerdict.Decide(new ExitFacts { RuntimeExitCode = 128, Oom = Counted, RuntimeFailure = "sandbox killed" });

        verdict.OomKilled.ShouldBeTrue();
        verdict.RuntimeFailure.ShouldBeNull();
        verdict.ExitCode.ShouldBe(137);
    }
}
