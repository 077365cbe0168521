using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>The native CLI as a daemon client: run -d, wait, logs, inspect, events, rm.</summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonCliTests(DaemonFixture fixture)
{
    private string Host => "unix://" + fixture.Daemon.SocketPath;

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task RunDetachedThenWaitLogsInspectAndRemove(string runtime)
    {
        var run = await Cli("run", "-d", "--runtime", runtime, "--rootfs", fixture.Rootfs, "--label", "via=cli", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3");
        run.ExitCode.ShouldBe(0, run.Stderr);
        var id = fixture.Track(run.Stdout.Trim());

        var wait = await Cli("wait", id);
        wait.ExitCode.ShouldBe(3, wait.Stderr);
        using (var record = JsonDocument.Parse(wait.Stdout))
        {
            record.RootElement.GetProperty("exitCode").GetInt32().ShouldBe(3);
            record.RootElement.GetProperty("runtime").GetString().ShouldBe(runtime);
        }

        var logs = await Cli("logs", id);
        logs.Stdout.ShouldBe("to-out\n");
        logs.Stderr.ShouldBe("to-err\n");

        var inspect = await Cli("inspect", id);
        inspect.ExitCode.ShouldBe(0, inspect.Stderr);
        inspect.Stdout.ShouldContain("SANDBOX_STATE_EXITED");
        inspect.Stdout.ShouldContain("\"via\": \"cli\"");

        var events = await Cli("events");
        events.Stdout.ShouldContain($"exited {id} exit_code=3");

        (await Cli("rm", id)).ExitCode.ShouldBe(0);
        var gone = await Cli("inspect", id);
        gone.ExitCode.ShouldBe(1);
        gone.Stderr.ShouldBe($"corral: no such sandbox: {id}\n");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task BadInputAndAnUnreachableDaemonAreOneLineErrors()
    {
        var bad = await Cli("run", "-d", "--runtime", "runc", "--rootfs", fixture.Rootfs, "--memory", "1", "--", "true");
        bad.ExitCode.ShouldBe(125);
        bad.Stderr.ShouldStartWith("corral: invalid --memory");

        var unreachable = await CorralProcess.RunAsync(["--host", "unix:///nonexistent/corral.sock", "inspect", "c-000000000000"]);
        unreachable.ExitCode.ShouldBe(125);
        unreachable.Stderr.ShouldStartWith("corral: no daemon is running at /nonexistent/corral.sock; start one with `corral serve`");
    }

    private Task<CorralResult> Cli(params string[] args) => CorralProcess.RunAsync(["--host", Host, .. args]);
}
