using System.Text;
using Corral.Common;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Supervision;

public sealed class ContainerIdTests
{
    [Theory]
    [InlineData("web-1")]
    [InlineData("a")]
    [InlineData("job_2.retry")]
    public void AcceptsSafeNames(string id) => ContainerId.IsValid(id, out _).ShouldBeTrue();

    [Theory]
    [InlineData("../x")]
    [InlineData("/")]
    [InlineData("")]
    [InlineData("-leading-dash")]
    [InlineData("a/b")]
    [InlineData("a..b")]
    [InlineData("with space")]
    public void RefusesUnsafeNames(string id) => ContainerId.IsValid(id, out _).ShouldBeFalse();

    [Fact]
    public void RefusesLongNames() => ContainerId.IsValid(new string('a', 65), out var error).ShouldBeFalse(error);

    [Fact]
    public void GeneratedIdsAreValidAndDistinct()
    {
        var ids = Enumerable.Range(0, 100).Select(_ => ContainerId.Generate()).ToList();
        ids.Where(id => !ContainerId.IsValid(id, out var _)).ShouldBeEmpty();
        ids.Distinct().Count().ShouldBe(100);
    }
}

public sealed class DurationAndSignalTests
{
    [Theory]
    [InlineData("500ms", 500)]
    [InlineData("10s", 10_000)]
    [InlineData("2m", 120_000)]
    [InlineData("1.5", 1_500)]
    public void ParsesDurations(string text, double ms) => Duration.Parse(text).TotalMilliseconds.ShouldBe(ms);

    [Theory]
    [InlineData("0s")]
    [InlineData("-1s")]
    [InlineData("soon")]
    public void RefusesBadDurations(string text) => Duration.TryParse(text, out _, out _).ShouldBeFalse();

    [Theory]
    [InlineData(137, "SIGKILL")]
    [InlineData(143, "SIGTERM")]
    [InlineData(0, null)]
    [InlineData(1, null)]
    [InlineData(128, null)]
    public void SignalFromExitCode(int code, string? signal) => Signals.FromExitCode(code).ShouldBe(signal);

    [Theory]
    [InlineData("TERM", 15)]
    [InlineData("sigkill", 9)]
    [InlineData("2", 2)]
    public void ParsesSignals(string text, int expected)
    {
        Signals.TryParse(text, out var signal).ShouldBeTrue();
        signal.ShouldBe(expected);
    }

    [Fact]
    public void RefusesUnknownSignals() => Signals.TryParse("SIGNOPE", out _).ShouldBeFalse();
}

public sealed class RootfsResolverTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("corral-rootfs-").FullName;

    public RootfsResolverTests()
    {
        Directory.CreateDirectory(Path.Combine(_root, "usr/bin"));
        File.WriteAllText(Path.Combine(_root, "usr/bin/python3.11"), "#!");
        File.SetUnixFileMode(Path.Combine(_root, "usr/bin/python3.11"), UnixFileMode.UserRead | UnixFileMode.UserExecute);
        File.WriteAllText(Path.Combine(_root, "usr/bin/notes.txt"), "x");
        File.CreateSymbolicLink(Path.Combine(_root, "usr/bin/python3"), "python3.11");
        File.CreateSymbolicLink(Path.Combine(_root, "bin"), "usr/bin");
        File.CreateSymbolicLink(Path.Combine(_root, "usr/bin/escape"), "/etc/shadow");
    }

    [Fact]
    public void FollowsLinksInsideTheRootfs()
    {
        RootfsResolverProxy.FindExecutable(_root, "python3", "/bin").ShouldBe("/bin/python3");
        RootfsResolverProxy.FindExecutable(_root, "/bin/python3", "").ShouldBe("/bin/python3");
    }

    [Fact]
    public void AbsoluteLinksStayInsideTheRootfs() =>
        RootfsResolverProxy.Resolve(_root, "/usr/bin/escape").ShouldBeNull("/etc/shadow of the host must not be found");

    [Fact]
    public void NonExecutablesAndMissingCommandsAreNotFound()
    {
        RootfsResolverProxy.FindExecutable(_root, "notes.txt", "/usr/bin").ShouldBeNull();
        RootfsResolverProxy.FindExecutable(_root, "nope", "/usr/bin:/bin").ShouldBeNull();
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);
}

internal static class RootfsResolverProxy
{
    public static string? FindExecutable(string rootfs, string command, string path) => RootfsResolver.FindExecutable(rootfs, command, path);

    public static string? Resolve(string rootfs, string path) => RootfsResolver.Resolve(rootfs, path);
}

public sealed class OutputPumpTests
{
    [Fact]
    public async Task CopiesEveryByteAndKeepsTheTail()
    {
        var data = Enumerable.Range(0, 10_000).Select(i => (byte)(i % 251)).ToArray();
        var sink = new MemoryStream();
        var pump = new OutputPump(new MemoryStream(data), sink, tailBytes: 100);
        await pump.Completion;

        sink.ToArray().ShouldBe(data);
        Encoding.UTF8.GetBytes(pump.Tail()).Length.ShouldBeGreaterThan(0);
    }

    [Fact]
    public async Task TailIsTheLastBytesInOrder()
    {
        var text = string.Concat(Enumerable.Range(0, 1000).Select(i => $"line {i}\n"));
        var pump = new OutputPump(new MemoryStream(Encoding.UTF8.GetBytes(text)), null, tailBytes: 16);
        await pump.Completion;

        pump.Tail().ShouldBe(text[^16..]);
    }
}
