using System.Net;
using Corral.Common;
using Corral.Daemon.Hosting;
using Shouldly;
using Xunit;

namespace Corral.Tests.Daemon;

public sealed class TcpEndpointOptionsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("corral-token-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void NoListenNoTcp() => TcpEndpointOptions.From(null, null).ShouldBeNull();

    [Fact]
    public void ListenWithoutATokenFileIsRefused()
    {
        var ex = Should.Throw<CorralException>(() => TcpEndpointOptions.From("127.0.0.1:7070", null));

        ex.Message.ShouldContain("--token-file");
    }

    [Theory]
    [InlineData("127.0.0.1:7070", "127.0.0.1", 7070)]
    [InlineData("localhost:80", "127.0.0.1", 80)]
    [InlineData("[::1]:9", "::1", 9)]
    [InlineData("0.0.0.0:65535", "0.0.0.0", 65535)]
    public void EndpointsParse(string text, string address, int port) =>
        TcpEndpointOptions.ParseEndpoint(text).ShouldBe(new IPEndPoint(IPAddress.Parse(address), port));

    [Theory]
    [InlineData("7070")]
    [InlineData("127.0.0.1")]
    [InlineData("127.0.0.1:0")]
    [InlineData("127.0.0.1:70000")]
    [InlineData("example.com:7070")]
    public void BadEndpointsAreRefused(string text) =>
        Should.Throw<CorralException>(() => TcpEndpointOptions.ParseEndpoint(text)).Message.ShouldStartWith("invalid --listen");

    [Fact]
    public void TheTokenIsTheFirstLineOfAPrivateFile()
    {
        var path = Write("s3cret-token\nignored\n", UnixFileMode.UserRead | UnixFileMode.UserWrite);

        var options = TcpEndpointOptions.From("127.0.0.1:7070", path)!;

        options.Token.ShouldBe("s3cret-token");
        options.Endpoint.Port.ShouldBe(7070);
    }

    [Fact]
    public void AMissingEmptyOrSharedTokenFileIsRefused()
    {
        Should.Throw<CorralException>(() => TcpEndpointOptions.ReadToken(Path.Combine(_dir, "none"))).Message.ShouldContain("no such file");
        Should.Throw<CorralException>(() => TcpEndpointOptions.ReadToken(Write(" \n", UnixFileMode.UserRead))).Message.ShouldContain("empty");
        Should.Throw<CorralException>(() => TcpEndpointOptions.ReadToken(Write("t\n", UnixFileMode.UserRead | UnixFileMode.GroupRead))).Message.ShouldContain("chmod 600");
        Should.Throw<CorralException>(() => TcpEndpointOptions.ReadToken(Write("t\n", UnixFileMode.UserRead | UnixFileMode.OtherRead))).Message.ShouldContain("chmod 600");
    }

    private string Write(string content, UnixFileMode mode)
    {
        var path = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        File.WriteAllText(path, content);
        File.SetUnixFileMode(path, mode);
        return path;
    }
}
