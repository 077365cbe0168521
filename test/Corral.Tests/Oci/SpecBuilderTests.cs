using System.Text.Json;
using Corral.Oci;
using Shouldly;
using Xunit;

namespace Corral.Tests.Oci;

public sealed class SpecBuilderTests
{
    private static readonly SpecInput Input = new()
    {
        RootfsPath = "/images/debian/rootfs",
        Args = ["python3", "-c", "print(1)"],
        Env = [new("GREETING", "hi"), new("PATH", "/opt/bin")],
        Workdir = "/work",
        CgroupsPath = "/corral/c1/ctr",
    };

    [Fact]
    public void RootIsReadOnlyWithAWritableTmp()
    {
        var spec = SpecBuilder.Build(Input, _ => null);

        spec.Root.ShouldBe(new RootSpec("/images/debian/rootfs", true));
        var tmp = spec.Mounts.Single(m => m.Destination == "/tmp");
        tmp.Type.ShouldBe("tmpfs");
        tmp.Options!.ShouldContain("mode=1777");
    }

    [Fact]
    public void WritableRootHasNoTmpfsTmpAndRunsAsTheResolvedUser()
    {
        var spec = SpecBuilder.Build(Input with { ReadonlyRoot = false, TmpSize = null, User = new UserSpec { Uid = 1234, Gid = 2345, AdditionalGids = [777] } }, _ => null);

        spec.Root.ShouldBe(new RootSpec("/images/debian/rootfs", false));
        spec.Mounts.ShouldNotContain(m => m.Destination == "/tmp");
        spec.Process.User.Uid.ShouldBe(1234u);
        spec.Process.User.Gid.ShouldBe(2345u);
        spec.Process.User.AdditionalGids.ShouldBe([777u]);
        SpecBuilder.FromJson(SpecBuilder.ToJson(spec)).Process.User.AdditionalGids.ShouldBe([777u]);
    }

    [Fact]
    public void HasRuncSpecDefaults()
    {
        var spec = SpecBuilder.Build(Input, _ => null);

        spec.Linux.Namespaces.Select(n => n.Type).ShouldBe(["pid", "network", "ipc", "uts", "mount"]);
        spec.Process.Capabilities!.Bounding.ShouldBe(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        spec.Linux.MaskedPaths.ShouldContain("/proc/kcore");
        spec.Linux.ReadonlyPaths.ShouldContain("/proc/sysrq-trigger");
        spec.Process.NoNewPrivileges.ShouldBeTrue();
        spec.Process.Terminal.ShouldBeFalse();
        spec.Linux.Resources!.Devices[0].ShouldBe(new DeviceCgroupSpec(false, "rwm"));
        spec.Mounts.Select(m => m.Destination).ShouldBe(["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/tmp"]);
    }

    [Fact]
    public void CallerEnvOverridesDefaultsAndKeepsOrder()
    {
        var spec = SpecBuilder.Build(Input, _ => null);

        spec.Process.Env.ShouldBe(["PATH=/opt/bin", "HOME=/root", "GREETING=hi"]);
        spec.Process.Cwd.ShouldBe("/work");
        spec.Process.Args.ShouldBe(["python3", "-c", "print(1)"]);
    }

    [Fact]
    public void RlimitsNeverExceedTheHostHardLimit()
    {
        var spec = SpecBuilder.Build(Input, resource => resource == 7 ? 512UL : 100_000UL);

        spec.Process.Rlimits.ShouldContain(new RlimitSpec("RLIMIT_NOFILE", 512, 512));
        spec.Process.Rlimits.ShouldContain(new RlimitSpec("RLIMIT_NPROC", 4096, 4096));
    }

    [Fact]
    public void SerializesToOciJson()
    {
        var json = SpecBuilder.ToJson(SpecBuilder.Build(Input, _ => null));
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;

        root.GetProperty("ociVersion").GetString().ShouldBe("1.0.2");
        root.GetProperty("root").GetProperty("readonly").GetBoolean().ShouldBeTrue();
        root.GetProperty("linux").GetProperty("cgroupsPath").GetString().ShouldBe("/corral/c1/ctr");
        root.GetProperty("process").GetProperty("rlimits")[0].GetProperty("type").GetString().ShouldBe("RLIMIT_NOFILE");
        root.GetProperty("linux").TryGetProperty("devices", out _).ShouldBeFalse("null members are left out");
        SpecBuilder.FromJson(json).Process.Args.ShouldBe(Input.Args);
    }

    [Fact]
    public void GpuDevicesAreCreatedAndAllowed()
    {
        var spec = SpecBuilder.Build(Input with { Devices = [new DeviceSpec("/dev/nvidia0", "c", 195, 0, 438u)] }, _ => null);

        spec.Linux.Devices!.Single().Path.ShouldBe("/dev/nvidia0");
        spec.Linux.Resources!.Devices.ShouldContain(new DeviceCgroupSpec(true, "rwm", "c", 195, 0));
    }

    [Fact]
    public void NoCgroupsPathIsLeftOut()
    {
        var json = SpecBuilder.ToJson(SpecBuilder.Build(Input with { CgroupsPath = null }, _ => null));

        json.ShouldNotContain("cgroupsPath");
    }
}
