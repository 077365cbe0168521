using System.Diagnostics;
using System.Globalization;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// What idle sandboxes cost: memory per idle gVisor sandbox with 100 of them (figures to
/// .build/daemon-figures.md; one shim each and nothing left after, asserted). The daemon path's latency
/// and throughput against the bare runtime are the bench's (`./corral bench --only daemon`).
/// </summary>
[Collection(DaemonLoadCollection.Name)]
public sealed class DaemonCostTests(DaemonFixture fixture)
{
    private const int IdleSandboxes = 100;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string FiguresFile => Path.Combine(CorralProcess.RepoRoot, ".build", "daemon-figures.md");

    [Fact]
    public async Task MemoryPerIdleGvisorSandboxWithAHundredOfThem()
    {
        var before = RssKib(fixture.Daemon.Pid);
        var ids = new List<string>();
        try
        {
            // Idle sandboxes (no command): what a platform keeps warm to exec into. Started a few at a
            // time, as a platform's pool fills: a hundred gVisor boots at once only measure the CPU.
            const int Wave = 5;
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < IdleSandboxes; i += Wave)
            {
                var wave = await Task.WhenAll(Enumerable.Range(0, Wave).Select(_ =>
                    fixture.Client.CreateAsync(DaemonSandboxTests.Request("gvisor", [], r => r.Labels["cost"] = "idle", fixture.Rootfs), Ct)));
                ids.AddRange(wave.Select(fixture.Track));
                await Task.WhenAll(wave.Select(id => new Corral.Client.Sandbox(fixture.Client, id).WaitRunningAsync(Ct)));
            }

            var startSeconds = watch.Elapsed.TotalSeconds;
            await Task.Delay(TimeSpan.FromSeconds(2), Ct);

            // Idle costs no CPU: no timer or poll per sandbox (the daemon wakes on inotify and the shims' exits).
            var cpuBefore = CpuMs(fixture.Daemon.Pid);
            await Task.Delay(TimeSpan.FromSeconds(10), Ct);
            var idleCpuMs = CpuMs(fixture.Daemon.Pid) - cpuBefore;
            var with = RssKib(fixture.Daemon.Pid);
            var shims = ShimPids(fixture.Daemon.StateDir);
            shims.Count.ShouldBe(IdleSandboxes, "one shim per sandbox");
            idleCpuMs.ShouldBeLessThanOrEqualTo(200, $"the daemon used {idleCpuMs} ms of CPU in 10 s with {IdleSandboxes} idle sandboxes");
            var shimPss = shims.Select(PssKib).ToList();
            var shimRss = shims.Select(RssKib).ToList();
            var cgroup = new List<double>();
            foreach (var id in ids)
            {
                cgroup.Add((await fixture.Client.StatsAsync(id, Ct)).MemoryCurrentBytes / 1024.0);
            }

            Report(
                "rss",
                $"| {IdleSandboxes} idle gVisor sandboxes (all running after {startSeconds:0} s) | daemon RSS {before / 1024.0:0.0} MiB before, {with / 1024.0:0.0} MiB with them (GC makes the difference noise; the whole daemon over {IdleSandboxes} is {with / 1024.0 / IdleSandboxes:0.00} MiB each at most) | shim per sandbox: PSS {Median(shimPss) / 1024:0.0} MiB, RSS {Median(shimRss) / 1024:0.0} MiB (medians) | the sandbox's own cgroup (runsc, gofer, sentry, idle PID 1): {Median(cgroup) / 1024:0.0} MiB median | daemon CPU while they idle: {idleCpuMs} ms in 10 s |");
        }
        finally
        {
            await Task.WhenAll(ids.Select(id => fixture.Client.RemoveAsync(id, Ct, force: true)));
        }

        foreach (var id in ids)
        {
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }

    /// <summary>The shims serving this daemon's sandboxes (each runs in its sandbox's directory).</summary>
    private static List<int> ShimPids(string stateDir)
    {
        var sandboxes = Path.Combine(stateDir, "sandboxes");
        return [.. TestHost.ShimProcesses(sandboxes).Where(s => s.Cwd.StartsWith(sandboxes + "/", StringComparison.Ordinal)).Select(s => s.Pid)];
    }

    /// <summary>User and system CPU time of <paramref name="pid"/> so far, in ms (clock ticks of 10 ms).</summary>
    private static long CpuMs(int pid)
    {
        var fields = File.ReadAllText($"/proc/{pid}/stat").Split(')')[^1].Split(' ', StringSplitOptions.RemoveEmptyEntries);

        // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) * 10;
    }

    private static double PssKib(int pid) => StatusKib($"/proc/{pid}/smaps_rollup", "Pss:");

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static void Report(string key, string line)
    {
        TestContext.Current.TestOutputHelper?.WriteLine(line);
        var lines = File.Exists(FiguresFile) ? File.ReadAllLines(FiguresFile).Where(l => !l.Contains($"<!-- {key} -->", StringComparison.Ordinal)).ToList() : [];
        lines.Add($"{line} <!-- {key} --> {DateTimeOffset.UtcNow:u}");
        Directory.CreateDirectory(Path.GetDirectoryName(FiguresFile)!);
        File.WriteAllLines(FiguresFile, lines);
    }

    private static double RssKib(int pid) => StatusKib($"/proc/{pid}/status", "VmRSS:");

    private static double StatusKib(string file, string field)
    {
        var line = File.ReadAllLines(file).First(l => l.StartsWith(field, StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }
}
