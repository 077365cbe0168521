using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Supervision;

/// <summary>Bad input: one line saying what is wrong, exit 125, and nothing created.</summary>
public sealed class BadInputTests
{
    public static TheoryData<string, string> BadNames => new()
    {
        { "../x", "invalid container name '../x'" },
        { "/", "invalid container name '/'" },
        { "", "invalid container name '': must not be empty" },
        { new string('a', 300), "invalid container name: 300 characters, at most 64 allowed" },
    };

    [Theory]
    [MemberData(nameof(BadNames))]
    public async Task InvalidNameIsRefusedAndNothingIsCreated(string name, string expected)
    {
        var before = Snapshot();
        var rootfs = await TestHost.RootfsAsync();
        var result = await CorralProcess.RunAsync(["run", "--runtime", "runc", "--rootfs", rootfs, "--name", name, "--", "true"]);

        result.ExitCode.ShouldBe(125);
        OneLine(result.Stderr).ShouldStartWith("corral: " + expected);
        Snapshot().ShouldBe(before);
    }

    public static TheoryData<string[], string> BadOptions => new()
    {
        { ["--memory", "-1"], "invalid --memory" },
        { ["--memory", "12XB"], "invalid --memory '12XB'" },
        { ["--memory", "0"], "invalid --memory '0'" },
        { ["--memory", "1Ki"], "invalid --memory 1Ki: at least 8Mi is needed" },
        { ["--cpus", "-2"], "invalid --cpus" },
        { ["--pids", "0"], "invalid --pids '0'" },
        { ["--timeout", "soon"], "invalid duration 'soon'" },
        { ["--runtime", "docker"], "invalid --runtime 'docker'" },
        { ["--workdir", "relative/dir"], "invalid --workdir 'relative/dir'" },
        { ["--read-only", "--workdir", "/no/such/dir"], "invalid --workdir '/no/such/dir'" },
        { ["--env", "NOEQUALS"], "invalid --env 'NOEQUALS'" },
        { ["--no-such-option"], "unrecognized option '--no-such-option'" },
        { ["--result-file", "/no/such/dir/r.json"], "invalid --result-file" },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public async Task InvalidOptionIsRefusedAndNothingIsCreated(string[] options, string expected)
    {
        var before = Snapshot();
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("bad");
        string[] runtime = options.Contains("--runtime") ? [] : ["--runtime", "runc"];
        var result = await CorralProcess.RunAsync(["run", .. runtime, "--rootfs", rootfs, "--name", id, .. options, "--", "true"]);

        result.ExitCode.ShouldBe(125, result.Stderr);
        OneLine(result.Stderr).ShouldStartWith("corral: " + expected);
        Snapshot().ShouldBe(before);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [InlineData("/no/such/rootfs", "does not exist or is not a directory")]
    [InlineData("/etc/hostname", "does not exist or is not a directory")]
    public async Task UnusableRootfsIsRefused(string rootfs, string expected)
    {
        var before = Snapshot();
        var id = TestHost.NewId("rootfs");
        var result = await CorralProcess.RunAsync(["run", "--runtime", "gvisor", "--rootfs", rootfs, "--name", id, "--", "true"]);

        result.ExitCode.ShouldBe(125);
        OneLine(result.Stderr).ShouldContain(expected);
        Snapshot().ShouldBe(before);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task KillOfAnUnknownContainerSaysSo()
    {
        var result = await CorralProcess.RunAsync(["kill", "t-no-such-container"]);

        result.ExitCode.ShouldNotBe(0);
        OneLine(result.Stderr).ShouldBe("corral: no such container: t-no-such-container");
    }

    private static string OneLine(string stderr)
    {
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Length.ShouldBe(1, $"expected a one-line error, got: {stderr}");
        return lines[0];
    }

    /// <summary>What a failed run could leave behind: bundles, container records, cgroups.</summary>
    private static string Snapshot()
    {
        var entries = new List<string>();
        foreach (var dir in new[] { "/run/corral/bundles", "/run/corral/containers", "/sys/fs/cgroup/memory/corral", "/sys/fs/cgroup/pids/corral", "/sys/fs/cgroup/corral" })
        {
            if (Directory.Exists(dir))
            {
                entries.AddRange(Directory.EnumerateDirectories(dir).Where(d => Path.GetFileName(d).StartsWith("t-bad", StringComparison.Ordinal) || Path.GetFileName(d).StartsWith("t-rootfs", StringComparison.Ordinal)));
                entries.AddRange(Directory.EnumerateFiles(dir, "t-bad*"));
            }
        }

        return string.Join('\n', entries.Order());
    }
}
