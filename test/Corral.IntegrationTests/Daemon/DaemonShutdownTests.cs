using System.Diagnostics;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>SIGTERM to the daemon: running sandboxes are killed, callers get answers, nothing is left.</summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonShutdownTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task SigtermKillsRunningSandboxesAnswersWaitersAndLeavesNothing()
    {
        var rootfs = await TestHost.RootfsAsync();
        await using var daemon = await DaemonProcess.StartAsync();
        var ids = new List<string>();
        foreach (var (runtime, command) in new[] { ("runc", new[] { "sleep", "600" }), ("gvisor", new[] { "sh", "-c", "trap '' TERM; exec sleep 600" }) })
        {
            ids.Add(await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, command, rootfs: rootfs), Ct));
        }

        foreach (var id in ids)
        {
            var watch = Stopwatch.StartNew();
            while ((await daemon.Client.InspectAsync(id, Ct)).State != SandboxState.Running)
            {
                watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30));
                await Task.Delay(20, Ct);
            }
        }

        var waits = ids.Select(id => daemon.Client.WaitAsync(id, Ct)).ToList();
        var events = Task.Run(async () => await daemon.Client.EventsAsync(follow: true, Ct).ToListAsync(Ct), Ct);
        await Task.Delay(200, Ct);

        var stopWatch = Stopwatch.StartNew();
        var exitCode = await daemon.StopAsync(TimeSpan.FromSeconds(60));

        exitCode.ShouldBe(0, await daemon.Output);
        stopWatch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(20));
        var exits = await Task.WhenAll(waits).WaitAsync(TimeSpan.FromSeconds(5), Ct);
        exits.Select(e => e.ExitCode).ShouldAllBe(code => code == 137 || code == 143);
        var seen = await events.WaitAsync(TimeSpan.FromSeconds(5), Ct);
        seen.Count(e => e.Type == EventType.Exited).ShouldBe(2);
        (await daemon.Output).ShouldContain("killing running sandboxes count=2");
        File.Exists(daemon.SocketPath).ShouldBeFalse();
        foreach (var id in ids)
        {
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }
}
