using System.Diagnostics;
using System.Text;
using Corral.Client;
using Corral.IntegrationTests.Infrastructure;
using Corral.Interop;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// kill -9 of the daemon while sandboxes run, then a new daemon on the same state: every sandbox is
/// found again, running ones adopted and still supervised, ended ones with their exit records and
/// logs, one whose shim died too is cleaned up and marked failed; nothing duplicated, nothing leaks.
/// </summary>
public sealed class CrashRecoveryTests
{
    public static TheoryData<string> Runtimes => TestRuntimes.All;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task SandboxesSurviveADaemonKilledWithSigkill(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var first = await DaemonProcess.StartAsync();
        DaemonProcess? second = null;
        var ids = new List<string>();
        try
        {
            // Prints before and after the daemon's death, then ends with its own code.
            var spanning = await CreateAsync(first.Client, runtime, rootfs, "spanning", ["sh", "-c", "echo before; sleep 4; echo after; exit 7"], ids);

            // Ends while no daemon runs.
            var ending = await CreateAsync(first.Client, runtime, rootfs, "ending", ["sh", "-c", "sleep 1; echo while-down; exit 5"], ids);

            // Runs on until the new daemon kills it.
            var idle = await CreateAsync(first.Client, runtime, rootfs, "idle", ["sleep", "1000"], ids);

            // Its shim is killed too: the new daemon must clean its container up.
            var orphan = await CreateAsync(first.Client, runtime, rootfs, "orphan", ["sleep", "1000"], ids);

            foreach (var id in ids)
            {
                await WaitForStateAsync(first.Client, id, SandboxState.Running);
            }

            await WaitForOutputAsync(first.Client, spanning, "before");
            await first.KillHardAsync();
            var orphanShim = DaemonOwnershipTests.ShimPid(first, orphan);
            LibC.kill(orphanShim, 9).ShouldBe(0);
            await Task.Delay(TimeSpan.FromSeconds(2), Ct);

            second = await DaemonProcess.StartInAsync(first.Root);
            var client = second.Client;
            var listed = (await client.ListAsync(cancellationToken: Ct)).Select(s => s.Id).ToList();
            listed.Order().ShouldBe(ids.Order(), "every sandbox once, none lost or duplicated");

            // Ended while the daemon was down: its exit record and its log.
            var endingExit = await client.WaitAsync(ending, Ct).WaitAsync(TestHost.Scaled(TimeSpan.FromSeconds(30)), Ct);
            endingExit.ExitCode.ShouldBe(5);
            (await ReadStdoutAsync(client, ending)).ShouldBe("while-down\n");

            // Printed before and after the crash: the log has both, the exit is its own.
            var spanningExit = await client.WaitAsync(spanning, Ct).WaitAsync(TestHost.Scaled(TimeSpan.FromSeconds(30)), Ct);
            spanningExit.ExitCode.ShouldBe(7);
            spanningExit.StdoutTail.ShouldBe("before\nafter\n");
            (await ReadStdoutAsync(client, spanning)).ShouldBe("before\nafter\n");

            // Adopted: still running, and the new daemon can stop it and tell how it ended.
            var idleInfo = await client.InspectAsync(idle, Ct);
            idleInfo.State.ShouldBe(SandboxState.Running);
            await client.KillAsync(idle, "KILL", cancellationToken: Ct);
            var idleExit = await client.WaitAsync(idle, Ct).WaitAsync(TestHost.Scaled(TimeSpan.FromSeconds(30)), Ct);
            idleExit.ExitCode.ShouldBe(137);

            // Its supervision died with the daemon: failed, and nothing of it is left.
            var orphanInfo = await WaitForStateAsync(client, orphan, SandboxState.Failed);
            orphanInfo.Error.ShouldContain("shim");
            (await TestHost.LeaksAsync(orphan)).ShouldBeEmpty();

            foreach (var id in ids)
            {
                await client.RemoveAsync(id, Ct);
                (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            }

            (await client.ListAsync(cancellationToken: Ct)).ShouldBeEmpty();
        }
        finally
        {
            if (second is not null)
            {
                await second.DisposeAsync();
            }

            await first.DisposeAsync();
            if (second is null && Directory.Exists(first.Root))
            {
                // The test failed before the restart: stop what the first daemon's shims still run.
                foreach (var id in ids)
                {
                    await CorralProcess.RunAsync(["kill", "--signal", "KILL", id]);
                }

                Directory.Delete(first.Root, recursive: true);
            }
        }
    }

    private static async Task<string> CreateAsync(CorralClient client, string runtime, string rootfs, string name, string[] command, List<string> ids)
    {
        var id = await client.CreateAsync(DaemonSandboxTests.Request(runtime, command, r => r.Name = TestHost.NewId(name), rootfs), Ct);
        ids.Add(id);
        return id;
    }


    private static async Task<string> ReadStdoutAsync(CorralClient client, string id)
    {
        var stdout = new StringBuilder();
        await foreach (var chunk in client.LogsAsync(id, follow: false, Ct))
        {
            if (chunk.Stream == LogStream.Stdout)
            {
                stdout.Append(chunk.Data.ToStringUtf8());
            }
        }

        return stdout.ToString();
    }

    private static async Task<SandboxInfo> WaitForStateAsync(CorralClient client, string id, SandboxState state)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var info = await client.InspectAsync(id, Ct);
            if (info.State == state)
            {
                return info;
            }

            // As long as the daemon's own start deadline (60 s, scaled in the emulated v2 guest, where four
            // gVisor sandboxes booting at once took over 120 s once): past it the daemon fails the sandbox itself.
            watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(75)), $"{id} never reached {state}; it is {info.State} {info.Error}");
            await Task.Delay(50, Ct);
        }
    }

    private static async Task WaitForOutputAsync(CorralClient client, string id, string text)
    {
        var watch = Stopwatch.StartNew();
        while (!(await ReadStdoutAsync(client, id)).Contains(text, StringComparison.Ordinal))
        {
            watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(30)), $"{id} never printed {text}");
            await Task.Delay(50, Ct);
        }
    }
}
