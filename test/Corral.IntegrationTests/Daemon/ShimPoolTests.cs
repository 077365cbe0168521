using System.Diagnostics;
using Corral.Client;
using Corral.IntegrationTests.Infrastructure;
using Corral.Interop;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// The daemon's ready shims (`corral serve --shim-pool N`): a Create takes one that is already waiting,
/// the pool refills, and the ones never used end with the daemon however it ends, while a taken one
/// keeps supervising its sandbox.
/// </summary>
public sealed class ShimPoolTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_create_takes_a_waiting_shim_the_pool_refills_and_the_unused_ones_end_with_the_daemon()
    {
        var rootfs = await TestHost.RootfsAsync();
        var daemon = await DaemonProcess.StartAsync("--shim-pool", "2");
        var id = TestHost.NewId("pool");
        var orphan = TestHost.NewId("pool-orphan");
        var sandboxes = Path.Combine(daemon.StateDir, "sandboxes");
        try
        {
            var waiting = await WaitForAsync(() => WaitingShims(sandboxes), pids => pids.Count == 2, "two waiting shims after the daemon started");

            await daemon.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["sleep", "1000"], r => r.Name = id, rootfs), Ct);
            await new Corral.Client.Sandbox(daemon.Client, id).WaitRunningAsync(Ct);
            var shimPid = DaemonOwnershipTests.ShimPid(daemon, id);
            waiting.ShouldContain(shimPid, "the sandbox's shim is one that was waiting before the create");
            await daemon.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["sleep", "1000"], r => r.Name = orphan, rootfs), Ct);
            await new Corral.Client.Sandbox(daemon.Client, orphan).WaitRunningAsync(Ct);
            TestHost.WorkingDirectory($"/proc/{shimPid}").ShouldBe(Path.Combine(sandboxes, id), "a shim runs in its sandbox's directory");

            // Refilled: two waiting again, the taken one not among them.
            var refilled = await WaitForAsync(() => WaitingShims(sandboxes), pids => pids.Count == 2, "the pool refilled to two");
            refilled.ShouldNotContain(shimPid);

            // A crash of the daemon: the waiting shims see their input end and exit; the sandbox's shim goes on.
            await daemon.KillHardAsync();
            await WaitForAsync(() => refilled.Where(Alive).ToList(), alive => alive.Count == 0, "the unused shims exit with the daemon");
            Alive(shimPid).ShouldBeTrue("the taken shim still supervises its sandbox");
            await daemon.DisposeAsync();

            // A new daemon adopts the sandbox; stopped by SIGTERM, it leaves no waiting shim behind either.
            daemon = await DaemonProcess.StartInAsync(daemon.Root, "--shim-pool", "2");
            (await daemon.Client.InspectAsync(id, Ct)).State.ShouldBe(SandboxState.Running);
            var second = await WaitForAsync(() => WaitingShims(sandboxes), pids => pids.Count == 2, "two waiting shims after the restart");

            // An adopted sandbox's shim dies under the new daemon: seen through its pidfd, the sandbox fails and its container is removed.
            (await daemon.Client.InspectAsync(orphan, Ct)).State.ShouldBe(SandboxState.Running);
            LibC.kill(DaemonOwnershipTests.ShimPid(daemon, orphan), 9).ShouldBe(0);
            var watch = Stopwatch.StartNew();
            while ((await daemon.Client.InspectAsync(orphan, Ct)).State != SandboxState.Failed)
            {
                watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(30)), "the adopted sandbox whose shim died never failed");
                await Task.Delay(50, Ct);
            }

            await daemon.Client.RemoveAsync(orphan, Ct);
            (await TestHost.LeaksAsync(orphan)).ShouldBeEmpty();

            await daemon.Client.KillAsync(id, "KILL", cancellationToken: Ct);
            await daemon.Client.WaitAsync(id, Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            await daemon.Client.RemoveAsync(id, Ct);
            (await daemon.StopAsync(TimeSpan.FromSeconds(60))).ShouldBe(0);
            await WaitForAsync(() => second.Where(Alive).ToList(), alive => alive.Count == 0, "the unused shims exit when the daemon stops");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
        finally
        {
            await daemon.DisposeAsync();
        }
    }

    [Fact]
    public async Task Without_a_pool_each_create_starts_its_shim()
    {
        var rootfs = await TestHost.RootfsAsync();
        await using var daemon = await DaemonProcess.StartAsync("--shim-pool", "0");
        var sandboxes = Path.Combine(daemon.StateDir, "sandboxes");
        var id = TestHost.NewId("nopool");
        await Task.Delay(500, Ct);
        WaitingShims(sandboxes).ShouldBeEmpty();
        await daemon.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["sh", "-c", "exit 3"], r => r.Name = id, rootfs), Ct);
        var exit = await daemon.Client.WaitAsync(id, Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
        exit.ExitCode.ShouldBe(3);
        WaitingShims(sandboxes).ShouldBeEmpty();
        await daemon.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task The_pool_size_is_checked()
    {
        var (result, socketLeft) = await DaemonProcess.RefuseAsync("--shim-pool", "65");
        result.ExitCode.ShouldBe(125);
        result.Stderr.TrimEnd('\n').ShouldBe("corral serve: invalid --shim-pool '65': expected a number of shims from 0 to 64");
        socketLeft.ShouldBeFalse();
    }

    /// <summary>Shims of this daemon not yet told a sandbox: not in a sandbox's directory.</summary>
    private static List<int> WaitingShims(string sandboxes) =>
        [.. TestHost.ShimProcesses(sandboxes).Where(s => !s.Cwd.StartsWith(sandboxes + "/", StringComparison.Ordinal)).Select(s => s.Pid)];

    /// <summary>Running, not a zombie waiting to be reaped.</summary>
    private static bool Alive(int pid) => Directory.Exists($"/proc/{pid}") && !Corral.Supervision.ContainerExecutor.IsZombie(pid);

    private static async Task<List<int>> WaitForAsync(Func<List<int>> probe, Func<List<int>, bool> done, string what)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var value = probe();
            if (done(value))
            {
                return value;
            }

            watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(30)), $"{what}: saw pids {string.Join(',', value)}");
            await Task.Delay(50, Ct);
        }
    }
}
