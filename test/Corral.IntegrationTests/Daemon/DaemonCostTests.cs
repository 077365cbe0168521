using System.Diagnostics;
using System.Globalization;
using System.Text;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// What the daemon costs: latency added per sandbox lifecycle against bare `runc run` of the same
/// bundle, and its memory with 20 idle gVisor sandboxes. Figures go to .build/daemon-figures.md;
/// timing is never asserted, correctness and cleanup are.
/// </summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonCostTests(DaemonFixture fixture)
{
    private const int Rounds = 10;
    private const int IdleSandboxes = 20;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string FiguresFile => Path.Combine(CorralProcess.RepoRoot, ".build", "daemon-figures.md");

    [Fact]
    public async Task LifecycleLatencyAgainstBareRunc()
    {
        // The bundle Corral would use, from `corral spec`, run by runc itself.
        var spec = await CorralProcess.RunAsync(["spec", "--rootfs", fixture.Rootfs, "--", "true"]);
        spec.ExitCode.ShouldBe(0, spec.Stderr);
        var bundle = Directory.CreateTempSubdirectory("corral-bare-bundle-").FullName;
        var root = Directory.CreateTempSubdirectory("corral-bare-runc-").FullName;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(bundle, "config.json"), spec.Stdout, Ct);
            var bare = new List<double>();
            var daemon = new List<double>();
            for (var i = 0; i < Rounds + 1; i++)
            {
                var id = TestHost.NewId("bare");
                var watch = Stopwatch.StartNew();
                var run = await RunAsync("runc", ["--root", root, "run", "--bundle", bundle, id]);
                var bareMs = watch.Elapsed.TotalMilliseconds;
                run.ShouldBe(0);

                watch.Restart();
                var created = fixture.Track(await fixture.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["true"], rootfs: fixture.Rootfs), Ct));
                var exit = await fixture.Client.WaitAsync(created, Ct);
                var daemonMs = watch.Elapsed.TotalMilliseconds;
                exit.ExitCode.ShouldBe(0);
                await fixture.Client.RemoveAsync(created, Ct);
                (await TestHost.LeaksAsync(created)).ShouldBeEmpty();

                // The first round warms caches and the daemon's JIT.
                if (i > 0)
                {
                    bare.Add(bareMs);
                    daemon.Add(daemonMs);
                }
            }

            var bareMedian = Median(bare);
            var daemonMedian = Median(daemon);
            Report(
                "lifecycle",
                $"| lifecycle `/bin/true`, runc, median of {Rounds} | bare `runc run` {bareMedian:0.0} ms | daemon Create→Wait {daemonMedian:0.0} ms (+{daemonMedian - bareMedian:0.0} ms, {daemonMedian / bareMedian:0.00}x) |");
        }
        finally
        {
            Directory.Delete(bundle, recursive: true);
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task MemoryWithTwentyIdleGvisorSandboxes()
    {
        var before = RssKib(fixture.Daemon.Pid);
        var ids = new List<string>();
        try
        {
            for (var i = 0; i < IdleSandboxes; i++)
            {
                ids.Add(fixture.Track(await fixture.Client.CreateAsync(DaemonSandboxTests.Request("gvisor", ["sleep", "3600"], r => r.Labels["cost"] = "idle", fixture.Rootfs), Ct)));
            }

            var watch = Stopwatch.StartNew();
            while ((await fixture.Client.ListAsync(new Dictionary<string, string> { ["cost"] = "idle" }, [SandboxState.Running], Ct)).Count < IdleSandboxes)
            {
                watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(120), "20 gVisor sandboxes did not all start");
                await Task.Delay(100, Ct);
            }

            await Task.Delay(TimeSpan.FromSeconds(2), Ct);
            GC.KeepAlive(ids);
            var with = RssKib(fixture.Daemon.Pid);
            Report(
                "rss",
                $"| daemon RSS | idle, no sandboxes {before / 1024.0:0.0} MiB | with {IdleSandboxes} idle gVisor sandboxes {with / 1024.0:0.0} MiB (+{(with - before) / 1024.0 / IdleSandboxes:0.00} MiB each) |");
        }
        finally
        {
            foreach (var id in ids)
            {
                await fixture.Client.KillAsync(id, "KILL", TimeSpan.Zero, Ct);
            }

            foreach (var id in ids)
            {
                (await fixture.Client.WaitAsync(id, Ct)).ExitCode.ShouldBe(137);
                await fixture.Client.RemoveAsync(id, Ct);
            }
        }

        foreach (var id in ids)
        {
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }

    private static void Report(string key, string line)
    {
        TestContext.Current.TestOutputHelper?.WriteLine(line);
        var lines = File.Exists(FiguresFile) ? File.ReadAllLines(FiguresFile).Where(l => !l.Contains($"<!-- {key} -->", StringComparison.Ordinal)).ToList() : [];
        lines.Add($"{line} <!-- {key} --> {DateTimeOffset.UtcNow:u}");
        Directory.CreateDirectory(Path.GetDirectoryName(FiguresFile)!);
        File.WriteAllLines(FiguresFile, lines);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static long RssKib(int pid)
    {
        var line = File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }

    private static async Task<int> RunAsync(string file, string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, StandardOutputEncoding = Encoding.UTF8 };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync(Ct);
        var stderr = process.StandardError.ReadToEndAsync(Ct);
        await process.WaitForExitAsync(Ct);
        await Task.WhenAll(stdout, stderr);
        return process.ExitCode;
    }
}
