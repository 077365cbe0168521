using System.Collections.Concurrent;
using System.Diagnostics;
using Corral.Cgroups;
using Corral.Common;
using Corral.IntegrationTests.Infrastructure;
using Corral.Oom;
using Microsoft.Extensions.Options;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Cgroups;

/// <summary>
/// Real cgroups, real OOM kills, as root. One class so the tests run one after the other: each OOMs
/// its own 64 MiB cgroup, and they would compete for the machine's memory and CPU if run together.
/// </summary>
[Trait("Lane", "cgroup2")]
public sealed class RealCgroupOomTests(ITestOutputHelper output)
{
    private const long Limit = 64L * 1024 * 1024;
    // A hang catcher, scaled in the emulated v2 guest (six python children allocating at once passed 10 s there once).
    private static readonly TimeSpan Deadline = TestHost.Scaled(TimeSpan.FromSeconds(10));

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // like runc: the workload sits in a child cgroup "ctr" of the container cgroup
    public async Task Allocation_over_the_limit_is_oom_killed_and_reported_before_stop_returns(bool inChildCgroup)
    {
        using var cg = TestCgroup.Create(new ResourceLimits(MemoryBytes: Limit));
        var events = new EventLog();
        using var watcher = CreateWatcher(cg.Cgroup);
        watcher.Strategy.ShouldBe(OomStrategy.Cgroup);
        watcher.Start(events.Add);

        var procsFiles = inChildCgroup ? cg.CreateChild("ctr") : cg.Cgroup.ProcsFiles;
        var exit = await RunInCgroupAsync(procsFiles, $"exec {Python} -c 'b=bytearray(300*1024*1024)'");
        var summary = watcher.Stop();

        exit.ExitCode.ShouldBe(137, "SIGKILL by the OOM killer");
        var kill = events.Snapshot().ShouldHaveSingleItem();
        kill.Event.Kind.ShouldBe(OomEventKind.Kill);
        kill.Event.OomKills.ShouldBeGreaterThanOrEqualTo(1);
        summary.OomKills.ShouldBeGreaterThanOrEqualTo(1);
        summary.Livelock.ShouldBeFalse();

        var stats = cg.Cgroup.ReadStats();
        stats.OomKills.ShouldBeGreaterThanOrEqualTo(1);
        stats.MemoryPeakBytes.ShouldNotBeNull().ShouldBeGreaterThan((long)(Limit * 0.9));
        stats.MemoryPeakBytes.Value.ShouldBeLessThanOrEqualTo(Limit);
        stats.MemoryLimitBytes.ShouldBe(Limit);
        stats.MemoryLimitHits.ShouldBeGreaterThan(0);
        PrintLatency(exit, kill);
    }

    [Fact]
    public async Task Process_staying_at_half_the_limit_raises_no_event()
    {
        using var cg = TestCgroup.Create(new ResourceLimits(MemoryBytes: Limit));
        var events = new EventLog();
        using var watcher = CreateWatcher(cg.Cgroup);
        watcher.Start(events.Add);

        var exit = await RunInCgroupAsync(
            cg.Cgroup.ProcsFiles,
            $"exec {Python} -c 'import time; b=bytearray(b\"x\")*(32*1024*1024); time.sleep(1.5)'");
        var summary = watcher.Stop();

        exit.ExitCode.ShouldBe(0);
        events.Snapshot().ShouldBeEmpty();
        summary.ShouldBe(new OomSummary(0, false, false));
        var stats = cg.Cgroup.ReadStats();
        stats.OomKills.ShouldBe(0);
        stats.MemoryPeakBytes.ShouldNotBeNull().ShouldBeGreaterThan(32L * 1024 * 1024);
    }

