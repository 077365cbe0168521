using System.Text;
using Corral.Common;
using Corral.Interop;
using Corral.Tests.Images;
using Corral.Users;
using Shouldly;
using Xunit;

namespace Corral.Tests.Users;

/// <summary>
/// Users and working directories inside a root filesystem: --user parsing, passwd/group parsing and
/// docker's resolution rules (pure), then the same against temporary roots, where /etc/passwd and
/// the --workdir path may be symlinks that try to reach the host.
/// </summary>
public sealed partial class ContainerUsersTests : IDisposable
{
    private const string Passwd =
        "root:x:0:0:root:/root:/bin/sh\n" +
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" +
        "app:x:1000:1000:App:/home/app:/bin/sh\n" +
        "nohome:x:2000:2000:::/bin/sh\n";

    private const string Group =
        "root:x:0:root\n" +
        "wheel:x:10:root,app\n" +
        "app:x:1000:\n" +
        "docker:x:999:other, app\n" +
        "audio:x:63:app,app\n" +
        "again:x:999:app\n" +
        "selfprimary:x:1000:app\n";

    private readonly TempDir _temp = new();

    public ContainerUsersTests()
    {
        Directory.CreateDirectory(Root);
        Directory.CreateDirectory(Canary);
    }

    private string Root => _temp.Combine("root");

    /// <summary>A host directory outside the root: it must stay empty whatever the root holds.</summary>
    private string Canary => _temp.Combine("canary");

    public void Dispose() => _temp.Dispose();

    private string InRoot(string containerPath) => Path.Combine(Root, containerPath.TrimStart('/'));

    private void WriteEtc(string? passwd = Passwd, string? group = Group)
    {
        Directory.CreateDirectory(InRoot("/etc"));
        if (passwd is not null)
        {
            File.WriteAllText(InRoot("/etc/passwd"), passwd);
        }

        if (group is not null)
        {
            File.WriteAllText(InRoot("/etc/group"), group);
        }
    }

    [Fact]
    public void No_user_is_root_with_its_passwd_home_and_groups()
    {
        WriteEtc();

        var user = ContainerUsers.Resolve(Root, null);

        user.ShouldBe(new ResolvedUser(0, 0, user.AdditionalGids, "/root", "root"));
        user.AdditionalGids.ShouldBe([10u]);
        ContainerUsers.Resolve(Root, string.Empty).ShouldBe(user);
    }

    [Fact]
    public void A_name_takes_its_passwd_entry_and_the_groups_listing_it()
    {
        WriteEtc();

        var user = ContainerUsers.Resolve(Root, "app");

        (user.Uid, user.Gid, user.Home, user.Name).ShouldBe((1000u, 1000u, "/home/app", "app"));
        user.AdditionalGids.ShouldBe([10u, 999u, 63u]);
    }

    [Fact]
    public void A_number_with_an_entry_is_that_entry()
    {
        WriteEtc();

        var user = ContainerUsers.Resolve(Root, "1000");

        (user.Uid, user.Gid, user.Home, user.Name).ShouldBe((1000u, 1000u, "/home/app", "app"));
        user.AdditionalGids.ShouldBe([10u, 999u, 63u]);
    }

    [Fact]
    public void A_number_without_an_entry_is_gid_0_and_home_slash()
    {
        WriteEtc();

        ContainerUsers.Resolve(Root, "4242").ShouldBe(new ResolvedUser(4242, 0, [], "/", null));
    }

    [Fact]
    public void An_empty_home_field_is_slash()
    {
        WriteEtc();

        ContainerUsers.Resolve(Root, "nohome").Home.ShouldBe("/");
    }

    [Theory]
    [InlineData("app:wheel", 1000u, 10u)]
    [InlineData("app:4321", 1000u, 4321u)]
    [InlineData("1000:docker", 1000u, 999u)]
    [InlineData("4242:wheel", 4242u, 10u)]
    [InlineData("4242:77", 4242u, 77u)]
    [InlineData("root:0", 0u, 0u)]
    public void An_explicit_group_replaces_the_primary_gid_and_adds_no_supplementary_groups(string spec, uint uid, uint gid)
    {
        WriteEtc();

        var user = ContainerUsers.Resolve(Root, spec);

        (user.Uid, user.Gid).ShouldBe((uid, gid));
        user.AdditionalGids.ShouldBeEmpty();
    }

