using Corral.Cgroups;
using Corral.Oom;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Shouldly;
using Xunit;

namespace Corral.Tests.Oom;

public sealed class CgroupOomWatcherTests
{
    private const long Limit = 100_000_000;
    private static readonly TimeSpan Tick = new OomOptions().LivelockSampleInterval;

    private readonly FakeTimeProvider _time = new();
    private readonly FakeCounters _counters = new() { Sample = new MemorySample(0, 0, Limit / 10) };
    private readonly FakeEventSource _source = new();
    private readonly List<OomEvent> _events = [];

    private CgroupOomWatcher Start(OomOptions? options = null)
    {
        var watcher = new CgroupOomWatcher("c1", CgroupVersion.V2, _counters, _source, Limit, options ?? new OomOptions(), _time, NullLogger.Instance);
        watcher.Start(_events.Add);
        return watcher;
    }

    [Fact]
    public void Kill_is_reported_once_per_growth_with_the_total_since_start()
    {
        _counters.Sample = _counters.Sample with { OomKills = 5 }; // a reused cgroup's old kills
        using var watcher = Start();

        _source.Fire(CgroupNotification.EventsModified);
        _events.ShouldBeEmpty();

        _counters.Sample = _counters.Sample with { OomKills = 6 };
        _source.Fire(CgroupNotification.EventsModified);
        _source.Fire(CgroupNotification.EventsModified);
        _counters.Sample = _counters.Sample with { OomKills = 8 };
        _source.Fire(CgroupNotification.EventsModified);

        _events.Select(e => (e.Kind, e.OomKills)).ShouldBe([(OomEventKind.Kill, 1L), (OomEventKind.Kill, 3L)]);
        _events[0].At.ShouldBe(_time.GetUtcNow());
        watcher.Stop().ShouldBe(new OomSummary(3, false, false));
    }

    [Fact]
    public void Stop_reports_a_kill_not_yet_notified_then_is_idempotent()
    {
        var watcher = Start();
        _counters.Sample = _counters.Sample with { OomKills = 1 };

        var summary = watcher.Stop();

        summary.ShouldBe(new OomSummary(1, false, false));
        _events.ShouldHaveSingleItem().Kind.ShouldBe(OomEventKind.Kill);
        _source.Disposed.ShouldBeTrue();
        _counters.Sample = _counters.Sample with { OomKills = 2 };
        watcher.Stop().ShouldBeSameAs(summary);
        watcher.Dispose();
        _events.Count.ShouldBe(1);
        _source.Fire(CgroupNotification.EventsModified);
        _events.Count.ShouldBe(1);
    }

    [Fact]
    public void V1_oom_notification_before_the_kill_lands_is_rechecked_shortly_after()
    {
        using var watcher = Start();

        _source.Fire(CgroupNotification.Oom);
        _events.ShouldBeEmpty();
        _time.Advance(TimeSpan.FromMilliseconds(25));
        _events.ShouldBeEmpty();
        _counters.Sample = _counters.Sample with { OomKills = 1 };
        _time.Advance(TimeSpan.FromMilliseconds(25));

        _events.ShouldHaveSingleItem().OomKills.ShouldBe(1);
        var reads = _counters.Reads;
        _time.Advance(TimeSpan.FromSeconds(10));
        _counters.Reads.ShouldBe(reads, "the recheck timer stops once the kill is seen");
    }

    [Fact]
    public void V1_recheck_gives_up_after_a_short_while_without_a_kill()
    {
        using var watcher = Start();
        _source.Fire(CgroupNotification.Oom);
        _time.Advance(TimeSpan.FromSeconds(1));
        var reads = _counters.Reads;
        _time.Advance(TimeSpan.FromSeconds(10));
        _counters.Reads.ShouldBe(reads);
        _events.ShouldBeEmpty();
    }

    [Fact]
    public void Idle_container_costs_no_timer_and_no_read()
    {
        using var watcher = Start();
        var reads = _counters.Reads;
        for (var i = 0; i < 100; i++)
        {
            _time.Advance(TimeSpan.FromMinutes(1));
        }

        _counters.Reads.ShouldBe(reads);
        _events.ShouldBeEmpty();
    }

