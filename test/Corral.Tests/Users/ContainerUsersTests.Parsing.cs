using Corral.Common;
using Corral.Users;
using Shouldly;
using Xunit;

namespace Corral.Tests.Users;

/// <summary>--user parsing and the pure passwd/group parser and resolution rules.</summary>
public sealed partial class ContainerUsersTests
{
    [Theory]
    [InlineData("app", "app", null, null, null)]
    [InlineData("1000", null, 1000u, null, null)]
    [InlineData("app:wheel", "app", null, "wheel", null)]
    [InlineData("1000:10", null, 1000u, null, 10u)]
    [InlineData("app:10", "app", null, null, 10u)]
    [InlineData("1000:wheel", null, 1000u, "wheel", null)]
    [InlineData("0", null, 0u, null, null)]
    [InlineData("0:0", null, 0u, null, 0u)]
    [InlineData("4294967294:4294967294", null, 4294967294u, null, 4294967294u)]
    [InlineData("0100", null, 100u, null, null)]
    [InlineData("_svc$", "_svc$", null, null, null)]
    [InlineData("a.b-c_D9", "a.b-c_D9", null, null, null)]
    [InlineData(".hidden:.grp", ".hidden", null, ".grp", null)]
    [InlineData("abcdefghijabcdefghijabcdefghijab", "abcdefghijabcdefghijabcdefghijab", null, null, null)]
    [InlineData("1a", "1a", null, null, null)]
    public void Spec_forms_parse(string text, string? userName, uint? uid, string? groupName, uint? gid)
    {
        var spec = UserSpec.Parse(text);

        (spec.UserName, spec.Uid, spec.GroupName, spec.Gid).ShouldBe((userName, uid, groupName, gid));
        spec.HasGroup.ShouldBe(groupName is not null || gid is not null);
        spec.Text.ShouldBe(text);
        spec.ToString().ShouldBe(text);
    }

    [Theory]
    [InlineData("", "is empty")]
    [InlineData(":", "the user is empty")]
    [InlineData("app:", "the group is empty")]
    [InlineData(":10", "the user is empty")]
    [InlineData("a:b:c", "one ':' at most")]
    [InlineData("-1", "user id -1 is out of range (0 to 4294967294)")]
    [InlineData("4294967295", "user id 4294967295 is out of range")]
    [InlineData("99999999999999999999999", "user id 99999999999999999999999 is out of range")]
    [InlineData("app:-1", "group id -1 is out of range")]
    [InlineData("app:4294967295", "group id 4294967295 is out of range")]
    [InlineData("+5", "user name '+5' is not valid")]
    [InlineData(" app", "user name ' app' is not valid")]
    [InlineData("app ", "user name 'app ' is not valid")]
    [InlineData("app: 10", "group name ' 10' is not valid")]
    [InlineData("-app", "user name '-app' is not valid")]
    [InlineData("a b", "user name 'a b' is not valid")]
    [InlineData("abcdefghijabcdefghijabcdefghijabc", "is not valid")]
    [InlineData("\u00e4pfel", "is not valid")]
    [InlineData("app$x", "is not valid")]
    [InlineData("$", "is not valid")]
    [InlineData("app/../x", "is not valid")]
    [InlineData("app\nroot", "user name 'app\\x0aroot' is not valid")]
    [InlineData("app\0", "is not valid")]
    [InlineData("\u0661\u0662", "is not valid")]
    public void Bad_specs_are_refused_on_one_line(string text, string why)
    {
        var e = Should.Throw<CorralException>(() => UserSpec.Parse(text));

        e.Kind.ShouldBe(ErrorKind.InvalidArgument);
        e.ExitCode.ShouldBe(125);
        e.Message.ShouldStartWith("invalid --user '");
        e.Message.ShouldContain(why);
        e.Message.ShouldNotContain('\n');
    }

    [Fact]
    public void Passwd_parsing_skips_malformed_lines()
    {
        var entries = UserDatabase.ParsePasswd(
            "# comment\r\n" +
            "\n" +
            "ok:x:1:2:gecos:/home/ok:/bin/sh\r\n" +
            "short:x:3\n" +
            "baduid:x:abc:1::/:/bin/sh\n" +
            "neg:x:-1:1::/:/bin/sh\n" +
            "toobig:x:4294967295:1::/:/bin/sh\n" +
            "badgid:x:5:+6::/:/bin/sh\n" +
            "+nis::0:0:::\n" +
            "-nis::0:0:::\n" +
            "bad name:x:7:7::/:/bin/sh\n" +
            ":x:8:8::/:/bin/sh\n" +
            "nul:x:9:9::/ho\0me:/bin/sh\n" +
            "minimal:x:10:11\n" +
            "ok:x:12:12::/second:/bin/sh");

        entries.ShouldBe([new PasswdEntry("ok", 1, 2, "/home/ok"), new PasswdEntry("minimal", 10, 11, string.Empty), new PasswdEntry("ok", 12, 12, "/second")]);
    }

    [Fact]
    public void Group_parsing_skips_malformed_lines_and_members()
    {
        var entries = UserDatabase.ParseGroup(
            "wheel:x:10:root, app ,,bad name,-x\n" +
            "empty:x:11:\n" +
            "nomembers:x:12\n" +
            "short:x\n" +
            "badgid:x:g:app\n" +
            "# comment:x:13:app\n");

        entries.Select(g => (g.Name, g.Gid, string.Join(',', g.Members))).ShouldBe([("wheel", 10u, "root,app"), ("empty", 11u, string.Empty), ("nomembers", 12u, string.Empty)]);
    }

    [Fact]
    public void Resolution_rules_without_files()
    {
        var db = UserDatabase.Parse(Passwd, Group);

        db.Resolve(null).ShouldBe(new ResolvedUser(0, 0, [10u], "/root", "root"));
        db.Resolve(UserSpec.Parse("daemon")).ShouldBe(new ResolvedUser(1, 1, [], "/usr/sbin", "daemon"));
        db.Resolve(UserSpec.Parse("app")).AdditionalGids.ShouldBe([10u, 999u, 63u]);
        db.Resolve(UserSpec.Parse("77:app")).ShouldBe(new ResolvedUser(77, 1000, [], "/", null));
        UserDatabase.Empty.Resolve(UserSpec.Parse("5:6")).ShouldBe(new ResolvedUser(5, 6, [], "/", null));
        UserDatabase.Empty.Resolve(null).ShouldBe(new ResolvedUser(0, 0, [], "/root", null));
    }

    [Fact]
    public void The_first_matching_entry_wins()
    {
        var db = UserDatabase.Parse("dup:x:1:1::/first:/bin/sh\ndup:x:2:2::/second:/bin/sh\nother:x:1:9::/other:/bin/sh\n", "g:x:5:\ng:x:6:\n");

        db.Resolve(UserSpec.Parse("dup")).ShouldBe(new ResolvedUser(1, 1, [], "/first", "dup"));
        db.Resolve(UserSpec.Parse("1")).Name.ShouldBe("dup");
        db.Resolve(UserSpec.Parse("dup:g")).Gid.ShouldBe(5u);
    }

    [Fact]
    public void A_numeric_spec_is_never_a_name()
    {
        // A passwd name made of digits is not matched by a numeric --user: as in runc, a number is a uid.
        var db = UserDatabase.Parse("1000:x:5:5::/five:/bin/sh\n", string.Empty);

        db.Resolve(UserSpec.Parse("1000")).ShouldBe(new ResolvedUser(1000, 0, [], "/", null));
    }
}
