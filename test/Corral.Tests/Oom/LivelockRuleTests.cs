using Corral.Oom;
using Shouldly;
using Xunit;

namespace Corral.Tests.Oom;

/// <summary>The livelock rule on its own: samples and times in, decisions out (defaults: 97 %, 1000 hits/s for 3 s).</summary>
public sealed class LivelockRuleTests
{
    private const long Limit = 100L << 20;
    private static readonly OomOptions Options = new();
    private static readonly long AtLimit = Limit - 1024;

    private static TimeSpan Ms(int ms) => TimeSpan.FromMilliseconds(ms);

    [Fact]
    public void ItArmsAtTheThresholdOnlyOnce()
    {
        var rule = new LivelockRule(Options, Limit);

        rule.ArmBytes.ShouldBe((long)Math.Floor(Limit * 0.97));
        rule.TryArm(new MemorySample(0, 0, rule.ArmBytes - 1), Ms(0)).ShouldBeFalse();
        rule.TryArm(new MemorySample(0, 0, rule.ArmBytes), Ms(0)).ShouldBeTrue();
        rule.TryArm(new MemorySample(0, 0, rule.ArmBytes), Ms(10)).ShouldBeFalse("already armed");
        rule.Armed.ShouldBeTrue();
    }

    [Fact]
    public void LimitHitsAtTheRateForTheWholeDurationWithNoKillFireOnce()
    {
        var rule = new LivelockRule(Options, Limit);
        rule.TryArm(new MemorySample(0, 0, AtLimit), Ms(0));

        LivelockStep step = default;
        var t = 0;
        long hits = 0;
        while (t < 3000)
        {
            t += 250;
            hits += 500; // 2000 per second
            step = rule.Observe(new MemorySample(0, hits, AtLimit), Ms(t));
            if (t < 3000)
            {
                step.Action.ShouldBe(LivelockAction.Watch, $"at {t} ms");
            }
        }

        step.Action.ShouldBe(LivelockAction.Fire);
        step.HitsPerSecond.ShouldBe(2000, 0.001);
        step.Thrashing.ShouldBe(Ms(3000));
        rule.Fired.ShouldBeTrue();
        rule.Armed.ShouldBeFalse();
        rule.TryArm(new MemorySample(0, hits, AtLimit), Ms(t + 250)).ShouldBeFalse("a rule that fired never arms again");
    }

    [Fact]
    public void AnOomKillInBetweenMeansTheKernelIsMakingProgress()
    {
        var rule = new LivelockRule(Options, Limit);
        rule.TryArm(new MemorySample(0, 0, AtLimit), Ms(0));

        for (var t = 250; t <= 2750; t += 250)
        {
            rule.Observe(new MemorySample(0, t * 2, AtLimit), Ms(t)).Action.ShouldBe(LivelockAction.Watch);
        }

        // A kill at 3 s starts the count again: no fire until 3 s of thrashing after it.
        rule.Observe(new MemorySample(1, 6000, AtLimit), Ms(3000)).Action.ShouldBe(LivelockAction.Watch);
        rule.Observe(new MemorySample(1, 6500, AtLimit), Ms(3250)).Thrashing.ShouldBe(Ms(250));
        rule.Fired.ShouldBeFalse();
    }

    [Fact]
    public void AHitRateBelowTheRuleIsNotALivelock()
    {
        var rule = new LivelockRule(Options, Limit);
        rule.TryArm(new MemorySample(0, 0, AtLimit), Ms(0));

        for (var t = 250; t <= 10_000; t += 250)
        {
            // 900 per second: below 1000.
            var step = rule.Observe(new MemorySample(0, t * 9 / 10, AtLimit), Ms(t));
            step.Action.ShouldBe(LivelockAction.Watch);
            step.Thrashing.ShouldBe(TimeSpan.Zero);
        }
    }

    [Fact]
    public void UsageFallingBelowTheThresholdDisarmsAndItCanArmAgain()
    {
        var rule = new LivelockRule(Options, Limit);
        rule.TryArm(new MemorySample(0, 0, AtLimit), Ms(0));

        rule.Observe(new MemorySample(0, 1000, rule.ArmBytes - 1), Ms(250)).Action.ShouldBe(LivelockAction.Disarm);
        rule.Armed.ShouldBeFalse();
        rule.TryArm(new MemorySample(0, 1000, AtLimit), Ms(500)).ShouldBeTrue();
    }

    [Fact]
    public void AGapInTheThrashingStartsTheCountAgain()
    {
        var rule = new LivelockRule(Options, Limit);
        rule.TryArm(new MemorySample(0, 0, AtLimit), Ms(0));
        rule.Observe(new MemorySample(0, 5000, AtLimit), Ms(2500)).Thrashing.ShouldBe(Ms(2500));

        // One calm interval (no hits), then thrashing again: counted from the calm interval's end.
        rule.Observe(new MemorySample(0, 5000, AtLimit), Ms(2750)).Thrashing.ShouldBe(TimeSpan.Zero);
        rule.Observe(new MemorySample(0, 5500, AtLimit), Ms(3000)).Thrashing.ShouldBe(Ms(250));
        rule.Observe(new MemorySample(0, 10500, AtLimit), Ms(5500)).Action.ShouldBe(LivelockAction.Watch);
        rule.Observe(new MemorySample(0, 11000, AtLimit), Ms(5750)).Action.ShouldBe(LivelockAction.Fire);
    }
}
