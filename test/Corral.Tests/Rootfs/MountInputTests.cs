using Corral.Common;
using Corral.Rootfs;
using Shouldly;
using Xunit;

namespace Corral.Tests.Rootfs;

public sealed class MountInputTests
{
    [Theory]
    [InlineData("/host:/data", "/host", "/data", false, false)]
    [InlineData("/host:/data:ro", "/host", "/data", true, false)]
    [InlineData("/host:/data:rw", "/host", "/data", false, false)]
    [InlineData("/host:/data:ro,create", "/host", "/data", true, true)]
    [InlineData("/host:/data:create", "/host", "/data", false, true)]
    public void Volumes_parse_as_docker_writes_them(string text, string source, string target, bool readOnly, bool create)
    {
        var mount = MountInput.ParseVolume(text);
        mount.Kind.ShouldBe(MountKind.Bind);
        mount.Source.ShouldBe(source);
        mount.Target.ShouldBe(target);
        mount.ReadOnly.ShouldBe(readOnly);
        mount.CreateSource.ShouldBe(create);
    }

    [Theory]
    [InlineData("/host")]
    [InlineData(":/data")]
    [InlineData("/host:")]
    [InlineData("/a:/b:/c:ro")]
    [InlineData("/host:/data:rx")]
    public void Bad_volumes_are_one_line(string text)
    {
        var error = Should.Throw<CorralException>(() => MountInput.ParseVolume(text));
        error.Kind.ShouldBe(ErrorKind.InvalidArgument);
        error.Message.ShouldNotContain("\n");
    }

    [Theory]
    [InlineData("/scratch", null)]
    [InlineData("/scratch:size=1Mi", 1L << 20)]
    public void Tmpfs_parses_with_an_optional_size(string text, long? size)
    {
        var mount = MountInput.ParseTmpfs(text);
        mount.Kind.ShouldBe(MountKind.Tmpfs);
        mount.Target.ShouldBe("/scratch");
        mount.SizeBytes.ShouldBe(size);
        MountInput.Validate([mount])[0].SizeBytes.ShouldBe(size ?? MountInput.DefaultTmpfsBytes);
    }

    [Theory]
    [InlineData("/scratch:size=0")]
    [InlineData("/scratch:size=lots")]
    [InlineData("/scratch:mode=777")]
    public void Bad_tmpfs_options_are_refused(string text) =>
        Should.Throw<CorralException>(() => MountInput.ParseTmpfs(text)).Kind.ShouldBe(ErrorKind.InvalidArgument);

    [Theory]
    [InlineData("/", "container's root")]
    [InlineData("//", "container's root")]
    [InlineData("/.", "container's root")]
    [InlineData("/proc", "belongs to the runtime")]
    [InlineData("/proc/sys", "belongs to the runtime")]
    [InlineData("/sys", "belongs to the runtime")]
    [InlineData("/dev", "belongs to the runtime")]
    [InlineData("/dev/shm", "belongs to the runtime")]
    [InlineData("/a/../proc", "'..'")]
    [InlineData("data", "absolute")]
    [InlineData("/da\nta", "control character")]
    public void Container_paths_that_cover_what_the_runtime_owns_are_refused(string target, string message)
    {
        var error = Should.Throw<CorralException>(() => MountInput.Target(target));
        error.Kind.ShouldBe(ErrorKind.InvalidArgument);
        error.Message.ShouldContain(message);
    }

    [Theory]
    [InlineData("/data", "/data")]
    [InlineData("/data/", "/data")]
    [InlineData("//data/./x", "/data/x")]
    [InlineData("/procfs", "/procfs")]
    [InlineData("/device", "/device")]
    public void Container_paths_are_normalised(string target, string expected) =>
        MountInput.Target(target).ShouldBe(expected);

    [Fact]
    public void Two_mounts_at_one_path_are_refused() =>
        Should.Throw<CorralException>(() => MountInput.Validate([MountInput.ParseTmpfs("/x"), MountInput.ParseTmpfs("/x/")]))
            .Message.ShouldContain("same container path");

