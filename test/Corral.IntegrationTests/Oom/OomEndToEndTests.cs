using System.Diagnostics;
using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Corral.IntegrationTests.Supervision;
using Corral.Oom;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Oom;

/// <summary>Real kernel OOM kills, through the real CLI, on both runtimes, with the exact record.</summary>
public sealed class OomEndToEndTests
{
    private const string Allocate300Mb = "b = b'\\x01' * (300 << 20); print('survived')";

    public static TheoryData<string> Runtimes => TestRuntimes.All;

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Pid1OverTheLimitIsOomKilled(string runtime)
    {
        var run = await ExitDetectionTests.RunAsync(runtime, ["--memory", "64Mi"], "python3", "-c", Allocate300Mb);

        run.Result.ExitCode.ShouldBe(137, run.Result.Stderr);
        run.Result.Stdout.ShouldNotContain("survived");
        var record = run.Record!.RootElement;
        record.GetProperty("oomKilled").GetBoolean().ShouldBeTrue();
        record.GetProperty("oomReason").GetString().ShouldBe("kernel");
        record.GetProperty("oomKills").GetInt64().ShouldBeGreaterThanOrEqualTo(1);
        record.GetProperty("oomStrategy").GetString().ShouldBe("cgroup");
        record.GetProperty("memoryLimitBytes").GetInt64().ShouldBe(64L << 20);
        record.GetProperty("signal").GetString().ShouldBe("SIGKILL");
        record.GetProperty("peakMemoryBytes").GetInt64().ShouldBeGreaterThan(32L << 20);
        FirstOomEventAt(record).ShouldNotBeNull().ShouldBeLessThanOrEqualTo(record.GetProperty("exitedAt").GetDateTimeOffset());

        // The kernel's own log names the process its OOM killer chose: python3 itself, or under gVisor
        // (no OOM killer of its own) a process of the sandbox, which then ends whole.
        var victims = record.GetProperty("oomEvents").EnumerateArray().Where(e => e.GetProperty("kind").GetString() == "victim").ToList();
        victims.ShouldNotBeEmpty("the record names the process the kernel chose");
        victims.ShouldAllBe(v => v.GetProperty("victimPid").GetInt32() > 0);
        if (runtime != "gvisor")
        {
            victims.Select(v => v.GetProperty("victimProcess").GetString()).ShouldContain("python3");
        }

        run.Result.Stderr.ShouldContain("OOM kill");
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task AKillWhoseKernelReportWasRateLimitedStillNamesItsVictim(string runtime)
    {
        // The kernel logs its full OOM report (the line naming the cgroup) at most 10 times in 5 s host-wide;
        // beside the parallel suite that burst was spent and the record named no one (crun, once in CI).
        // Spend it here with a dozen kills in a cgroup of the test's own, then kill the container at once.
        await SpendTheKernelsOomReportBurstAsync();
        var run = await ExitDetectionTests.RunAsync(runtime, ["--memory", "64Mi"], "python3", "-c", Allocate300Mb);

        run.Result.ExitCode.ShouldBe(137, run.Result.Stderr);
        var victims = run.Record!.RootElement.GetProperty("oomEvents").EnumerateArray().Where(e => e.GetProperty("kind").GetString() == "victim").ToList();
        victims.ShouldHaveSingleItem("the record names the process the kernel chose, once").GetProperty("victimPid").GetInt32().ShouldBe(run.Record!.RootElement.GetProperty("pid").GetInt32());
        TestContext.Current.TestOutputHelper?.WriteLine(victims[0].GetProperty("detail").GetString() ?? "");
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    /// <summary>
    /// OOM kills in a cgroup of the test's own until the kernel logs one without its report: rounds of 12 at
    /// once (the guest of the v2 lane is too slow to pass 10 in 5 s one after another), each a `dd` whose
    /// 32 MiB buffer fills under a 16 MiB limit.
    /// </summary>
    private static async Task SpendTheKernelsOomReportBurstAsync()
    {
        using var log = KernelLogCursor.TryOpenAtEnd().ShouldNotBeNull("the tests run with CAP_SYSLOG");
        var v2 = File.Exists("/sys/fs/cgroup/cgroup.controllers");
        var cgroup = v2 ? $"/sys/fs/cgroup/corral-test-burst-{Guid.NewGuid():N}" : $"/sys/fs/cgroup/memory/corral-test-burst-{Guid.NewGuid():N}";
        Directory.CreateDirectory(cgroup);
        try
        {
            await File.WriteAllTextAsync(Path.Combine(cgroup, v2 ? "memory.max" : "memory.limit_in_bytes"), (16 << 20).ToString(System.Globalization.CultureInfo.InvariantCulture));
            for (var round = 1; round <= 5; round++)
            {
                var pids = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => KillOneAsync(cgroup)));
                var lines = log.ReadRecords().Where(r => pids.Contains(r.Pid)).ToList();
                var suppressed = lines.Where(r => !r.NamesCgroups).Select(r => r.Pid).Except(lines.Where(r => r.NamesCgroups).Select(r => r.Pid)).Count();
                if (suppressed > 0)
                {
                    TestContext.Current.TestOutputHelper?.WriteLine($"the kernel suppressed the OOM report of {suppressed} of {round * 12} kills");
                    return;
                }
            }

            throw new InvalidOperationException("60 OOM kills in five rounds were all reported in full: the kernel no longer rate-limits its OOM report");
        }
        finally
        {
            Directory.Delete(cgroup);
        }

        static async Task<int> KillOneAsync(string cgroup)
        {
            var info = new ProcessStartInfo("sh", ["-c", $"echo $$ > {cgroup}/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=32M count=1 status=none"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(info)!;
            await Task.WhenAll(process.StandardOutput.ReadToEndAsync(), process.StandardError.ReadToEndAsync());
            await process.WaitForExitAsync();
            process.ExitCode.ShouldBe(137, "a kill in the test's own cgroup");
            return process.Id;
        }
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(TestRuntimes.Native), MemberType = typeof(TestRuntimes))]
    public async Task ChildOomKilledWhilePid1LivesOnIsReportedWhileItRuns(string runtime)
    {
        // runc and crun: the kernel kills the child alone (gVisor ends the whole sandbox; its own test).
        var script = "import subprocess, sys, time\n" +
                     $"r = subprocess.run([sys.executable, '-c', \"{Allocate300Mb}\"])\n" +
                     "print('child exited', r.returncode, flush=True)\ntime.sleep(1.5)\nsys.exit(0)";
        var run = await ExitDetectionTests.RunAsync(runtime, ["--memory", "64Mi"], "python3", "-c", script);

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.ShouldContain("child exited -9");
        var record = run.Record!.RootElement;
        record.GetProperty("oomKilled").GetBoolean().ShouldBeFalse();
        record.GetProperty("oomKills").GetInt64().ShouldBeGreaterThanOrEqualTo(1);
        var oomAt = FirstOomEventAt(record).ShouldNotBeNull();
        (record.GetProperty("exitedAt").GetDateTimeOffset() - oomAt).ShouldBeGreaterThan(TimeSpan.FromSeconds(1), "the OOM event comes while PID 1 still runs");
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task SteadyUseAtNinetyPercentIsNotReported(string runtime)
    {
        // 90 % of 128Mi held for 4 s: the seed's 95 %-of-RSS poller would flag it under gVisor,
        // whose own footprint counts; the kernel does not kill, so Corral reports nothing.
        var script = "import time\nb = b'\\x01' * int(0.9 * (128 << 20) - (12 << 20))\nt = time.time()\nwhile time.time() - t < 4: time.sleep(0.1)\nprint('done')";
        var run = await ExitDetectionTests.RunAsync(runtime, ["--memory", "128Mi"], "python3", "-c", script);

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.ShouldContain("done");
        var record = run.Record!.RootElement;
        record.GetProperty("oomKilled").GetBoolean().ShouldBeFalse();
        record.GetProperty("oomKills").GetInt64().ShouldBe(0);
        record.GetProperty("oomEvents").GetArrayLength().ShouldBe(0);
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ShortSpikeAboveTheLimitIsDetected(string runtime)
    {
        // A child that would hold 300 MB for under 100 ms: far shorter than a 500 ms poll.
        var script = "import subprocess, sys, time\n" +
                     "r = subprocess.run([sys.executable, '-c', \"import time; b = b'\\\\x01' * (300 << 20); time.sleep(0.05)\"])\n" +
                     "print('spike child', r.returncode, flush=True)";
        var run = await ExitDetectionTests.RunAsync(runtime, ["--memory", "64Mi"], "python3", "-c", script);

        var record = run.Record!.RootElement;
        record.GetProperty("oomKills").GetInt64().ShouldBeGreaterThanOrEqualTo(1, run.Result.Stderr);
        FirstOomEventAt(record).ShouldNotBeNull();
        if (TestRuntimes.HostProcesses(runtime))
        {
            run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
            run.Result.Stdout.ShouldContain("spike child -9");
        }
        else
        {
            // gVisor: the host kills a sandbox process and the sentry ends the whole sandbox.
            run.Result.ExitCode.ShouldBe(137, run.Result.Stderr);
            record.GetProperty("oomKilled").GetBoolean().ShouldBeTrue();
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ManySmallChildrenTogetherOverTheLimitAreDetected(string runtime)
    {
        var script = "import subprocess, sys\n" +
                     "kids = [subprocess.Popen([sys.executable, '-c', \"import time; b = b'\\\\x01' * (16 << 20); time.sleep(3)\"]) for _ in range(8)]\n" +
                     "codes = [k.wait() for k in kids]\nprint('codes', sorted(codes), flush=True)";
        var run = await ExitDetectionTests.RunAsync(runtime, ["--memory", "64Mi"], "python3", "-c", script);

        var record = run.Record!.RootElement;
        record.GetProperty("oomKills").GetInt64().ShouldBeGreaterThanOrEqualTo(1, run.Result.Stderr + run.Result.Stdout);
        FirstOomEventAt(record).ShouldNotBeNull();
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Fact]
    public async Task GvisorAtATooSmallLimitIsEndedAndReportedWithinABoundedTime()
    {
        // The seed's livelock case: a gVisor sandbox whose whole cgroup is 32 MiB while python holds
        // 20 MB. Where it was measured (notes) the sandbox sat at the limit with no kill; on this
        // cgroup v1 kernel the kernel kills it. Either way Corral must end it and say it was memory:
        // the livelock rule (97 %, 1000 limit hits/s, 3 s) ends it when the kernel does not.
        var watch = Stopwatch.StartNew();
        var run = await ExitDetectionTests.RunAsync(
            "gvisor",
            ["--memory", "32Mi", "--gvisor-memory-allowance", "0", "--timeout", "120s"],
            "python3",
            "-c",
            "import time\nb = b'\\x01' * (20 << 20)\nwhile True: time.sleep(1)");

        run.Result.ExitCode.ShouldBe(137, run.Result.Stderr);
        var record = run.Record!.RootElement;
        record.GetProperty("timedOut").GetBoolean().ShouldBeFalse("memory, not the timeout, must end it");
        record.GetProperty("oomKilled").GetBoolean().ShouldBeTrue();
        record.GetProperty("oomReason").GetString().ShouldBeOneOf("livelock", "kernel");
        watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(60));
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task HeavyFileIoAtTheLimitIsNotMistakenForALivelock()
    {
        // Page cache fills any limit and the kernel reclaims it all the time: that is no livelock. Each file's
        // cached pages are dropped before it is read, so that they are charged to this container: pages an
        // earlier run (of this test, on this host) brought in stay charged to that run's parent cgroup.
        var script = "import os, time\nb = b'\\x01' * (40 << 20)\nt = time.time()\n" +
                     "while time.time() - t < 6:\n" +
                     "    for root, dirs, files in os.walk('/usr'):\n" +
                     "        for f in files:\n" +
                     "            try:\n" +
                     "                with open(os.path.join(root, f), 'rb') as fh:\n" +
                     "                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)\n" +
                     "                    while fh.read(1 << 20): pass\n" +
                     "            except OSError: pass\n" +
                     "print('done', flush=True)";
        var run = await ExitDetectionTests.RunAsync("runc", ["--memory", "64Mi"], "python3", "-c", script);

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.ShouldContain("done");
        var record = run.Record!.RootElement;
        record.GetProperty("oomKilled").GetBoolean().ShouldBeFalse();
        record.GetProperty("peakMemoryBytes").GetInt64().ShouldBeGreaterThan(60L << 20, "the workload really sat at its limit");
    }

    [Fact]
    public async Task EightContainersTimesTenRoundsAllReportedAsOom()
    {
        var rootfs = await TestHost.RootfsAsync();
        for (var round = 0; round < 10; round++)
        {
            var runs = Enumerable.Range(0, 8).Select(async i =>
            {
                var runtime = TestRuntimes.Rotation(i);
                var id = TestHost.NewId($"oom{round}x{i}");
                var file = Path.Combine(Path.GetTempPath(), id + ".json");
                var result = await CorralProcess.RunAsync(
                    ["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--memory", "64Mi", "--result-file", file, "--", "python3", "-c", Allocate300Mb],
                    TimeSpan.FromSeconds(120));
                using var record = JsonDocument.Parse(await File.ReadAllTextAsync(file));
                File.Delete(file);
                return (id, runtime, result, oom: record.RootElement.GetProperty("oomKilled").GetBoolean());
            }).ToList();

            foreach (var (id, runtime, result, oom) in await Task.WhenAll(runs))
            {
                result.ExitCode.ShouldBe(137, $"{runtime} round {round}: {result.Stderr}");
                oom.ShouldBeTrue($"{runtime} round {round}");
                (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            }
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task NoMemoryOptionMeansNoLimitNoWatcherNoFalseReport(string runtime)
    {
        var run = await ExitDetectionTests.RunAsync(runtime, "python3", "-c", Allocate300Mb);

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.ShouldContain("survived");
        var record = run.Record!.RootElement;
        record.GetProperty("oomKilled").GetBoolean().ShouldBeFalse();
        record.GetProperty("oomKills").GetInt64().ShouldBe(0);
        record.GetProperty("oomStrategy").ValueKind.ShouldBe(JsonValueKind.Null);
        record.GetProperty("memoryLimitBytes").ValueKind.ShouldBe(JsonValueKind.Null);
        record.GetProperty("peakMemoryBytes").GetInt64().ShouldBeGreaterThan(300L << 20, "the cgroup still accounts what it used");
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task StatsReadTheRunningContainersCgroup(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("stats");
        using var process = CorralProcess.Start(["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--memory", "96Mi", "--pids", "200", "--",
            "python3", "-c", "import time\nb = b'\\x01' * (24 << 20)\nprint('ready', flush=True)\ntime.sleep(60)"]);
        (await process.StandardOutput.ReadLineAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken)).ShouldBe("ready");

        var stats = await CorralProcess.RunAsync(["stats", id, "--json"]);
        var ps = await CorralProcess.RunAsync(["ps"]);
        await CorralProcess.RunAsync(["kill", id, "--signal", "KILL"]);
        await process.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);

        stats.ExitCode.ShouldBe(0, stats.Stderr);
        using var doc = JsonDocument.Parse(stats.Stdout);
        var cgroup = doc.RootElement.GetProperty("cgroup");
        cgroup.GetProperty("memoryCurrentBytes").GetInt64().ShouldBeGreaterThan(24L << 20);
        cgroup.GetProperty("pidsCurrent").GetInt64().ShouldBeGreaterThan(0);
        // The cgroup's own limit: gVisor's sandbox gets its pids allowance (64 by default) on top of --pids.
        cgroup.GetProperty("pidsLimit").GetInt64().ShouldBe(runtime == "gvisor" ? 200 + 64 : 200);
        if (runtime == "gvisor")
        {
            doc.RootElement.GetProperty("sandboxStats").GetString().ShouldNotBeNull().ShouldContain("memory");
        }

        ps.Stdout.ShouldContain(id);
        ps.Stdout.ShouldContain("MEMORY LIMIT");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    private static DateTimeOffset? FirstOomEventAt(JsonElement record)
    {
        var events = record.GetProperty("oomEvents");
        return events.GetArrayLength() == 0 ? null : events[0].GetProperty("at").GetDateTimeOffset();
    }
}
