using System.Diagnostics;
using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Supervision;

/// <summary>
/// One owner per container, end to end through the real CLI: two state dirs never touch each other's
/// containers, concurrent runs of one name have exactly one winner, and a `corral run` killed with
/// SIGKILL leaves a container that `corral ps` shows as orphaned and `corral gc` or `corral kill` removes.
/// </summary>
public sealed class OwnershipTests
{
    // Fixed state dirs of these tests only: their cgroup namespaces (corral-<ns>) stay two or three.
    private const string StateDirA = "/run/corral-test-owner-a";
    private const string StateDirB = "/run/corral-test-owner-b";
    private const string OrphanStateDir = "/run/corral-test-orphans";

    public static TheoryData<string> Runtimes => new() { "runc", "gvisor" };

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task TwoStateDirsRunOneNameWithoutTouchingEachOther(string runtime)
    {
        RuntimeCheck.Require(runtime == "runc" ? "runc" : "runsc");
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("twodirs");
        using var first = CorralProcess.Start(["--state-dir", StateDirA, "run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--", "python3", "-c", ReadyThenExit7OnTerm]);
        var watch = Stopwatch.StartNew();
        try
        {
            (await first.StandardOutput.ReadLineAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(60), Ct)).ShouldBe("ready");

            // The same name in another state dir is another container: it runs, and ends on its own.
            // gVisor names its sandboxes' control sockets host-wide: there the second is refused up front.
            var second = await CorralProcess.RunAsync(["--state-dir", StateDirB, "run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--", "sh", "-c", "echo second; exit 3"]);
            if (runtime == "runc")
            {
                second.ExitCode.ShouldBe(3, second.Stderr);
                second.Stdout.ShouldBe("second\n");
            }
            else
            {
                second.ExitCode.ShouldBe(125, second.Stderr);
                second.Stderr.ShouldBe($"corral: a gVisor sandbox named '{id}' already runs on this host (another state dir's): gVisor's sandbox names are host-wide\n");
            }

            // The first one was not touched: still running, and it ends with its own code when told to.
            first.HasExited.ShouldBeFalse($"the run in the other state dir killed this one: {(first.HasExited ? first.ExitCode : 0)}");
            var kill = await CorralProcess.RunAsync(["--state-dir", StateDirA, "kill", "--grace", "30s", id]);
            kill.ExitCode.ShouldBe(0, kill.Stderr);
            var result = await CorralProcess.CollectAsync(first, watch, TimeSpan.FromSeconds(60));
            result.ExitCode.ShouldBe(7, result.Stderr);
            (await TestHost.LeaksAsync(id, StateDirA)).ShouldBeEmpty();
            (await TestHost.LeaksAsync(id, StateDirB)).ShouldBeEmpty();
        }
        finally
        {
            StopIfRunning(first);
        }
    }

    [Fact]
    public async Task ConcurrentRunsOfOneNameHaveExactlyOneWinner()
    {
        RuntimeCheck.Require("runc");
        var rootfs = await TestHost.RootfsAsync();
        const int Contenders = 15;
        for (var round = 0; round < 3; round++)
        {
            var id = TestHost.NewId("samename");
            var processes = Enumerable.Range(0, Contenders)
                .Select(_ => CorralProcess.Start(["--state-dir", StateDirA, "run", "--runtime", "runc", "--rootfs", rootfs, "--name", id, "--", "python3", "-c", ReadyThenExit7OnTerm]))
                .ToList();
            var watch = Stopwatch.StartNew();
            try
            {
                var results = processes.Select(p => CorralProcess.CollectAsync(p, watch, TimeSpan.FromSeconds(180))).ToList();

                // Every loser gives up on its own; the winner runs until it is told to stop.
                while (processes.Count(p => p.HasExited) < Contenders - 1)
                {
                    watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(120), $"round {round}: only {processes.Count(p => p.HasExited)} of {Contenders - 1} losers returned");
                    await Task.Delay(50, Ct);
                }

                await Task.Delay(500, Ct);
                processes.Count(p => !p.HasExited).ShouldBe(1, $"round {round}: exactly one run owns {id}");
                var kill = await CorralProcess.RunAsync(["--state-dir", StateDirA, "kill", "--grace", "30s", id]);
                kill.ExitCode.ShouldBe(0, kill.Stderr);

                var all = await Task.WhenAll(results);
                var winners = all.Where(r => r.ExitCode != 125).ToList();
                winners.Count.ShouldBe(1, $"round {round}: " + string.Join(" | ", all.Select(r => $"{r.ExitCode} {r.Stderr.Trim()}")));
                winners[0].ExitCode.ShouldBe(7, winners[0].Stderr);
                winners[0].Stdout.ShouldBe("ready\n");
                foreach (var loser in all.Where(r => r.ExitCode == 125))
                {
                    loser.Stdout.ShouldBeEmpty();
                    loser.Stderr.ShouldStartWith($"corral: a container named '{id}' is already running");
                    loser.Stderr.TrimEnd('\n').ShouldNotContain('\n');
                }

                (await TestHost.LeaksAsync(id, StateDirA)).ShouldBeEmpty();
            }
            finally
            {
                processes.ForEach(StopIfRunning);
                processes.ForEach(p => p.Dispose());
            }
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task RunKilledWithSigkillLeavesAVisibleOrphanThatGcRemoves(string runtime)
    {
        var id = await StartAndKillSupervisorAsync(runtime, "gc");

        // Visible: `corral ps` shows it as orphaned.
        (await StatusInPsAsync(id)).ShouldBe("orphaned");
        if (runtime == "gvisor")
        {
            // runsc run got SIGKILL with its supervisor (parent-death signal); the sandbox went with it.
            var watch = Stopwatch.StartNew();
            while (ProcessesNaming(id) is { Count: > 0 } left)
            {
                watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(20), "still running after its supervisor died: " + string.Join(" | ", left));
                await Task.Delay(100, Ct);
            }
        }

        // Its name is not taken over while what it left is there.
        var again = await CorralProcess.RunAsync(["--state-dir", OrphanStateDir, "run", "--runtime", runtime, "--rootfs", await TestHost.RootfsAsync(), "--name", id, "--", "true"]);
        again.ExitCode.ShouldBe(125);
        again.Stderr.ShouldBe($"corral: container '{id}' was left behind by a supervisor that died; remove it with `corral kill {id}` or `corral gc`\n");
        (await StatusInPsAsync(id)).ShouldBe("orphaned");

        var gc = await CorralProcess.RunAsync(["--state-dir", OrphanStateDir, "gc"]);
        gc.ExitCode.ShouldBe(0, gc.Stderr);
        gc.Stdout.Split('\n').ShouldContain(id);
        (await TestHost.LeaksAsync(id, OrphanStateDir)).ShouldBeEmpty();
        (await StatusInPsAsync(id)).ShouldBeNull();
    }

    [Fact]
    public async Task KillOfAnOrphanRemovesEverything()
    {
        var id = await StartAndKillSupervisorAsync("runc", "orphankill");
        var kill = await CorralProcess.RunAsync(["--state-dir", OrphanStateDir, "kill", id]);
        kill.ExitCode.ShouldBe(0, kill.Stderr);
        (await TestHost.LeaksAsync(id, OrphanStateDir)).ShouldBeEmpty();
    }

    [Fact]
    public async Task GcLeavesAContainerWithALiveSupervisorAlone()
    {
        RuntimeCheck.Require("runc");
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("gclive");
        using var run = CorralProcess.Start(["--state-dir", OrphanStateDir, "run", "--runtime", "runc", "--rootfs", rootfs, "--name", id, "--", "python3", "-c", ReadyThenExit7OnTerm]);
        var watch = Stopwatch.StartNew();
        try
        {
            (await run.StandardOutput.ReadLineAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(60), Ct)).ShouldBe("ready");
            var gc = await CorralProcess.RunAsync(["--state-dir", OrphanStateDir, "gc"]);
            gc.ExitCode.ShouldBe(0, gc.Stderr);
            gc.Stdout.Split('\n').ShouldNotContain(id);
            (await StatusInPsAsync(id)).ShouldBe("running");
            run.HasExited.ShouldBeFalse();
            (await CorralProcess.RunAsync(["--state-dir", OrphanStateDir, "kill", "--grace", "30s", id])).ExitCode.ShouldBe(0);
            (await CorralProcess.CollectAsync(run, watch, TimeSpan.FromSeconds(60))).ExitCode.ShouldBe(7);
            (await TestHost.LeaksAsync(id, OrphanStateDir)).ShouldBeEmpty();
        }
        finally
        {
            StopIfRunning(run);
        }
    }

    private const string ReadyThenExit7OnTerm =
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))\nprint('ready', flush=True)\ntime.sleep(300)";

    /// <summary>Starts a container in <see cref="OrphanStateDir"/>, waits until it runs, then SIGKILLs its `corral run`.</summary>
    private static async Task<string> StartAndKillSupervisorAsync(string runtime, string prefix)
    {
        RuntimeCheck.Require(runtime == "runc" ? "runc" : "runsc");
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId(prefix);
        using var run = CorralProcess.Start(["--state-dir", OrphanStateDir, "run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--", "sh", "-c", "echo ready; exec sleep 1000"]);
        (await run.StandardOutput.ReadLineAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(60), Ct)).ShouldBe("ready");
        Interop.Kill(run.Id, 9);
        await run.WaitForExitAsync(Ct);
        return id;
    }

    private static async Task<string?> StatusInPsAsync(string id)
    {
        var ps = await CorralProcess.RunAsync(["--state-dir", OrphanStateDir, "ps", "--json"]);
        ps.ExitCode.ShouldBe(0, ps.Stderr);
        using var doc = JsonDocument.Parse(ps.Stdout);
        return doc.RootElement.EnumerateArray()
            .Where(c => c.GetProperty("id").GetString() == id)
            .Select(c => c.GetProperty("status").GetString())
            .FirstOrDefault();
    }

    private static List<string> ProcessesNaming(string id)
    {
        var found = new List<string>();
        foreach (var proc in Directory.EnumerateDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)))
        {
            try
            {
                var cmdline = File.ReadAllText(Path.Combine(proc, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains(id, StringComparison.Ordinal) && !cmdline.Contains("Corral.IntegrationTests", StringComparison.Ordinal))
                {
                    found.Add(cmdline.Trim());
                }
            }
            catch (IOException)
            {
            }
        }

        return found;
    }

    private static void StopIfRunning(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }
}