    [Fact]
    public void Bind_sources_are_resolved_once_to_what_their_symlinks_name()
    {
        var root = Directory.CreateTempSubdirectory("corral-mount-").FullName;
        try
        {
            var real = Directory.CreateDirectory(Path.Combine(root, "real")).FullName;
            var link = Path.Combine(root, "link");
            File.CreateSymbolicLink(link, real);
            MountInput.Validate([MountInput.ParseVolume($"{link}:/data")])[0].Source.ShouldBe(real);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void A_missing_source_is_refused_unless_asked_to_create_and_then_made_only_after_every_check()
    {
        var root = Directory.CreateTempSubdirectory("corral-mount-").FullName;
        try
        {
            var missing = Path.Combine(root, "made");
            Should.Throw<CorralException>(() => MountInput.Validate([MountInput.ParseVolume($"{missing}:/data")])).Message.ShouldContain("no such file or directory");
            Directory.Exists(missing).ShouldBeFalse();

            // A later bad mount in the same request: nothing is created.
            Should.Throw<CorralException>(() => MountInput.Validate([MountInput.ParseVolume($"{missing}:/data:create"), MountInput.ParseTmpfs("/proc")]));
            Directory.Exists(missing).ShouldBeFalse();

            MountInput.Validate([MountInput.ParseVolume($"{missing}:/data:create")])[0].Source.ShouldBe(missing);
            Directory.Exists(missing).ShouldBeTrue();
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Devices_and_the_host_root_are_never_bind_sources()
    {
        Should.Throw<CorralException>(() => MountInput.Validate([MountInput.ParseVolume("/dev/null:/null")])).Message.ShouldContain("not a directory or a regular file");
        Should.Throw<CorralException>(() => MountInput.Validate([MountInput.ParseVolume("/:/host")])).Message.ShouldContain("host's root filesystem");
    }

    [Fact]
    public void The_daemon_allows_bind_sources_only_under_its_allowed_roots()
    {
        var root = Directory.CreateTempSubdirectory("corral-allowed-").FullName;
        try
        {
            var inside = Directory.CreateDirectory(Path.Combine(root, "in")).FullName;
            var escape = Path.Combine(root, "escape");
            File.CreateSymbolicLink(escape, "/etc");
            var allowed = MountInput.AllowedRoot(root);

            MountInput.CheckAllowed([MountInput.ParseVolume($"{inside}:/data")], [allowed]);
            Should.Throw<CorralException>(() => MountInput.CheckAllowed([MountInput.ParseVolume($"{escape}:/data")], [allowed])).Kind.ShouldBe(ErrorKind.FailedPrecondition);
            Should.Throw<CorralException>(() => MountInput.CheckAllowed([MountInput.ParseVolume($"{root}-sibling:/data")], [allowed])).Kind.ShouldBe(ErrorKind.FailedPrecondition);
            Should.Throw<CorralException>(() => MountInput.CheckAllowed([MountInput.ParseVolume($"{root}/in/../../etc:/data")], [allowed])).Kind.ShouldBe(ErrorKind.InvalidArgument);
            Should.Throw<CorralException>(() => MountInput.CheckAllowed([MountInput.ParseVolume($"{inside}:/data")], [])).Message.ShouldContain("--allow-mounts-under");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Spec_mounts_are_private_without_set_id_programs_or_devices()
    {
        var specs = MountInput.ToSpec(MountInput.Validate([MountInput.ParseVolume("/tmp:/data:ro"), MountInput.ParseTmpfs("/scratch:size=1Mi")])).ToList();
        specs[0].Type.ShouldBe("bind");
        specs[0].Options.ShouldBe(["rbind", "rprivate", "nosuid", "nodev", "ro"]);
        specs[1].Type.ShouldBe("tmpfs");
        specs[1].Options!.ShouldContain("size=1048576");
        specs[1].Options!.ShouldContain("rw");
    }
}
