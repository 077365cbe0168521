using Corral.IntegrationTests.Infrastructure;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>`corral serve --start-timeout`: how long a sandbox's runtime may take to start its workload.</summary>
public sealed class DaemonStartTimeoutTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ASandboxNotStartedWithinTheDaemonsStartTimeoutFailsAndLeavesNothing()
    {
        var rootfs = await TestHost.RootfsAsync();
        await using var daemon = await DaemonProcess.StartAsync("--start-timeout", "10ms");
        var id = await daemon.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["sleep", "30"], rootfs: rootfs), Ct);

        var failed = await Should.ThrowAsync<RpcException>(() => daemon.Client.WaitAsync(id, Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct));

        failed.Status.Detail.ShouldContain("did not start the workload within");
        await daemon.Client.RemoveAsync(id, Ct, force: true);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [InlineData("0s")]
    [InlineData("soon")]
    [InlineData("300000000h")]
    public async Task ABadStartTimeoutIsRefusedWithOneLine(string value)
    {
        var (result, socketLeft) = await DaemonProcess.RefuseAsync("--start-timeout", value);

        result.ExitCode.ShouldBe(125, result.Stderr);
        result.Stderr.TrimEnd('\n').ShouldStartWith($"corral serve: invalid duration '{value}'");
        result.Stderr.TrimEnd('\n').ShouldNotContain("\n");
        socketLeft.ShouldBeFalse();
    }
}
