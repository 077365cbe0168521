namespace Corral.Oom;

/// <summary>What the livelock rule says after one sample.</summary>
internal enum LivelockAction
{
    /// <summary>Still near the limit: keep sampling.</summary>
    Watch,

    /// <summary>Usage fell below the threshold: stop sampling until it comes back.</summary>
    Disarm,

    /// <summary>The container is livelocked: end it (once).</summary>
    Fire,
}

/// <summary>One decision of the livelock rule, with the figures behind it.</summary>
internal readonly record struct LivelockStep(LivelockAction Action, double HitsPerSecond, TimeSpan Thrashing);

/// <summary>
/// The livelock rule, with no I/O and no clock of its own. At its memory limit the kernel can refuse
/// charge after charge without ever killing (gVisor's sentry retries; a page-cache-heavy workload
/// reclaims): the container makes no progress and never ends. The rule arms when usage reaches
/// <see cref="OomOptions.LivelockUsageFraction"/> of the limit and, sampled while armed, fires when the
/// limit was hit at least <see cref="OomOptions.LivelockHitsPerSecond"/> times a second, with no OOM kill in
/// between, for <see cref="OomOptions.LivelockDuration"/>. Times are the caller's monotonic clock.
/// </summary>
internal sealed class LivelockRule(OomOptions options, long limitBytes)
{
    private TimeSpan _prevAt;
    private long _prevHits;
    private long _prevKills;
    private TimeSpan? _thrashSince;

    /// <summary>The usage at which the rule arms.</summary>
    public long ArmBytes { get; } = ArmThreshold(limitBytes, options);

    public bool Armed { get; private set; }

    /// <summary>The rule fired: it never arms again for this container.</summary>
    public bool Fired { get; private set; }

    public static long ArmThreshold(long limitBytes, OomOptions options) =>
        (long)Math.Floor(limitBytes * options.LivelockUsageFraction);

    /// <summary>Arms on a sample at or above the threshold; true when it armed now (start sampling).</summary>
    public bool TryArm(MemorySample sample, TimeSpan at)
    {
        if (Armed || Fired || sample.UsageBytes < ArmBytes)
        {
            return false;
        }

        Armed = true;
        Remember(sample, at);
        _thrashSince = null;
        return true;
    }

    /// <summary>One sample while armed.</summary>
    public LivelockStep Observe(MemorySample sample, TimeSpan at)
    {
        if (!Armed)
        {
            return new LivelockStep(LivelockAction.Disarm, 0, TimeSpan.Zero);
        }

        if (sample.UsageBytes < ArmBytes)
        {
            Armed = false;
            return new LivelockStep(LivelockAction.Disarm, 0, TimeSpan.Zero);
        }

        var seconds = (at - _prevAt).TotalSeconds;
        var rate = seconds > 0 ? (sample.LimitHits - _prevHits) / seconds : 0;
        var killed = sample.OomKills > _prevKills;
        if (rate >= options.LivelockHitsPerSecond && !killed)
        {
            _thrashSince ??= _prevAt;
            var thrashing = at - _thrashSince.Value;
            if (thrashing >= options.LivelockDuration)
            {
                Armed = false;
                Fired = true;
                return new LivelockStep(LivelockAction.Fire, rate, thrashing);
            }

            Remember(sample, at);
            return new LivelockStep(LivelockAction.Watch, rate, thrashing);
        }

        // A kill (the kernel is making progress) or a calm interval starts the count again.
        _thrashSince = null;
        Remember(sample, at);
        return new LivelockStep(LivelockAction.Watch, rate, TimeSpan.Zero);
    }

    private void Remember(MemorySample sample, TimeSpan at)
    {
        _prevAt = at;
        _prevHits = sample.LimitHits;
        _prevKills = sample.OomKills;
    }
}
