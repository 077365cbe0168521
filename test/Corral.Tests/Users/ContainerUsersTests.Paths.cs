using Corral.Common;
using Corral.Interop;
using Corral.Users;
using Shouldly;
using Xunit;

namespace Corral.Tests.Users;

/// <summary>ContainerPaths.EnsureDirectory: --workdir made inside the root, never outside it.</summary>
public sealed partial class ContainerUsersTests
{
    private const UnixFileMode Mode755 =
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
        UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    private static (uint Uid, uint Gid) Owner(string path)
    {
        var buffer = new byte[256];
        LibC.statx(-100, path, AtCalls.AT_SYMLINK_NOFOLLOW, AtCalls.STATX_BASIC_STATS, buffer).ShouldBe(0);
        return (BitConverter.ToUInt32(buffer, 20), BitConverter.ToUInt32(buffer, 24));
    }

    private void CanaryEmpty() => Directory.GetFileSystemEntries(Canary).ShouldBeEmpty();

    [Fact]
    public void Nested_missing_directories_are_made_0755()
    {
        ContainerPaths.EnsureDirectory(Root, "/srv/app/data").ShouldBe(3);

        foreach (var dir in new[] { "/srv", "/srv/app", "/srv/app/data" })
        {
            Directory.Exists(InRoot(dir)).ShouldBeTrue();
            File.GetUnixFileMode(InRoot(dir)).ShouldBe(Mode755);
        }

        ContainerPaths.EnsureDirectory(Root, "/srv/app/data/more/").ShouldBe(1);
        ContainerPaths.EnsureDirectory(Root, "/srv/app/data").ShouldBe(0);
        ContainerPaths.EnsureDirectory(Root, "/").ShouldBe(0);
    }

    [Fact]
    public void Made_directories_are_owned_by_root()
    {
        var before = File.GetUnixFileMode(Root);

        // As root (CI, Corral itself) they are root's; run as another user, they stay that user's (the root's owner here).
        var expected = Environment.IsPrivilegedProcess ? (0u, 0u) : Owner(Root);
        ContainerPaths.EnsureDirectory(Root, "/owned/by/root");

        foreach (var dir in new[] { "/owned", "/owned/by", "/owned/by/root" })
        {
            Owner(InRoot(dir)).ShouldBe(expected);
        }

        File.GetUnixFileMode(Root).ShouldBe(before);
    }

    [Fact]
    public void Dot_and_dotdot_stay_in_the_root()
    {
        ContainerPaths.EnsureDirectory(Root, "/../../../x/./y/../z").ShouldBe(2);

        Directory.Exists(InRoot("/x/z")).ShouldBeTrue();
        Directory.Exists(InRoot("/x/y")).ShouldBeFalse();
    }

    [Fact]
    public void An_in_root_symlink_is_followed()
    {
        Directory.CreateDirectory(InRoot("/real"));
        Directory.CreateDirectory(InRoot("/a"));
        File.CreateSymbolicLink(InRoot("/abs"), "/real");
        File.CreateSymbolicLink(InRoot("/a/rel"), "../real");

        ContainerPaths.EnsureDirectory(Root, "/abs/one").ShouldBe(1);
        ContainerPaths.EnsureDirectory(Root, "/a/rel/two/three").ShouldBe(2);

        Directory.Exists(InRoot("/real/one")).ShouldBeTrue();
        Directory.Exists(InRoot("/real/two/three")).ShouldBeTrue();
        File.ResolveLinkTarget(InRoot("/abs"), returnFinalTarget: false).ShouldNotBeNull();
    }

    [Fact]
    public void A_dangling_symlink_is_made_inside_the_root()
    {
        File.CreateSymbolicLink(InRoot("/work"), "/data/work");

        ContainerPaths.EnsureDirectory(Root, "/work/sub").ShouldBe(3);

        Directory.Exists(InRoot("/data/work/sub")).ShouldBeTrue();
    }

