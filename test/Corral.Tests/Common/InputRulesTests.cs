using Corral.Common;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Common;

/// <summary>The input rules the CLI, the daemon and the shim share: exact, bounded, one line each.</summary>
public sealed class InputRulesTests
{
    public static TheoryData<string, long> GoodSizes => new()
    {
        { "1", 1 },
        { "64Mi", 64L << 20 },
        { "1.5Gi", 3L << 29 },
        { "1.5K", 1500 },
        { "512M", 512_000_000 },
        { "1 Gi", 1L << 30 },
        { "4096", 4096 },
    };

    [Theory]
    [MemberData(nameof(GoodSizes))]
    public void Sizes_that_are_whole_bytes_are_taken(string text, long bytes)
    {
        ByteSize.TryParse(text, out var parsed, out var error).ShouldBeTrue(error);
        parsed.ShouldBe(bytes);
    }

    public static TheoryData<string, string> BadSizes => new()
    {
        { "99999999999999999999999999999", "invalid size" },
        { "99999999999999999999", "at most 4 EiB" },
        { "9999999Ti", "at most 4 EiB" },
        { "1.5", "not a whole number of bytes" },
        { "0.5", "at least 1 byte" },
        { "1.0001K", "not a whole number of bytes" },
        { "0", "at least 1 byte" },
        { "-1", "invalid size" },
        { "1e9", "invalid size" },
        { "12XB", "invalid size" },
        { "64Mi\nx", "invalid size" },
        { "", "invalid size" },
    };

    [Theory]
    [MemberData(nameof(BadSizes))]
    public void Sizes_that_overflow_or_are_not_whole_bytes_are_refused(string text, string expected)
    {
        ByteSize.TryParse(text, out _, out var error).ShouldBeFalse();
        error.ShouldContain(expected);
        error.ShouldNotContain("\n");
    }

    public static TheoryData<string, double> GoodDurations => new()
    {
        { "500ms", 0.5 },
        { "10s", 10 },
        { "2m", 120 },
        { "1h", 3600 },
        { "1.5s", 1.5 },
        { "8760h", 365 * 86400 },
    };

    [Theory]
    [MemberData(nameof(GoodDurations))]
    public void Durations_within_a_year_are_taken(string text, double seconds)
    {
        Duration.TryParse(text, out var value, out var error).ShouldBeTrue(error);
        value.TotalSeconds.ShouldBe(seconds, 0.001);
    }

    [Theory]
    [InlineData("300000000h")]
    [InlineData("99999999999999999999h")]
    [InlineData("99999999999999999999999999")]
    [InlineData("8761h")]
    [InlineData("0")]
    [InlineData("0ms")]
    [InlineData("0.00001ms")]
    [InlineData("-5s")]
    [InlineData("5d")]
    public void Durations_that_overflow_or_are_not_positive_are_refused(string text)
    {
        // TimeSpan.FromHours(3e8) used to throw OverflowException: a crash with exit 134.
        Duration.TryParse(text, out _, out var error).ShouldBeFalse();
        error.ShouldStartWith("invalid duration");
    }

