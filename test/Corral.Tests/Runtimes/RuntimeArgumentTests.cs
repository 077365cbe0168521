using Corral.Runtimes;
using Shouldly;
using Xunit;

namespace Corral.Tests.Runtimes;

public sealed class RuntimeArgumentTests
{
    private static readonly RuntimeOptions Options = new()
    {
        RuncPath = "/usr/sbin/runc",
        RunscPath = "/usr/bin/runsc",
        RuncRoot = "/run/corral/runc",
        RunscRoot = "/run/corral/runsc",
        RunscPlatform = "systrap",
    };

    [Fact]
    public void RuncRunsInTheForegroundWithItsOwnRootAndPidFile()
    {
        var runc = ContainerRuntimes.Create(RuntimeKind.Runc, Options);

        runc.Run("c1", "/b/c1", "/b/c1/init.pid", gpu: false).ShouldBe(new RuntimeInvocation(
            "/usr/sbin/runc", ["--root", "/run/corral/runc", "--log", "/b/c1/runtime.log", "--log-format", "json", "run", "--bundle", "/b/c1", "--pid-file", "/b/c1/init.pid", "c1"]),
            new RuntimeInvocationComparer());
        runc.LaunchesInsideCgroup.ShouldBeFalse();
        runc.Name.ShouldBe("runc");
    }

    [Fact]
    public void RunscIgnoresCgroupsHasNoNetworkAndTheConfiguredPlatform()
    {
        var runsc = ContainerRuntimes.Create(RuntimeKind.Gvisor, Options);

        var run = runsc.Run("c2", "/b/c2", "/b/c2/init.pid", gpu: false);

        run.FileName.ShouldBe("/usr/bin/runsc");
        run.Args.ShouldBe(["--root", "/run/corral/runsc", "--platform", "systrap", "--network", "none", "--ignore-cgroups", "run", "--bundle", "/b/c2", "--pid-file", "/b/c2/init.pid", "c2"]);
        run.Args.ShouldNotContain("--nvproxy=true");
        runsc.LaunchesInsideCgroup.ShouldBeTrue();
        runsc.Name.ShouldBe("gvisor");
    }

    [Fact]
    public void RunscAsksForNvproxyWhenAGpuIsRequested()
    {
        var run = ContainerRuntimes.Create(RuntimeKind.Gvisor, Options).Run("c3", "/b", "/b/p", gpu: true);

        run.Args.ShouldContain("--nvproxy=true");
        run.Args.ToList().IndexOf("--nvproxy=true").ShouldBeLessThan(run.Args.ToList().IndexOf("run"), "a global flag goes before the subcommand");
    }

    [Theory]
    [InlineData(RuntimeKind.Runc, "/usr/sbin/runc", "/run/corral/runc")]
    [InlineData(RuntimeKind.Gvisor, "/usr/bin/runsc", "/run/corral/runsc")]
    public void KillAndDeleteUseTheSameRoot(RuntimeKind kind, string binary, string root)
    {
        var runtime = ContainerRuntimes.Create(kind, Options);

        runtime.Kill("c4", 15).Args.ShouldBe(["--root", root, "kill", "c4", "15"]);
        runtime.Delete("c4").Args.ShouldBe(["--root", root, "delete", "--force", "c4"]);
        runtime.List().FileName.ShouldBe(binary);
    }

    [Theory]
    [InlineData("gvisor", RuntimeKind.Gvisor)]
    [InlineData("runsc", RuntimeKind.Gvisor)]
    [InlineData("RUNC", RuntimeKind.Runc)]
    public void ParsesRuntimeNames(string name, RuntimeKind expected)
    {
        ContainerRuntimes.TryParse(name, out var kind).ShouldBeTrue();
        kind.ShouldBe(expected);
    }

    [Fact]
    public void RefusesUnknownRuntimes() => ContainerRuntimes.TryParse("docker", out _).ShouldBeFalse();

    private sealed class RuntimeInvocationComparer : IEqualityComparer<RuntimeInvocation>
    {
        public bool Equals(RuntimeInvocation? x, RuntimeInvocation? y) =>
            x is not null && y is not null && x.FileName == y.FileName && x.Args.SequenceEqual(y.Args);

        public int GetHashCode(RuntimeInvocation obj) => obj.FileName.GetHashCode(StringComparison.Ordinal);
    }
}