    [Fact]
    public void An_absolute_symlink_to_a_host_dir_resolves_inside_the_root()
    {
        File.CreateSymbolicLink(InRoot("/work"), Canary);

        ContainerPaths.EnsureDirectory(Root, "/work/sub");

        CanaryEmpty();
        Directory.Exists(InRoot(Canary + "/sub")).ShouldBeTrue();
    }

    [Fact]
    public void A_relative_symlink_climbing_out_stops_at_the_root()
    {
        File.CreateSymbolicLink(InRoot("/work"), "../../../../../../../../../.." + Canary);
        Directory.CreateDirectory(InRoot("/deep/er"));
        File.CreateSymbolicLink(InRoot("/deep/er/up"), "../../../../../../../../../.." + Canary);

        ContainerPaths.EnsureDirectory(Root, "/work/sub");
        ContainerPaths.EnsureDirectory(Root, "/deep/er/up/other");
        ContainerPaths.EnsureDirectory(Root, "/deep/../../../../../../" + Canary.TrimStart('/') + "/third");

        CanaryEmpty();
        Directory.Exists(InRoot(Canary + "/sub")).ShouldBeTrue();
        Directory.Exists(InRoot(Canary + "/other")).ShouldBeTrue();
        Directory.Exists(InRoot(Canary + "/third")).ShouldBeTrue();
    }

    [Fact]
    public void A_symlink_through_proc_never_reaches_the_host()
    {
        File.CreateSymbolicLink(InRoot("/work"), "/proc/self/root" + Canary);

        ContainerPaths.EnsureDirectory(Root, "/work/sub");

        CanaryEmpty();
        Directory.Exists(InRoot("/proc/self/root" + Canary + "/sub")).ShouldBeTrue();
    }

    [Fact]
    public void A_file_on_the_way_is_not_a_directory()
    {
        Directory.CreateDirectory(InRoot("/x"));
        File.WriteAllText(InRoot("/x/y"), "file");
        File.CreateSymbolicLink(InRoot("/tofile"), "/x/y");

        var e = Should.Throw<CorralException>(() => ContainerPaths.EnsureDirectory(Root, "/x/y/z"));
        e.Message.ShouldBe("invalid --workdir '/x/y/z': /x/y is not a directory in the container");
        e.Kind.ShouldBe(ErrorKind.InvalidArgument);

        Should.Throw<CorralException>(() => ContainerPaths.EnsureDirectory(Root, "/x/y"))
            .Message.ShouldBe("invalid --workdir '/x/y': /x/y is not a directory in the container");
        Should.Throw<CorralException>(() => ContainerPaths.EnsureDirectory(Root, "/tofile/z"))
            .Message.ShouldBe("invalid --workdir '/tofile/z': /x/y is not a directory in the container");
    }

    [Fact]
    public void A_symlink_loop_is_refused()
    {
        File.CreateSymbolicLink(InRoot("/loop"), "/loop");
        File.CreateSymbolicLink(InRoot("/ping"), "pong");
        File.CreateSymbolicLink(InRoot("/pong"), "./ping");

        Should.Throw<CorralException>(() => ContainerPaths.EnsureDirectory(Root, "/loop/x"))
            .Message.ShouldBe("invalid --workdir '/loop/x': /loop goes through too many symlinks in the container");
        Should.Throw<CorralException>(() => ContainerPaths.EnsureDirectory(Root, "/ping")).Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    [Theory]
    [InlineData("relative/dir", "invalid --workdir 'relative/dir': must be an absolute path")]
    [InlineData("", "invalid --workdir '': must be an absolute path")]
    [InlineData("/a\0b", "invalid --workdir '/a\\x00b': contains a NUL character")]
    public void Bad_paths_are_refused(string path, string message)
    {
        var e = Should.Throw<CorralException>(() => ContainerPaths.EnsureDirectory(Root, path));

        e.Message.ShouldBe(message);
        e.Kind.ShouldBe(ErrorKind.InvalidArgument);
        Directory.GetFileSystemEntries(Root).ShouldBeEmpty();
    }
}