    [Theory]
    [InlineData("abc\n")]
    [InlineData("abc\r")]
    [InlineData("a b")]
    [InlineData("a\0b")]
    [InlineData("-abc")]
    [InlineData("a/b")]
    [InlineData("a..b")]
    public void Names_with_anything_but_safe_characters_are_refused(string name)
    {
        ContainerId.IsValid(name, out var error).ShouldBeFalse();
        error.ShouldNotContain("\n");
        Should.Throw<CorralException>(() => ContainerId.Validate(name)).Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    [Theory]
    [InlineData("A B")]
    [InlineData("A\nB")]
    [InlineData("A\u0001")]
    [InlineData("A\0")]
    [InlineData("A=B")]
    [InlineData("")]
    [InlineData("Ä")]
    [InlineData("A\u007f")]
    public void Env_names_with_spaces_controls_or_equals_are_refused(string name)
    {
        var ex = Should.Throw<CorralException>(() => InputRules.EnvName(name));
        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        ex.Message.ShouldStartWith("invalid environment variable name");
        ex.Message.ShouldNotContain("\n");
    }

    [Theory]
    [InlineData("PATH")]
    [InlineData("API_KEY")]
    [InlineData("a.b-c")]
    [InlineData("_")]
    public void Ordinary_env_names_are_taken(string name) => InputRules.EnvName(name);

    public static TheoryData<string[], string[], string?, string> BadProcesses => new()
    {
        { ["tr\0ue"], [], null, "invalid command" },
        { ["echo", "a\0b"], [], null, "invalid argument" },
        { ["true"], ["K", "v\0w"], null, "invalid value of environment variable K" },
        { ["true"], ["K K", "v"], null, "invalid environment variable name" },
        { ["true"], [], "/tmp\0x", "invalid --workdir" },
        { ["true"], [], "/tmp\nx", "invalid --workdir" },
        { ["true"], [], "relative", "invalid --workdir 'relative': must be an absolute path" },
    };

    [Theory]
    [MemberData(nameof(BadProcesses))]
    public void Processes_with_nul_or_control_characters_are_refused(string[] command, string[] env, string? workdir, string expected)
    {
        KeyValuePair<string, string>[] pairs = env.Length == 0 ? [] : [new(env[0], env[1])];
        var ex = Should.Throw<CorralException>(() => InputRules.Process(command, pairs, workdir));
        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        ex.Message.ShouldStartWith(expected);
        ex.Message.ShouldNotContain("\n");
        ex.Message.ShouldNotContain("\0");
    }

    [Fact]
    public void Newlines_in_arguments_and_env_values_are_fine()
    {
        // python3 -c "a\nb" and multi-line values are ordinary.
        InputRules.Process(["python3", "-c", "a = 1\nprint(a)"], [new("K", "line1\nline2")], "/tmp");
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(2147483648L)]
    [InlineData(InputRules.MaxPids + 1)]
    public void Pids_outside_the_kernels_range_are_refused(long pids) =>
        Should.Throw<CorralException>(() => InputRules.Pids(pids)).Message.ShouldStartWith($"invalid --pids {pids}");

    [Theory]
    [InlineData(1L)]
    [InlineData(InputRules.MaxPids)]
    public void Pids_within_the_kernels_range_are_taken(long pids) => InputRules.Pids(pids).ShouldBe(pids);

    [Theory]
    [InlineData(315576000000.0, false)]
    [InlineData(366 * 86400.0, false)]
    [InlineData(0.0, false)]
    [InlineData(-1.0, true)]
    public void Durations_beyond_a_year_or_not_positive_are_refused(double seconds, bool zeroAllowed) =>
        Should.Throw<CorralException>(() => InputRules.Duration("timeout", TimeSpan.FromSeconds(seconds), zeroAllowed)).Kind.ShouldBe(ErrorKind.InvalidArgument);

    [Fact]
    public void Zero_grace_is_allowed_where_asked() => InputRules.Duration("grace", TimeSpan.Zero, zeroAllowed: true).ShouldBe(TimeSpan.Zero);

    [Fact]
    public void The_hosts_root_is_never_a_rootfs_however_it_is_spelled()
    {
        var link = Path.Combine(Path.GetTempPath(), "corral-root-link-" + Guid.NewGuid().ToString("N")[..8]);
        File.CreateSymbolicLink(link, "/");
        try
        {
            foreach (var spelling in new[] { "/", "//", "/etc/..", "/./", link })
            {
                var ex = Should.Throw<CorralException>(() => InputRules.Rootfs(spelling), spelling);
                ex.Message.ShouldContain("is the host's root filesystem");
                ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
            }
        }
        finally
        {
            File.Delete(link);
        }
    }

    [Theory]
    [InlineData("/nonexistent")]
    [InlineData("/etc/hostname")]
    public void A_rootfs_that_is_no_directory_is_refused(string rootfs) =>
        Should.Throw<CorralException>(() => InputRules.Rootfs(rootfs)).Message.ShouldContain("does not exist or is not a directory");

    [Theory]
    [InlineData("")]
    [InlineData(" ")]
    [InlineData("/tmp/a\nb")]
    public void Empty_or_control_directory_options_are_refused(string value) =>
        Should.Throw<CorralException>(() => InputRules.DirectoryOption("--state-dir", value)).Message.ShouldStartWith("invalid --state-dir");
}
