using Corral.Common;
using Corral.Runtimes;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Runtimes;

public sealed class CrunRuntimeTests
{
    private static readonly RuntimeOptions Options = new()
    {
        RuncPath = "/usr/sbin/runc",
        CrunPath = "/usr/bin/crun",
        CrunRoot = "/run/corral/crun",
    };

    // A hybrid host: v1 hierarchies under a tmpfs, cgroup2 at /sys/fs/cgroup/unified.
    private const string HybridMountInfo =
        "25 1 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n" +
        "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n" +
        "30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory\n" +
        "31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids\n";

    private const string PureV2MountInfo =
        "25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";

    [Fact]
    public void CrunTakesRuncsCommandLineWithItsOwnBinaryAndRoot()
    {
        var crun = ContainerRuntimes.Create(RuntimeKind.Crun, Options);

        crun.Run("c1", "/b/c1", "/b/c1/init.pid", gpu: false).Args
            .ShouldBe(["--root", "/run/corral/crun", "--log", "/b/c1/runtime.log", "--log-format", "json", "run", "--bundle", "/b/c1", "--pid-file", "/b/c1/init.pid", "c1"]);
        crun.Run("c1", "/b/c1", "/b/c1/init.pid", gpu: false).FileName.ShouldBe("/usr/bin/crun");
        crun.Exec("c1", "/b/p.json", "/b/p.pid", "/b/p.ipid").Args
            .ShouldBe(["--root", "/run/corral/crun", "exec", "--process", "/b/p.json", "--pid-file", "/b/p.pid", "c1"]);
        crun.Kill("c1", 9).Args.ShouldBe(["--root", "/run/corral/crun", "kill", "c1", "9"]);
        crun.Delete("c1").Args.ShouldBe(["--root", "/run/corral/crun", "delete", "--force", "c1"]);
        crun.KillProcess("c1", 42, 9).ShouldBeNull("an exec is a host process: signalled by its pid");
        crun.LaunchesInsideCgroup.ShouldBeFalse("crun places the container by cgroupsPath, as runc does");
        crun.HostPids.ShouldBeTrue();
        crun.Name.ShouldBe("crun");
        crun.Binary.ShouldBe("/usr/bin/crun");
    }

    [Theory]
    [InlineData("crun")]
    [InlineData("CRUN")]
    public void ParsesCrun(string name)
    {
        ContainerRuntimes.TryParse(name, out var kind).ShouldBeTrue();
        kind.ShouldBe(RuntimeKind.Crun);
        ContainerRuntimes.NameOf(kind).ShouldBe("crun");
        ContainerRuntimes.PackageOf(kind).ShouldBe("crun");
    }

    [Fact]
    public void AHybridHostWithControllersOnCgroupV2IsAConflict()
    {
        var conflict = CrunHost.FindConflict(HybridMountInfo, path => path == "/sys/fs/cgroup/unified/cgroup.controllers" ? "hugetlb\n" : null);

        conflict.ShouldNotBeNull();
        conflict.V2MountPoint.ShouldBe("/sys/fs/cgroup/unified");
        conflict.Controllers.ShouldBe(["hugetlb"]);
        conflict.V1Parent.ShouldBe("/sys/fs/cgroup");
        var error = CrunHost.Unsupported(conflict);
        error.Kind.ShouldBe(ErrorKind.HostFault);
        error.ExitCode.ShouldBe(CorralExitCodes.CorralError);
        error.Message.ShouldNotContain("\n");
        error.Message.ShouldContain("corral setup-crun");
        error.Message.ShouldContain("(hugetlb)");
    }

    [Fact]
    public void AHybridHostWithAnEmptyCgroupV2HierarchyIsFine() =>
        CrunHost.FindConflict(HybridMountInfo, _ => "\n").ShouldBeNull();

    [Fact]
    public void APureCgroupV2HostIsNoConflictWhateverItsControllers() =>
        CrunHost.FindConflict(PureV2MountInfo, _ => "cpuset cpu io memory hugetlb pids\n").ShouldBeNull();

    [Fact]
    public void ValidationNamesTheCrunPackageWhenTheBinaryIsMissing()
    {
        var supervisor = new ContainerSupervisor(
            new SupervisorOptions { StateDir = Path.Combine(Path.GetTempPath(), "corral-crun-" + Guid.NewGuid().ToString("N")) },
            new RuntimeOptions { CrunPath = "/nonexistent/crun" },
            cgroupDriver: null,
            oomWatchers: null,
            TimeProvider.System);

        // A root filesystem that is not the host's own ("/" is refused before the binary is looked for).
        var rootfs = Directory.CreateTempSubdirectory("corral-crun-rootfs-").FullName;
        try
        {
            var ex = Should.Throw<CorralException>(() => supervisor.Validate(new ContainerRequest { Runtime = RuntimeKind.Crun, Command = ["true"], Rootfs = rootfs }));

            ex.Message.ShouldBe("runtime binary '/nonexistent/crun' for crun not found; install it (apt-get install crun) or set its path");
            ex.Kind.ShouldBe(ErrorKind.HostFault);
        }
        finally
        {
            Directory.Delete(rootfs);
        }
    }
}
