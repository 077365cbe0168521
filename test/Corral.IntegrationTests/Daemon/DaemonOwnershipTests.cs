using System.Diagnostics;
using System.Text.Json;
using Corral.Client;
using Corral.IntegrationTests.Infrastructure;
using Corral.Interop;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>One daemon per state dir; a reclaimed gVisor sandbox is deleted by its exact id, not a prefix.</summary>
public sealed class DaemonOwnershipTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task SecondDaemonOnTheSameStateDirExits125()
    {
        await using var first = await DaemonProcess.StartAsync();
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in (string[])[DaemonProcess.DaemonDll, "--socket", Path.Combine(first.Root, "second.sock"), "--state-dir", first.StateDir, "--shim", CorralProcess.Cli])
        {
            info.ArgumentList.Add(arg);
        }

        using var second = Process.Start(info)!;
        try
        {
            var stderr = second.StandardError.ReadToEndAsync(Ct);
            var stdout = second.StandardOutput.ReadToEndAsync(Ct);
            await second.WaitForExitAsync(Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            second.ExitCode.ShouldBe(125, await stderr);
            var error = (await stderr).TrimEnd('\n');
            error.ShouldBe($"corral serve: another corral daemon (pid {first.Pid}) serves {first.StateDir}");
            (await stdout).ShouldBeEmpty();
            File.Exists(Path.Combine(first.Root, "second.sock")).ShouldBeFalse();

            // The first one was not disturbed.
            (await first.Client.IsServingAsync(Ct)).ShouldBeTrue();
        }
        finally
        {
            if (!second.HasExited)
            {
                second.Kill(entireProcessTree: true);
            }
        }
    }

    [Fact]
    public async Task ReclaimDeletesTheExactGvisorIdWhileALongerOneWithItAsPrefixRuns()
    {
        var rootfs = await TestHost.RootfsAsync();
        await using var daemon = await DaemonProcess.StartAsync();
        var client = daemon.Client;
        var gp = TestHost.NewId("gp");
        var gp1 = gp + "1"; // runsc takes "gp" for a prefix of "gp1": ambiguous for kill, delete and state
        var ids = new[] { gp, gp1 };
        try
        {
            foreach (var id in ids)
            {
                await client.CreateAsync(DaemonSandboxTests.Request("gvisor", ["sleep", "1000"], r => r.Name = id, rootfs), Ct);
            }

            foreach (var id in ids)
            {
                await WaitForStateAsync(client, id, SandboxState.Running);
            }

            // gp's shim dies: the daemon reclaims its container.
            LibC.kill(ShimPid(daemon, gp), 9).ShouldBe(0);
            var failed = await WaitForStateAsync(client, gp, SandboxState.Failed);
            failed.Error.ShouldContain("stopped and removed");
            File.Exists(Path.Combine(TestHost.RunscRoot, $"{gp}_sandbox:{gp}.state")).ShouldBeFalse("runsc state of the reclaimed sandbox is gone");
            (await RunscListsAsync(gp)).ShouldBeFalse();
            (await RunscListsAsync(gp1)).ShouldBeTrue("the sandbox whose id merely starts with the other's is untouched");
            (await client.InspectAsync(gp1, Ct)).State.ShouldBe(SandboxState.Running);
            await client.RemoveAsync(gp, Ct);

            // The name works again.
            await client.CreateAsync(DaemonSandboxTests.Request("gvisor", ["sh", "-c", "echo again; exit 4"], r => r.Name = gp, rootfs), Ct);
            var exit = await client.WaitAsync(gp, Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            exit.ExitCode.ShouldBe(4, exit.StdoutTail + exit.StderrTail);
            exit.StdoutTail.ShouldBe("again\n");
            await client.RemoveAsync(gp, Ct);
            (await RunscListsAsync(gp)).ShouldBeFalse();

            await client.KillAsync(gp1, "KILL", cancellationToken: Ct);
            await client.WaitAsync(gp1, Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            await client.RemoveAsync(gp1, Ct);
            foreach (var id in ids)
            {
                (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            }
        }
        finally
        {
            foreach (var id in ids)
            {
                try
                {
                    await client.RemoveAsync(id, Ct, force: true);
                }
                catch (Grpc.Core.RpcException)
                {
                }
            }
        }
    }

    /// <summary>Whether `runsc list` has a row whose id is exactly <paramref name="id"/>.</summary>
    private static async Task<bool> RunscListsAsync(string id)
    {
        var info = new ProcessStartInfo("runsc") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "--root", TestHost.RunscRoot, "list" })
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info)!;
        var output = await process.StandardOutput.ReadToEndAsync(Ct);
        await process.WaitForExitAsync(Ct);
        return output.Split('\n').Any(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() == id);
    }

    /// <summary>The shim's pid, as its status.json says.</summary>
    internal static int ShimPid(DaemonProcess daemon, string id)
    {
        using var status = JsonDocument.Parse(File.ReadAllText(Path.Combine(daemon.StateDir, "sandboxes", id, "status.json")));
        return status.RootElement.GetProperty("shimPid").GetInt32();
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

            watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(60), $"{id} never reached {state}; it is {info.State} {info.Error}");
            await Task.Delay(50, Ct);
        }
    }
}