    [Fact]
    public void Thrashing_at_the_limit_without_a_kill_fires_livelock_once()
    {
        using var watcher = Start();
        ThrashAtLimit(); // usage at the limit: the v1 threshold event or v2 "max" growth arms the check

        var firedAfter = TimeSpan.Zero;
        for (var i = 1; i <= 40; i++)
        {
            _counters.Sample = _counters.Sample with { LimitHits = _counters.Sample.LimitHits + 1000 }; // 4000/s
            _time.Advance(Tick);
            if (firedAfter == TimeSpan.Zero && _events.Count > 0)
            {
                firedAfter = Tick * i;
            }
        }

        var livelock = _events.ShouldHaveSingleItem();
        livelock.Kind.ShouldBe(OomEventKind.Livelock);
        livelock.MemoryBytes.ShouldBe(Limit);
        firedAfter.ShouldBe(new OomOptions().LivelockDuration);
        watcher.Stop().ShouldBe(new OomSummary(0, true, false));
    }

    [Fact]
    public void Thrashing_that_ends_in_kills_is_no_livelock()
    {
        using var watcher = Start();
        ThrashAtLimit();

        for (var i = 0; i < 40; i++)
        {
            var s = _counters.Sample;
            _counters.Sample = s with { LimitHits = s.LimitHits + 1000, OomKills = s.OomKills + (i % 4 == 3 ? 1 : 0) };
            _time.Advance(Tick);
        }

        _events.ShouldAllBe(e => e.Kind == OomEventKind.Kill);
        _events.Count.ShouldBe(10);
        watcher.Stop().ShouldBe(new OomSummary(10, false, false));
    }

    [Fact]
    public void Slow_limit_hits_are_no_livelock()
    {
        using var watcher = Start();
        ThrashAtLimit();
        for (var i = 0; i < 40; i++)
        {
            _counters.Sample = _counters.Sample with { LimitHits = _counters.Sample.LimitHits + 100 }; // 400/s
            _time.Advance(Tick);
        }

        _events.ShouldBeEmpty();
    }

    [Fact]
    public void Usage_falling_below_the_fraction_disarms_the_check()
    {
        using var watcher = Start();
        ThrashAtLimit();
        for (var i = 0; i < 4; i++)
        {
            _counters.Sample = _counters.Sample with { LimitHits = _counters.Sample.LimitHits + 1000 };
            _time.Advance(Tick);
        }

        _counters.Sample = _counters.Sample with { UsageBytes = Limit / 2 };
        _time.Advance(Tick);
        var reads = _counters.Reads;
        for (var i = 0; i < 40; i++)
        {
            _counters.Sample = _counters.Sample with { LimitHits = _counters.Sample.LimitHits + 1000 };
            _time.Advance(Tick);
        }

        _counters.Reads.ShouldBe(reads, "no sampling once disarmed");
        _events.ShouldBeEmpty();
    }

    [Fact]
    public void A_brief_thrash_interrupted_by_calm_starts_the_duration_over()
    {
        using var watcher = Start();
        ThrashAtLimit();
        for (var i = 0; i < 40; i++)
        {
            // 2 s of thrashing, then one calm sample, again and again: never 3 s in a row.
            var calm = i % 9 == 8;
            _counters.Sample = _counters.Sample with { LimitHits = _counters.Sample.LimitHits + (calm ? 0 : 1000) };
            _time.Advance(Tick);
        }

        _events.ShouldBeEmpty();
    }

    private void ThrashAtLimit()
    {
        _counters.Sample = _counters.Sample with { UsageBytes = Limit };
        _source.Fire(CgroupNotification.UsageThreshold);
    }

    private sealed class FakeCounters : IMemoryCounters
    {
        public MemorySample Sample { get; set; }

        public int Reads { get; private set; }

        public MemorySample Read()
        {
            Reads++;
            return Sample;
        }
    }

    private sealed class FakeEventSource : ICgroupEventSource
    {
        private Action<CgroupNotification>? _onNotify;

        public bool Disposed { get; private set; }

        public IDisposable Subscribe(Action<CgroupNotification> onNotify)
        {
            _onNotify = onNotify;
            return new Subscription(this);
        }

        public void Fire(CgroupNotification kind)
        {
            if (!Disposed)
            {
                _onNotify?.Invoke(kind);
            }
        }

        private sealed class Subscription(FakeEventSource source) : IDisposable
        {
            public void Dispose() => source.Disposed = true;
        }
    }
}
