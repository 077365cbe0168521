using Corral.IntegrationTests.Infrastructure;
using Corral.IntegrationTests.Supervision;
using Corral.Runtimes;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Runtimes;

/// <summary>crun on this host: the setup step, its refusals, and a container through the real CLI.</summary>
public sealed class CrunHostTests
{
    [Fact]
    public async Task SetupCrunLeavesAHostWhereCrunRuns()
    {
        RuntimeCheck.Require("crun");

        var setup = await CorralProcess.RunAsync(["setup-crun"]);

        setup.ExitCode.ShouldBe(0, setup.Stderr);
        setup.Stderr.Trim().ShouldStartWith("corral: ");
        setup.Stderr.Trim().ShouldNotContain("\n");
        CrunHost.FindConflict().ShouldBeNull("no controller is left on a hybrid host's cgroup v2 hierarchy");

        // Idempotent: a second call has nothing to do.
        var again = await CorralProcess.RunAsync(["setup-crun"]);
        again.ExitCode.ShouldBe(0, again.Stderr);
        again.Stderr.Trim().ShouldBe("corral: crun can run on this host; nothing to do");

        var run = await ExitDetectionTests.RunAsync("crun", "sh", "-c", "exit 42");
        run.Result.ExitCode.ShouldBe(42, run.Result.Stderr);
        run.Record!.RootElement.GetProperty("runtime").GetString().ShouldBe("crun");
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task AMissingCrunIsOneLineAndNothingIsCreated()
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("nocrun");

        var result = await CorralProcess.RunAsync(["--crun-path", "/nonexistent/crun", "run", "--runtime", "crun", "--rootfs", rootfs, "--name", id, "--", "true"]);

        result.ExitCode.ShouldBe(125, result.Stderr);
        result.Stderr.Trim().ShouldBe("corral: runtime binary '/nonexistent/crun' for crun not found; install it (apt-get install crun) or set its path");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        Directory.Exists(Path.Combine(TestHost.CrunRoot, id)).ShouldBeFalse();
    }

    [Fact]
    public async Task ACrunContainerRunsInTheCorralOwnedCgroup()
    {
        RuntimeCheck.Require("crun");

        var run = await ExitDetectionTests.RunAsync("crun", ["--memory", "64Mi"], "cat", "/proc/self/cgroup");

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        // On v1 one line per hierarchy, on v2 the single "0::" line: all in corral/<id>/ctr.
        var lines = run.Result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.ShouldNotBeEmpty();
        lines.ShouldAllBe(line => line.EndsWith($"/corral/{run.Id}/ctr", StringComparison.Ordinal));
        run.Record!.RootElement.GetProperty("memoryLimitBytes").GetInt64().ShouldBe(64L << 20);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }
}
