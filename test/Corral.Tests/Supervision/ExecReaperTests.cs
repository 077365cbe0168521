using Corral.Runtimes;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Supervision;

/// <summary>The pure parts of the detached runc exec's parent; the parent itself runs in the integration tests (DaemonExecTests).</summary>
public sealed class ExecReaperTests
{
    [Theory]
    [InlineData(0x0000, 0)]
    [InlineData(0x0700, 7)]
    [InlineData(0xff00, 255)]
    [InlineData(0x0009, 137)]
    [InlineData(0x000d, 141)]
    [InlineData(0x008f, 143)] // SIGTERM with a core dump flag
    public void AWaitStatusReadsAsAShellWouldReportIt(int status, int exitCode) =>
        ExecReaper.ExitCodeOf(status).ShouldBe(exitCode);

    [Fact]
    public void TheWrappedExecRunsTheRuntimeAfterTheReapersOwnArguments()
    {
        var detached = new RuntimeInvocation("/usr/sbin/runc", ["--root", "/run/x", "exec", "--detach", "--process", "/b/p.json", "--pid-file", "/b/p.pid", "c-1"]);

        var wrapped = ExecReaper.Wrap(["dotnet", "/opt/corral/Corral.Cli.dll"], detached, "/b/p.pid");

        wrapped.FileName.ShouldBe("dotnet");
        wrapped.Args.ShouldBe(["/opt/corral/Corral.Cli.dll", "exec-reap", "/b/p.pid", "--", "/usr/sbin/runc", "--root", "/run/x", "exec", "--detach", "--process", "/b/p.json", "--pid-file", "/b/p.pid", "c-1"]);
        Should.Throw<ArgumentOutOfRangeException>(() => ExecReaper.Wrap([], detached, "/b/p.pid"));
    }

    [Fact]
    public void OnlyRuncExecsRunDetached()
    {
        var options = new RuntimeOptions();
        foreach (var kind in new[] { RuntimeKind.Runc, RuntimeKind.Crun, RuntimeKind.Gvisor })
        {
            var detached = ContainerRuntimes.Create(kind, options).ExecDetached("c-1", "/b/p.json", "/b/p.pid");
            if (kind == RuntimeKind.Runc)
            {
                detached.ShouldNotBeNull().Args.ShouldContain("--detach");
            }
            else
            {
                detached.ShouldBeNull($"{kind} hands the process the caller's stdio in the foreground");
            }
        }
    }
}
