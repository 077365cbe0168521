using Corral.Common;
using Corral.Networking;
using Corral.Runtimes;
using Shouldly;
using Xunit;

namespace Corral.Tests.Networking;

/// <summary>The bridge's effects through its seam: what it runs, and what a failure leaves (nothing).</summary>
public sealed class BridgeNetworkTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "corral-net-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    private NetworkOptions Options => new() { Bridge = "cfake0", StateDir = _dir, Table = "corral_unit", NetnsDir = Path.Combine(_dir, "netns"), InterfacesDir = Path.Combine(_dir, "interfaces") };

    [Fact]
    public async Task Attach_sets_up_the_bridge_once_then_namespace_veth_address_and_rules()
    {
        var commands = new FakeCommands();
        var network = new BridgeNetwork(Options, commands);
        using var lease = await network.AttachAsync("/run/unit", "s1", NetworkInput.Validate(new NetworkRequest
        {
            Mode = NetworkMode.Bridge,
            Egress = new EgressPolicy { None = true },
        }), TestContext.Current.CancellationToken);

        lease.Attachment.Address.ShouldBe("10.213.0.2");
        lease.Attachment.Gateway.ShouldBe("10.213.0.1");
        lease.NamespacePath.ShouldBe("/run/netns/corral-" + lease.Key);
        commands.Sysctls.ShouldContain(("net/ipv4/ip_forward", "1"));
        commands.Sysctls.ShouldContain(("net/ipv4/conf/cfake0/proxy_arp_pvlan", "1"));
        commands.Stdin.ShouldContain(s => s.Contains("link add cfake0 type bridge", StringComparison.Ordinal));
        commands.Stdin.ShouldContain(s => s.Contains("add table inet corral_unit\n", StringComparison.Ordinal) && s.Contains("ip saddr 10.213.0.2 drop comment", StringComparison.Ordinal), "the table and the sandbox's rules in one transaction");
        commands.Stdin.ShouldContain(s => s.Contains($"netns add corral-{lease.Key}\n", StringComparison.Ordinal) && s.Contains("isolated on", StringComparison.Ordinal));
        commands.Stdin.ShouldContain(s => s.Contains("addr add 10.213.0.2/16 dev eth0", StringComparison.Ordinal));
        commands.Stdin.ShouldContain(s => s.Contains($"ip saddr 10.213.0.2 drop comment \"corral:{lease.Key}\"", StringComparison.Ordinal));
        File.Exists(Path.Combine(_dir, lease.Key + ".json")).ShouldBeTrue();
    }

    [Fact]
    public async Task Addresses_are_not_shared_while_their_owners_live_and_come_back_after()
    {
        var network = new BridgeNetwork(Options, new FakeCommands());
        var request = new NetworkRequest { Mode = NetworkMode.Bridge };
        var first = await network.AttachAsync("/run/unit", "a", request, TestContext.Current.CancellationToken);
        var second = await network.AttachAsync("/run/unit", "b", request, TestContext.Current.CancellationToken);
        second.Attachment.Address.ShouldNotBe(first.Attachment.Address);
        await network.DetachAsync(first);
        File.Exists(Path.Combine(_dir, first.Key + ".json")).ShouldBeFalse();
        File.Exists(Path.Combine(_dir, first.Key + ".lock")).ShouldBeFalse();
        await network.DetachAsync(second);
    }

    [Fact]
    public async Task A_failure_midway_removes_what_was_made_and_frees_the_address()
    {
        var commands = new FakeCommands { FailWhen = s => s.Contains("route add default", StringComparison.Ordinal) };
        var network = new BridgeNetwork(Options, commands);
        var ex = await Should.ThrowAsync<CorralException>(() => network.AttachAsync("/run/unit", "s1", new NetworkRequest { Mode = NetworkMode.Bridge }));

        ex.Kind.ShouldBe(ErrorKind.HostFault);
        ex.Message.ShouldStartWith("cannot set up the sandbox's network: netns corral-");
        ex.Message.ShouldNotContain("\n");
        Directory.EnumerateFiles(_dir, "*.json").ShouldBeEmpty();
        Directory.EnumerateFiles(_dir, "*.lock").Where(f => !f.EndsWith("ipam.lock", StringComparison.Ordinal)).ShouldBeEmpty();
    }

    [Fact]
    public async Task A_dead_owners_network_is_reclaimed_and_a_live_ones_is_not()
    {
        var commands = new FakeCommands();
        var network = new BridgeNetwork(Options, commands);
        var live = await network.AttachAsync("/run/unit", "live", new NetworkRequest { Mode = NetworkMode.Bridge }, TestContext.Current.CancellationToken);

        // A dead owner: its record with no lock held.
        var deadKey = BridgeNetwork.KeyOf("/run/unit", "dead");
        await File.WriteAllTextAsync(Path.Combine(_dir, deadKey + ".json"), """{"id":"dead","stateDir":"/run/unit","address":"10.213.0.77","hasRules":false}""", TestContext.Current.CancellationToken);

        var removed = await network.ReconcileAsync();
        removed.ShouldContain(deadKey);
        removed.ShouldNotContain(live.Key);
        File.Exists(Path.Combine(_dir, deadKey + ".json")).ShouldBeFalse();
        File.Exists(Path.Combine(_dir, live.Key + ".json")).ShouldBeTrue();
        await network.DetachAsync(live);
    }

    private sealed class FakeCommands : INetworkCommands
    {
        public List<string> Stdin { get; } = [];

        public List<(string, string)> Sysctls { get; } = [];

        public Func<string, bool> FailWhen { get; init; } = _ => false;

        public Task<RuntimeCommandResult> RunAsync(string binary, IReadOnlyList<string> args, string? stdin)
        {
            lock (Stdin)
            {
                Stdin.Add(stdin ?? string.Join(' ', args));
            }

            // `nft list table` of a table that does not exist fails, as nft does.
            if (args.Contains("list") || FailWhen(stdin ?? string.Join(' ', args)))
            {
                return Task.FromResult(new RuntimeCommandResult(1, string.Empty, "Error: No such file or directory"));
            }

            return Task.FromResult(new RuntimeCommandResult(0, string.Empty, string.Empty));
        }

        public void WriteSysctl(string name, string value) => Sysctls.Add((name, value));
    }
}