    [Fact]
    public async Task Short_spike_in_a_child_that_dies_fast_is_detected_though_the_container_exits_0()
    {
        using var cg = TestCgroup.Create(new ResourceLimits(MemoryBytes: Limit));
        var events = new EventLog();
        using var watcher = CreateWatcher(cg.Cgroup);
        watcher.Start(events.Add);

        // The fallback polls every 500 ms: it almost never sees a spike this short.
        var treeEvents = new EventLog();
        using var treeWatcher = new ProcessTreeMemoryWatcher(() => null, Limit, new OomOptions(), TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        treeWatcher.Start(treeEvents.Add);

        var exit = await RunInCgroupAsync(
            cg.Cgroup.ProcsFiles,
            $"{Python} -c 'b=bytearray(200*1024*1024)'; sleep 0.3; exit 0",
            onStarted: treeWatcher.AttachProcess);
        var summary = watcher.Stop();
        var treeSummary = treeWatcher.Stop();

        exit.ExitCode.ShouldBe(0);
        events.Snapshot().ShouldHaveSingleItem().Event.Kind.ShouldBe(OomEventKind.Kill);
        summary.OomKills.ShouldBe(1);
        output.WriteLine($"process-tree fallback on the same spike: likely={treeSummary.Likely}");
    }

    [Fact]
    public async Task Many_small_children_together_over_the_limit_are_detected()
    {
        using var cg = TestCgroup.Create(new ResourceLimits(MemoryBytes: Limit));
        var events = new EventLog();
        using var watcher = CreateWatcher(cg.Cgroup);
        watcher.Start(events.Add);

        var child = $"{Python} -c 'import time; b=bytearray(b\"x\")*(16*1024*1024); time.sleep(2)'";
        var exit = await RunInCgroupAsync(
            cg.Cgroup.ProcsFiles,
            $"for i in 1 2 3 4 5 6; do {child} & done; wait; exit 0");
        var summary = watcher.Stop();

        exit.ExitCode.ShouldBe(0);
        events.Snapshot().ShouldNotBeEmpty();
        var first = events.Snapshot()[0];
        first.Event.Kind.ShouldBe(OomEventKind.Kill);
        summary.OomKills.ShouldBeGreaterThanOrEqualTo(1);
        events.Snapshot().Last().Event.OomKills.ShouldBe(summary.OomKills);
        output.WriteLine($"children killed: {summary.OomKills}");
    }

    [Fact]
    public async Task Remove_kills_what_is_left_and_leaves_no_directory_in_any_controller()
    {
        var cg = TestCgroup.Create(new ResourceLimits(MemoryBytes: Limit, Cpus: 0.5, Pids: 64));
        try
        {
            cg.CreateChild("ctr");
            var process = StartInCgroup(cg.Cgroup.ProcsFiles, "sleep 100 & sleep 100");
            await WaitUntilAsync(() => cg.Cgroup.ListProcesses().Count >= 2);
            cg.Cgroup.ReadStats().PidsCurrent.ShouldBeGreaterThanOrEqualTo(2);

            cg.Cgroup.Remove();

            await process.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(Deadline, TestContext.Current.CancellationToken);
            process.ExitCode.ShouldBe(137);
            foreach (var dir in cg.Directories)
            {
                Directory.Exists(dir).ShouldBeFalse(dir);
            }
        }
        finally
        {
            cg.Dispose();
        }
    }

    [Fact]
    public void Limits_are_written_to_the_kernel_and_read_back_by_open()
    {
        using var cg = TestCgroup.Create(new ResourceLimits(MemoryBytes: Limit, Cpus: 0.5, Pids: 64));
        var reopened = cg.Driver.Open(cg.Cgroup.ContainerId).ShouldNotBeNull();
        reopened.Limits.ShouldBe(new ResourceLimits(Limit, 0.5, 64));
        reopened.MemoryDirectory.ShouldBe(cg.Cgroup.MemoryDirectory);
        cg.Driver.Open("it-missing-" + Guid.NewGuid().ToString("N")[..8]).ShouldBeNull();
        var stats = cg.Cgroup.ReadStats();
        stats.MemoryLimitBytes.ShouldBe(Limit);
        stats.PidsLimit.ShouldBe(64);
        stats.OomKills.ShouldBe(0);
    }

    [Fact]
    public void Create_is_all_or_nothing_when_the_kernel_refuses_a_limit()
    {
        var driver = TestCgroup.DetectDriver();
        var id = TestCgroup.NewId();

        // A 10 us CFS quota is below the kernel's 1 ms minimum: EINVAL after the directories exist.
        var ex = Should.Throw<CorralException>(() => driver.Create(id, new ResourceLimits(MemoryBytes: Limit, Cpus: 0.0001)));

        output.WriteLine(ex.Message);
        ex.Message.ShouldContain(id);
        ex.Message.ShouldNotContain("\n");
        driver.Open(id).ShouldBeNull();
        TestCgroup.ControllerDirectories(driver, id).ShouldAllBe(d => !Directory.Exists(d));
    }

    private static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    private static IOomWatcher CreateWatcher(IContainerCgroup cgroup) =>
        new OomWatcherFactory(RealCgroupFileSystem.Instance, Options.Create(new OomOptions()), TimeProvider.System)
            .Create(cgroup, null, () => null).ShouldNotBeNull();

    private static Process StartInCgroup(IReadOnlyList<string> procsFiles, string script)
    {
        var join = string.Concat(procsFiles.Select(f => $"echo $$ > {f} && "));
        var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add($"{join}{{ {script}; }}");
        return Process.Start(info) ?? throw new InvalidOperationException("could not start /bin/sh");
    }

    private static async Task<ExitInfo> RunInCgroupAsync(IReadOnlyList<string> procsFiles, string script, Action<int>? onStarted = null)
    {
        using var process = StartInCgroup(procsFiles, script);
        onStarted?.Invoke(process.Id);
        try
        {
            await process.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(Deadline, TestContext.Current.CancellationToken);
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return new ExitInfo(process.ExitCode, Stopwatch.GetTimestamp());
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(Deadline.TotalSeconds * Stopwatch.Frequency);
        while (!condition())
        {
            Stopwatch.GetTimestamp().ShouldBeLessThan(deadline, "condition not met within the deadline");
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
    }

    private void PrintLatency(ExitInfo exit, Seen kill)
    {
        var ms = (kill.Timestamp - exit.ObservedAt) * 1000.0 / Stopwatch.Frequency;
        output.WriteLine(ms <= 0
            ? $"OOM event arrived {-ms:F1} ms before the exit was observed"
            : $"OOM event arrived {ms:F1} ms after the exit was observed");
        Console.WriteLine($"[oom-latency] event_minus_exit_ms={ms:F1}");
    }

    private sealed record ExitInfo(int ExitCode, long ObservedAt);

    private sealed record Seen(OomEvent Event, long Timestamp);

    private sealed class EventLog
    {
        private readonly ConcurrentQueue<Seen> _events = new();

        public void Add(OomEvent e) => _events.Enqueue(new Seen(e, Stopwatch.GetTimestamp()));

        public IReadOnlyList<Seen> Snapshot() => _events.ToArray();
    }
}
