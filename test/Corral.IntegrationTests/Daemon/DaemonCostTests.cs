using System.Diagnostics;
using System.Globalization;
using System.Text;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// What the daemon costs: latency added per sandbox lifecycle against bare `runc run` / `runsc run`
/// of the same bundle, per exec against bare `runc exec` / `runsc exec` into the same container, and
/// memory per idle gVisor sandbox with 100 of them. Figures go to .build/daemon-figures.md; timing
/// is never asserted, correctness and cleanup are.
/// </summary>
[Collection(DaemonLoadCollection.Name)]
public sealed class DaemonCostTests(DaemonFixture fixture)
{
    private const int Rounds = 10;
    private const int IdleSandboxes = 100;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string FiguresFile => Path.Combine(CorralProcess.RepoRoot, ".build", "daemon-figures.md");

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task LifecycleLatencyAgainstTheBareRuntime(string runtime)
    {
        // The bundle Corral would use, from `corral spec`, run by the runtime itself.
        var spec = await CorralProcess.RunAsync(["spec", "--rootfs", fixture.Rootfs, "--", "true"]);
        spec.ExitCode.ShouldBe(0, spec.Stderr);
        var bundle = Directory.CreateTempSubdirectory("corral-bare-bundle-").FullName;
        var root = Directory.CreateTempSubdirectory("corral-bare-root-").FullName;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(bundle, "config.json"), spec.Stdout, Ct);
            var created = string.Empty;
            var (bare, daemon) = await AlternateAsync(
                Rounds,
                async () => (await RunAsync(Binary(runtime), [.. BareGlobalArgs(runtime, root), "run", "--bundle", bundle, TestHost.NewId("bare")])).ShouldBe(0),
                async () =>
                {
                    created = fixture.Track(await fixture.Client.CreateAsync(DaemonSandboxTests.Request(runtime, ["true"], rootfs: fixture.Rootfs), Ct));
                    (await fixture.Client.WaitAsync(created, Ct)).ExitCode.ShouldBe(0);
                },
                async () =>
                {
                    await fixture.Client.RemoveAsync(created, Ct);
                    (await TestHost.LeaksAsync(created)).ShouldBeEmpty();
                });
            Report($"lifecycle-{runtime}", $"| lifecycle `/bin/true`, {runtime}, median of {Rounds} | bare `{Binary(runtime)} run` {Compare(bare, daemon, "Create→Wait")}");
        }
        finally
        {
            Directory.Delete(bundle, recursive: true);
            Directory.Delete(root, recursive: true);
        }
    }

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task ExecLatencyAgainstTheBareRuntime(string runtime)
    {
        await using var sandbox = await fixture.Client.StartAsync(DaemonSandboxTests.Request(runtime, [], rootfs: fixture.Rootfs), Ct);
        fixture.Track(sandbox.Id);
        await sandbox.WaitRunningAsync(Ct);
        var runtimeRoot = runtime == "runc" ? "/run/corral/runc" : "/run/corral/runsc";

        // Into the same container: the bare runtime's exec against the daemon's Exec call.
        var (bare, daemon) = await AlternateAsync(
            Rounds * 2,
            async () => (await RunAsync(Binary(runtime), ["--root", runtimeRoot, "exec", sandbox.Id, "true"])).ShouldBe(0),
            async () =>
            {
                var exec = await sandbox.ExecAsync(["true"], cancellationToken: Ct);
                exec.ExitCode.ShouldBe(0, exec.Stderr);
            });
        Report($"exec-{runtime}", $"| exec `true`, {runtime}, median of {Rounds * 2} | bare `{Binary(runtime)} exec` {Compare(bare, daemon, "Exec")}");
    }

    /// <summary>
    /// The bare runtime and the daemon in turn, <paramref name="rounds"/> times after one warm-up round
    /// (caches, the daemon's JIT); milliseconds. <paramref name="untimed"/> runs after each daemon turn, off the clock.
    /// </summary>
    private static async Task<(List<double> Bare, List<double> Daemon)> AlternateAsync(int rounds, Func<Task> bare, Func<Task> daemon, Func<Task>? untimed = null)
    {
        var bareMs = new List<double>();
        var daemonMs = new List<double>();
        for (var i = 0; i < rounds + 1; i++)
        {
            var watch = Stopwatch.StartNew();
            await bare();
            var b = watch.Elapsed.TotalMilliseconds;
            watch.Restart();
            await daemon();
            var d = watch.Elapsed.TotalMilliseconds;
            if (untimed is not null)
            {
                await untimed();
            }

            if (i > 0)
            {
                bareMs.Add(b);
                daemonMs.Add(d);
            }
        }

        return (bareMs, daemonMs);
    }

    private static string Compare(List<double> bare, List<double> daemon, string what) =>
        $"{Median(bare):0.0} ms | daemon {what} {Median(daemon):0.0} ms (+{Median(daemon) - Median(bare):0.0} ms, {Median(daemon) / Median(bare):0.00}x) |";

    private static string Binary(string runtime) => runtime == "runc" ? "runc" : "runsc";

    private static string[] BareGlobalArgs(string runtime, string root) =>
        runtime == "runc" ? ["--root", root] : ["--root", root, "--platform", "ptrace", "--network", "none", "--ignore-cgroups"];

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
            var with = RssKib(fixture.Daemon.Pid);
            var shims = ShimPids(fixture.Daemon.StateDir);
            shims.Count.ShouldBe(IdleSandboxes, "one shim per sandbox");
            var shimPss = shims.Select(PssKib).ToList();
            var shimRss = shims.Select(RssKib).ToList();
            var cgroup = new List<double>();
            foreach (var id in ids)
            {
                cgroup.Add((await fixture.Client.StatsAsync(id, Ct)).MemoryCurrentBytes / 1024.0);
            }

            Report(
                "rss",
                $"| {IdleSandboxes} idle gVisor sandboxes (all running after {startSeconds:0} s) | daemon RSS {before / 1024.0:0.0} MiB before, {with / 1024.0:0.0} MiB with them (GC makes the difference noise; the whole daemon over {IdleSandboxes} is {with / 1024.0 / IdleSandboxes:0.00} MiB each at most) | shim per sandbox: PSS {Median(shimPss) / 1024:0.0} MiB, RSS {Median(shimRss) / 1024:0.0} MiB (medians) | the sandbox's own cgroup (runsc, gofer, sentry, idle PID 1): {Median(cgroup) / 1024:0.0} MiB median |");
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

    /// <summary>The shim processes (`Corral.Cli shim DIR`) of this daemon's sandboxes.</summary>
    private static List<int> ShimPids(string stateDir)
    {
        var prefix = Path.Combine(stateDir, "sandboxes") + "/";
        var pids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }

            try
            {
                var args = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
                if (args.Length >= 3 && args[1] == "shim" && args[2].StartsWith(prefix, StringComparison.Ordinal))
                {
                    pids.Add(pid);
                }
            }
            catch (IOException)
            {
                // Gone meanwhile.
            }
        }

        return pids;
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
