using Corral.Common;
using Corral.Networking;
using Shouldly;
using Xunit;

namespace Corral.Tests.Networking;

public sealed class NetworkInputTests
{
    [Theory]
    [InlineData("8080:80", "127.0.0.1", 8080, 80, PortProtocol.Tcp)]
    [InlineData("0:80/udp", "127.0.0.1", 0, 80, PortProtocol.Udp)]
    [InlineData("0.0.0.0:443:8443/tcp", "0.0.0.0", 443, 8443, PortProtocol.Tcp)]
    [InlineData("192.0.2.7:1:65535", "192.0.2.7", 1, 65535, PortProtocol.Tcp)]
    public void Ports_parse_with_loopback_as_the_default_host_address(string text, string hostIp, int hostPort, int containerPort, PortProtocol protocol) =>
        NetworkInput.ParsePort(text).ShouldBe(new PortMapping(hostIp, hostPort, containerPort, protocol));

    [Theory]
    [InlineData("70000:80")]
    [InlineData("80:70000")]
    [InlineData("abc")]
    [InlineData("80")]
    [InlineData("80:0")]
    [InlineData("-1:80")]
    [InlineData("+80:80")]
    [InlineData("080080:80")]
    [InlineData("80:80/sctp")]
    [InlineData("80:80/")]
    [InlineData("::1:80:80")]
    [InlineData("localhost:80:80")]
    [InlineData("1.2.3:80:80")]
    [InlineData("1:2:3:4")]
    [InlineData("")]
    [InlineData("80:80\n")]
    public void Bad_ports_are_refused_with_one_line(string text)
    {
        var ex = Should.Throw<CorralException>(() => NetworkInput.ParsePort(text));
        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        ex.Message.ShouldStartWith("invalid --publish");
        ex.Message.ShouldNotContain("\n");
    }

    [Fact]
    public void Modes_are_none_or_bridge()
    {
        NetworkInput.ParseMode(null).ShouldBe(NetworkMode.None);
        NetworkInput.ParseMode("none").ShouldBe(NetworkMode.None);
        NetworkInput.ParseMode("bridge").ShouldBe(NetworkMode.Bridge);
        Should.Throw<CorralException>(() => NetworkInput.ParseMode("host")).Message.ShouldBe("invalid --network 'host': use none or bridge");
    }

    [Fact]
    public void Egress_items_fold_into_one_policy_and_cidrs_are_made_canonical()
    {
        var policy = NetworkInput.ParseEgress(["allow-cidr=10.1.2.3/8,192.0.2.1", "deny-cidr=198.51.100.0/24", "none"]);
        policy.None.ShouldBeTrue();
        var request = NetworkInput.Validate(new NetworkRequest { Mode = NetworkMode.Bridge, Egress = policy });
        request.Egress.AllowCidrs.ShouldBe(["10.0.0.0/8", "192.0.2.1/32"]);
        request.Egress.DenyCidrs.ShouldBe(["198.51.100.0/24"]);
    }

    [Theory]
    [InlineData("open")]
    [InlineData("allow-cidr=")]
    [InlineData("allow-cidr=10.0.0.0/8,")]
    [InlineData("deny=10.0.0.0/8")]
    public void Bad_egress_items_are_refused(string item) =>
        Should.Throw<CorralException>(() => NetworkInput.ParseEgress([item])).Kind.ShouldBe(ErrorKind.InvalidArgument);

    [Theory]
    [InlineData("10.0.0.0/33")]
    [InlineData("10.0.0/8")]
    [InlineData("::/0")]
    [InlineData("10.0.0.0/-1")]
    [InlineData("10.0.0.0/ 8")]
    [InlineData("garbage")]
    public void Bad_cidrs_are_refused(string cidr) =>
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Mode = NetworkMode.Bridge, Egress = new EgressPolicy { DenyCidrs = [cidr] } }))
            .Message.ShouldStartWith("invalid --egress deny-cidr=");

    [Fact]
    public void Options_of_a_bridge_are_refused_without_one()
    {
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Ports = [new PortMapping("127.0.0.1", 80, 80)] }))
            .Message.ShouldBe("--publish, --egress and --dns need --network bridge");
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Dns = ["192.0.2.53"] }));
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Egress = new EgressPolicy { None = true } }));
    }

    [Fact]
    public void A_host_port_published_twice_is_refused_but_port_zero_may_repeat()
    {
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest
        {
            Mode = NetworkMode.Bridge,
            Ports = [new PortMapping("0.0.0.0", 80, 80), new PortMapping("127.0.0.1", 80, 81)],
        })).Message.ShouldContain("published twice");

        NetworkInput.Validate(new NetworkRequest
        {
            Mode = NetworkMode.Bridge,
            Ports = [new PortMapping("127.0.0.1", 0, 80), new PortMapping("127.0.0.1", 0, 81), new PortMapping("127.0.0.1", 80, 80, PortProtocol.Udp), new PortMapping("127.0.0.1", 80, 80)],
        }).Ports.Count.ShouldBe(4);
    }

    [Fact]
    public void Api_fields_out_of_range_are_refused()
    {
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Mode = NetworkMode.Bridge, Ports = [new PortMapping("127.0.0.1", -1, 80)] }));
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Mode = NetworkMode.Bridge, Ports = [new PortMapping("127.0.0.1", 80, 80, (PortProtocol)9)] }));
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Mode = (NetworkMode)5 }));
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Mode = NetworkMode.Bridge, Ports = [.. Enumerable.Range(1, 65).Select(p => new PortMapping("127.0.0.1", p, 80))] }))
            .Message.ShouldContain("at most 64");
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Mode = NetworkMode.Bridge, Dns = ["1.1.1.1", "8.8.8.8", "9.9.9.9", "8.8.4.4"] }));
        Should.Throw<CorralException>(() => NetworkInput.Validate(new NetworkRequest { Mode = NetworkMode.Bridge, Dns = ["1.1.1"] }));
    }
}
