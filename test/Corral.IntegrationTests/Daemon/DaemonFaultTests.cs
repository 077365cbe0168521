using System.Diagnostics;
using System.Text;
using Corral.IntegrationTests.Infrastructure;
using Corral.IntegrationTests.Supervision;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// A daemon whose state dir is a real, small tmpfs that fills up (issue #10, item 11): a sandbox whose
/// log cannot be written keeps running with its output dropped and counted; wait, kill and rm -f
/// answer within seconds; a create on a full disk is refused with the reason and leaves nothing.
/// </summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonFullDiskTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static TheoryData<string> Runtimes => DaemonSandboxTests.Runtimes;

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ASandboxWhoseLogFillsTheDiskKeepsRunningAndWaitKillRemoveAnswer(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        await using var daemon = await FullDiskDaemon.StartAsync("4m");
        var client = daemon.Daemon.Client;
        var id = await client.CreateAsync(DaemonSandboxTests.Request(runtime, ["python3", "-c", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n    sys.stdout.flush()"], rootfs: rootfs), Ct);
        daemon.Ids.Add(id);
        await new Corral.Client.Sandbox(client, id).WaitRunningAsync(Ct);

        // It prints far more than the 4 MiB disk holds; the disk fills, and it keeps running.
        var watch = Stopwatch.StartNew();
        while (daemon.FreeBytes() > 64 * 1024)
        {
            watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(60), "the sandbox's output never filled the disk");
            await Task.Delay(100, Ct);
        }

        await Task.Delay(TimeSpan.FromSeconds(2), Ct);
        (await client.InspectAsync(id, Ct).WaitAsync(Deadline, Ct)).State.ShouldBe(SandboxState.Running);
        var stats = await client.StatsAsync(id, Ct).WaitAsync(Deadline, Ct);
        var cpuBefore = stats.CpuUsageNs;
        await Task.Delay(TimeSpan.FromSeconds(1), Ct);
        (await client.StatsAsync(id, Ct).WaitAsync(Deadline, Ct)).CpuUsageNs.ShouldBeGreaterThan(cpuBefore, "the workload must not be blocked writing its output");

        watch.Restart();
        await client.KillAsync(id, "KILL", cancellationToken: Ct).WaitAsync(Deadline, Ct);
        var exit = await client.WaitAsync(id, Ct).WaitAsync(Deadline, Ct);
        exit.ExitCode.ShouldBe(137);
        exit.OutputDroppedBytes.ShouldBeGreaterThan(0);

        var log = new StringBuilder();
        await foreach (var chunk in client.LogsAsync(id, follow: false, Ct).WithCancellation(Ct))
        {
            if (chunk.Stream == LogStream.Stderr)
            {
                log.Append(chunk.Data.ToStringUtf8());
            }
        }

        log.ToString().ShouldContain("[corral: the log could not be written");
        await client.RemoveAsync(id, Ct, force: true).WaitAsync(Deadline, Ct);
        watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(60));
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ACreateOnAFullDiskIsRefusedOrFailsWithTheReasonAndIsRemovable(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        await using var daemon = await FullDiskDaemon.StartAsync("2m");
        daemon.Fill();
        var client = daemon.Daemon.Client;
        var name = TestHost.NewId("fulldisk");
        try
        {
            var id = await client.CreateAsync(DaemonSandboxTests.Request(runtime, ["sh", "-c", "echo hello; sleep 600"], r => r.Name = name, rootfs), Ct).WaitAsync(Deadline, Ct);
            daemon.Ids.Add(id);

            // Created: then it must end with the reason (or run), and rm -f must work within seconds.
            await client.RemoveAsync(id, Ct, force: true).WaitAsync(Deadline, Ct);
        }
        catch (RpcException ex)
        {
            ex.Status.Detail.ShouldContain("No space left on device");
            ex.Status.Detail.ShouldNotContain("\n");
        }

        (await client.ListAsync(cancellationToken: Ct)).Select(s => s.Id).ShouldNotContain(name);
        Directory.Exists(Path.Combine(daemon.Daemon.StateDir, "sandboxes", name)).ShouldBeFalse();
        (await TestHost.LeaksAsync(name)).ShouldBeEmpty();
    }

    /// <summary>A daemon of the test's own whose --state-dir is a tmpfs of the given size.</summary>
    private sealed class FullDiskDaemon : IAsyncDisposable
    {
        private readonly string _root;

        private FullDiskDaemon(string root, DaemonProcess daemon)
        {
            _root = root;
            Daemon = daemon;
        }

        public DaemonProcess Daemon { get; }

        public List<string> Ids { get; } = [];

        private string StateDir => Path.Combine(_root, "state");

        public static async Task<FullDiskDaemon> StartAsync(string size)
        {
            var root = Path.Combine(Path.GetTempPath(), "corral-fulldisk-" + Guid.NewGuid().ToString("N")[..8]);
            Directory.CreateDirectory(Path.Combine(root, "state"));
            Sh($"mount -t tmpfs -o size={size} tmpfs '{Path.Combine(root, "state")}'");
            return new FullDiskDaemon(root, await DaemonProcess.StartInAsync(root));
        }

        public long FreeBytes() => new DriveInfo(StateDir).AvailableFreeSpace;

        public void Fill()
        {
            using var fill = new FileStream(Path.Combine(StateDir, "fill"), FileMode.Append, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
            try
            {
                while (true)
                {
                    fill.Write(new byte[4096]);
                }
            }
            catch (IOException)
            {
                // Full.
            }
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var id in Ids)
            {
                try
                {
                    await Daemon.Client.RemoveAsync(id, CancellationToken.None, force: true).WaitAsync(Deadline);
                }
                catch (RpcException)
                {
                }
            }

            var exitCode = await Daemon.StopAsync(TimeSpan.FromSeconds(60));
            var output = await Daemon.Output;
            Sh($"umount -l '{StateDir}'");
            await Daemon.DisposeAsync();
            exitCode.ShouldBe(0, output);
            foreach (var id in Ids)
            {
                (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            }
        }

        private static void Sh(string command)
        {
            using var process = Process.Start(new ProcessStartInfo("sh", ["-c", command]) { RedirectStandardError = true, UseShellExecute = false })!;
            var error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            process.ExitCode.ShouldBe(0, $"{command}: {error}");
        }
    }
}

/// <summary>A SIGKILL right after Create ends the sandbox 137, never runc's own "error during container init" 1 (issue #10, item 14).</summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonKillRightAfterCreateTests(DaemonFixture fixture)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ASigkillRightAfterCreateIsAlways137()
    {
        const int Rounds = 24;
        var exits = await Task.WhenAll(Enumerable.Range(0, Rounds).Select(async i =>
        {
            // Staggered, so the kills land at every point of runc's start.
            await Task.Delay(i * 150, Ct);
            var id = fixture.Track(await fixture.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["sleep", "600"], rootfs: fixture.Rootfs), Ct));
            await fixture.Client.KillAsync(id, "KILL", cancellationToken: Ct);
            var exit = await fixture.Client.WaitAsync(id, Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            await fixture.Client.RemoveAsync(id, Ct);
            return exit;
        }));

        exits.Where(e => e.ExitCode != 137).Select(e => $"{e.Id}: exit {e.ExitCode}, stderr '{e.StderrTail}'").ShouldBeEmpty();
        exits.ShouldAllBe(e => e.Signal == "SIGKILL");
    }
}