    [Fact]
    public void A_missing_user_name_is_bad_input()
    {
        WriteEtc();

        var e = Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "nobody"));

        e.Message.ShouldBe("unable to find user nobody: no matching entries in the container's /etc/passwd");
        e.Kind.ShouldBe(ErrorKind.InvalidArgument);
        e.ExitCode.ShouldBe(125);
    }

    [Fact]
    public void A_missing_group_name_is_bad_input()
    {
        WriteEtc();

        var e = Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "app:nogroup"));

        e.Message.ShouldBe("unable to find group nogroup: no matching entries in the container's /etc/group");
        e.Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    [Fact]
    public void Missing_files_count_as_empty()
    {
        ContainerUsers.Resolve(Root, null).ShouldBe(new ResolvedUser(0, 0, [], "/root", null));
        ContainerUsers.Resolve(Root, "55:66").ShouldBe(new ResolvedUser(55, 66, [], "/", null));
        Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "app")).Kind.ShouldBe(ErrorKind.InvalidArgument);
        Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "0:wheel")).Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    [Fact]
    public void Etc_as_a_file_counts_as_missing()
    {
        File.WriteAllText(InRoot("/etc"), "not a directory");

        ContainerUsers.Resolve(Root, "7").ShouldBe(new ResolvedUser(7, 0, [], "/", null));
    }

    [Fact]
    public void A_bad_spec_is_refused_before_the_files_are_read()
    {
        var e = Should.Throw<CorralException>(() => ContainerUsers.Resolve(_temp.Combine("no-such-root"), "a:b:c"));

        e.Message.ShouldStartWith("invalid --user 'a:b:c': ");
        e.Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    [Fact]
    public void A_passwd_symlink_resolves_inside_the_root()
    {
        WriteEtc(passwd: null);
        Directory.CreateDirectory(InRoot("/data"));
        File.WriteAllText(InRoot("/data/passwd.real"), "inside:x:321:654::/srv/inside:/bin/sh\n");
        File.CreateSymbolicLink(InRoot("/etc/passwd"), "../../../../../../../../data/passwd.real");

        ContainerUsers.Resolve(Root, "inside").ShouldBe(new ResolvedUser(321, 654, [], "/srv/inside", "inside"));
    }

    [Fact]
    public void A_passwd_symlink_to_a_host_path_never_reads_the_host_file()
    {
        // The host file names a user; the root's link points at it by its absolute host path.
        var hostPasswd = _temp.Combine("canary-passwd");
        File.WriteAllText(hostPasswd, "hostonly:x:4000:4000::/host:/bin/sh\nroot:x:0:0:root:/hostroot:/bin/sh\n");
        WriteEtc(passwd: null);
        File.CreateSymbolicLink(InRoot("/etc/passwd"), hostPasswd);

        Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "hostonly"))
            .Message.ShouldBe("unable to find user hostonly: no matching entries in the container's /etc/passwd");
        ContainerUsers.Resolve(Root, null).Home.ShouldBe("/root");

        // The same path inside the root is what counts.
        Directory.CreateDirectory(Path.GetDirectoryName(InRoot(hostPasswd))!);
        File.WriteAllText(InRoot(hostPasswd), "rootview:x:5:6::/inroot:/bin/sh\n");
        ContainerUsers.Resolve(Root, "rootview").Uid.ShouldBe(5u);
        Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "hostonly"));
    }

    [Theory]
    [InlineData("/etc/passwd")]
    [InlineData("../../../../../../../../../etc/passwd")]
    [InlineData("/proc/self/root/etc/passwd")]
    public void A_passwd_symlink_to_the_hosts_passwd_is_never_the_hosts(string target)
    {
        File.ReadAllText("/etc/passwd").ShouldContain("root:");
        WriteEtc(passwd: null);
        File.CreateSymbolicLink(InRoot("/etc/passwd"), target);

        // Inside the root the link leads to itself (a loop) or to nothing: missing, so "root" is unknown.
        Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "root")).Kind.ShouldBe(ErrorKind.InvalidArgument);
        ContainerUsers.Resolve(Root, null).ShouldBe(new ResolvedUser(0, 0, [], "/root", null));
    }

    [Fact]
    public void A_passwd_over_4_MiB_is_refused()
    {
        WriteEtc(passwd: "app:x:1000:1000::/home/app:/bin/sh\n" + new string('#', ContainerUsers.MaxFileBytes));

        var e = Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "app"));

        e.Message.ShouldBe("invalid --user 'app': the container's /etc/passwd is larger than 4Mi");
        e.Kind.ShouldBe(ErrorKind.InvalidArgument);
        Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, null))
            .Message.ShouldBe("cannot resolve the container's user: the container's /etc/passwd is larger than 4Mi");
    }

    [Fact]
    public void A_group_of_exactly_4_MiB_is_read()
    {
        var line = "big:x:77:app\n";
        WriteEtc(group: line + new string('#', ContainerUsers.MaxFileBytes - line.Length));

        ContainerUsers.Resolve(Root, "app").AdditionalGids.ShouldBe([77u]);
    }

    [Fact]
    public void A_passwd_that_is_a_directory_is_refused()
    {
        WriteEtc(passwd: null);
        Directory.CreateDirectory(InRoot("/etc/passwd"));

        Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "app"))
            .Message.ShouldBe("invalid --user 'app': the container's /etc/passwd is not a regular file");
    }

    [Fact]
    public async Task A_passwd_that_is_a_fifo_is_refused_without_blocking()
    {
        WriteEtc(passwd: null);
        LibC.mknodat(-100, InRoot("/etc/passwd"), 0x1000 | 0b110_100_100, 0).ShouldBe(0);

        var task = Task.Run(() => Should.Throw<CorralException>(() => ContainerUsers.Resolve(Root, "app")), TestContext.Current.CancellationToken);

        var e = await task.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);
        e.Message.ShouldBe("invalid --user 'app': the container's /etc/passwd is not a regular file");
    }

    [Fact]
    public void A_missing_root_is_a_host_fault()
    {
        Should.Throw<CorralException>(() => ContainerUsers.Resolve(_temp.Combine("no-such-root"), "app")).Kind.ShouldBe(ErrorKind.HostFault);
    }

    [Fact]
    public void Non_utf8_bytes_do_not_break_parsing()
    {
        Directory.CreateDirectory(InRoot("/etc"));
        File.WriteAllBytes(InRoot("/etc/passwd"), [.. Encoding.UTF8.GetBytes("bad\xff:x:1:1::/:/bin/sh\n"), 0xff, 0xfe, (byte)'\n', .. Encoding.UTF8.GetBytes("ok:x:3:4::/ok:/bin/sh\n")]);

        ContainerUsers.Resolve(Root, "ok").ShouldBe(new ResolvedUser(3, 4, [], "/ok", "ok"));
    }
}
