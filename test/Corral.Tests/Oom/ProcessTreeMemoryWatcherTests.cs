using Corral.Oom;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Shouldly;
using Xunit;

namespace Corral.Tests.Oom;

public sealed class ProcessTreeMemoryWatcherTests
{
    private const long Limit = 100L * 1024 * 1024;
    private static readonly TimeSpan Interval = new OomOptions().ProcessTreeInterval;

    private readonly FakeTimeProvider _time = new();
    private readonly FakeProcessTable _table = new();
    private readonly List<OomEvent> _events = [];

    private ProcessTreeMemoryWatcher Start(Func<int?>? rootPid = null)
    {
        var watcher = new ProcessTreeMemoryWatcher(rootPid ?? (() => 1), Limit, new OomOptions(), _time, NullLogger.Instance, _table);
        watcher.Start(_events.Add);
        return watcher;
    }

    [Fact]
    public void Steady_ninety_percent_over_the_tree_raises_nothing()
    {
        _table.Set(1, Limit * 60 / 100, children: [2]);
        _table.Set(2, Limit * 30 / 100, children: [3]);
        _table.Set(3, 0);
        var watcher = Start();

        _time.Advance(Interval * 10);

        _events.ShouldBeEmpty();
        watcher.Stop().ShouldBe(new OomSummary(0, false, false));
    }

    [Fact]
    public void Ninety_seven_percent_of_the_tree_is_likely_once()
    {
        _table.Set(1, Limit * 50 / 100, children: [2]);
        _table.Set(2, Limit * 47 / 100);
        var watcher = Start();

        _time.Advance(Interval * 10);

        var likely = _events.ShouldHaveSingleItem();
        likely.Kind.ShouldBe(OomEventKind.Likely);
        likely.MemoryBytes.ShouldBe(Limit * 97 / 100);
        watcher.Stop().ShouldBe(new OomSummary(0, false, true));
    }

    /// <summary>
    /// The seed's weakness: a spike that comes and goes between two polls is never seen. The cgroup
    /// watcher is told by the kernel itself (see the integration test of a short spike).
    /// </summary>
    [Fact]
    public void A_spike_between_two_polls_is_missed()
    {
        _table.Set(1, Limit / 2);
        var watcher = Start();

        _time.Advance(Interval / 5);
        _table.Set(1, Limit * 2); // over the limit: the kernel would OOM-kill here
        _time.Advance(Interval / 5);
        _table.Set(1, Limit / 2);
        _time.Advance(Interval * 4);

        _events.ShouldBeEmpty();
        watcher.Stop().Likely.ShouldBeFalse();
    }

    [Fact]
    public void The_pid_may_come_after_start()
    {
        _table.Set(42, Limit);
        int? pid = null;
        var watcher = Start(() => pid);

        _time.Advance(Interval * 3);
        _events.ShouldBeEmpty();
        watcher.AttachProcess(42);
        _time.Advance(Interval);

        _events.ShouldHaveSingleItem().Kind.ShouldBe(OomEventKind.Likely);
    }

    [Fact]
    public void A_gone_root_raises_nothing_and_stop_is_idempotent()
    {
        var watcher = Start();
        _time.Advance(Interval * 3);
        var summary = watcher.Stop();
        watcher.Stop().ShouldBeSameAs(summary);
        _events.ShouldBeEmpty();
    }

    private sealed class FakeProcessTable : IProcessTable
    {
        private readonly Dictionary<int, (long Rss, int[] Children)> _processes = [];

        public void Set(int pid, long rss, int[]? children = null) => _processes[pid] = (rss, children ?? []);

        public IReadOnlyList<int> Children(int pid) => _processes.TryGetValue(pid, out var p) ? p.Children : [];

        public long? RssBytes(int pid) => _processes.TryGetValue(pid, out var p) ? p.Rss : null;
    }
}
