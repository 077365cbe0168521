using Corral.Networking;
using Shouldly;
using Xunit;

namespace Corral.Tests.Networking;

public sealed class NetworkRulesTests
{
    private static readonly NetworkOptions Options = new();

    [Fact]
    public void The_base_ruleset_blocks_neighbours_metadata_ipv6_and_the_host_and_nats_out()
    {
        var rules = NetworkRules.BaseRuleset(Options).Split('\n');
        rules.ShouldContain("add table inet corral");
        rules.ShouldContain("add rule inet corral forward iifname \"corral0\" oifname \"corral0\" drop");
        rules.ShouldContain("add rule inet corral forward iifname \"corral0\" ip daddr 169.254.0.0/16 drop");
        rules.ShouldContain("add rule inet corral forward iifname \"corral0\" meta nfproto ipv6 drop");
        rules.ShouldContain("add rule inet corral forward oifname \"corral0\" ct status dnat accept");
        rules.ShouldContain("add rule inet corral postrouting ip saddr 10.213.0.0/16 oifname != \"corral0\" masquerade");

        // The host: only replies to its own connections come in from the bridge.
        Array.IndexOf(rules, "add rule inet corral input iifname \"corral0\" ct state established,related accept")
            .ShouldBeLessThan(Array.IndexOf(rules, "add rule inet corral input iifname \"corral0\" drop"));

        // The sandbox's own allows come before the default drops.
        Array.IndexOf(rules, "add rule inet corral forward jump sandbox_forward")
            .ShouldBeLessThan(Array.IndexOf(rules, "add rule inet corral forward oifname \"corral0\" drop"));
    }

    [Fact]
    public void The_base_ruleset_rewrites_its_own_chains_but_never_flushes_the_sandboxes_rules()
    {
        var rules = NetworkRules.BaseRuleset(Options).Split('\n');
        foreach (var chain in new[] { "forward", "input", "prerouting", "output", "postrouting" })
        {
            Array.IndexOf(rules, $"flush chain inet corral {chain}").ShouldBeGreaterThan(-1, chain);
            Array.IndexOf(rules, $"flush chain inet corral {chain}")
                .ShouldBeLessThan(Array.FindIndex(rules, l => l.StartsWith($"add rule inet corral {chain} ", StringComparison.Ordinal)));
        }

        rules.ShouldNotContain(l => l.StartsWith("flush chain inet corral sandbox_", StringComparison.Ordinal) || l == "flush chain inet corral ports" || l.StartsWith("flush table", StringComparison.Ordinal));
    }

    [Fact]
    public void A_sandbox_with_defaults_and_no_ports_has_no_rules_of_its_own() =>
        NetworkRules.SandboxRules(Options, "abc123", "10.213.0.5", new EgressPolicy(), []).ShouldBeEmpty();

    [Fact]
    public void Deny_comes_before_allow_and_none_last_each_tagged_with_the_key()
    {
        var text = NetworkRules.SandboxRules(Options, "abc123", "10.213.0.5", new EgressPolicy { None = true, AllowCidrs = ["10.213.0.9/32"], DenyCidrs = ["198.51.100.0/24"] }, []);
        var lines = text.Trim().Split('\n');
        lines.ShouldAllBe(l => l.EndsWith("comment \"corral:abc123\"", StringComparison.Ordinal));
        var forward = lines.Where(l => l.Contains(" sandbox_forward ", StringComparison.Ordinal)).ToList();
        forward.ShouldBe(
        [
            "add rule inet corral sandbox_forward ip saddr 10.213.0.5 ip daddr 198.51.100.0/24 drop comment \"corral:abc123\"",
            "add rule inet corral sandbox_forward ip saddr 10.213.0.5 ip daddr 10.213.0.9/32 accept comment \"corral:abc123\"",
            "add rule inet corral sandbox_forward ip saddr 10.213.0.5 drop comment \"corral:abc123\"",
        ]);
        lines.Count(l => l.Contains(" sandbox_input ", StringComparison.Ordinal)).ShouldBe(2, "allow and deny apply to the host as well; the host's default is already closed");
    }

    [Fact]
    public void Published_ports_are_dnat_rules_on_their_host_address()
    {
        var text = NetworkRules.SandboxRules(Options, "k1", "10.213.0.5", new EgressPolicy(), [new PortMapping("127.0.0.1", 8080, 80), new PortMapping("0.0.0.0", 5353, 53, PortProtocol.Udp)]);
        text.ShouldBe(
            "add rule inet corral ports ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.213.0.5:80 comment \"corral:k1\"\n"
            + "add rule inet corral ports fib daddr type local udp dport 5353 dnat ip to 10.213.0.5:53 comment \"corral:k1\"\n");
    }

    private const string Listing = """
        table inet corral { # handle 7
        	chain forward { # handle 1
        		type filter hook forward priority filter - 5; policy accept;
        		ct state established,related accept # handle 9
        	}

        	chain sandbox_forward { # handle 2
        		ip saddr 10.213.0.5 ip daddr 10.213.0.9 accept comment "corral:aaaaaaaaaaaa" # handle 31
        		ip saddr 10.213.0.6 drop comment "corral:bbbbbbbbbbbb" # handle 32
        	}

        	chain ports { # handle 6
        		ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.213.0.5:80 comment "corral:aaaaaaaaaaaa" # handle 40
        	}
        }
        """;

    [Fact]
    public void Deletes_name_the_chain_and_handle_of_each_rule_of_the_key()
    {
        NetworkRules.DeletesFor(Options, Listing, k => k == "aaaaaaaaaaaa").ShouldBe(
        [
            "delete rule inet corral sandbox_forward handle 31\n",
            "delete rule inet corral ports handle 40\n",
        ]);
        NetworkRules.KeysIn(Listing).Order().ShouldBe(["aaaaaaaaaaaa", "bbbbbbbbbbbb"]);
        NetworkRules.DeletesFor(Options, Listing, _ => false).ShouldBeEmpty();
    }

    [Fact]
    public void Resolv_conf_drops_loopback_servers_keeps_search_and_prefers_the_asked_ones()
    {
        const string host = "nameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch corp.example\noptions edns0 trust-ad\n# comment\n";
        NetworkRules.ResolvConf(host, []).ShouldBe("nameserver 10.255.255.53\nsearch corp.example\noptions edns0 trust-ad\n");
        NetworkRules.ResolvConf(host, ["192.0.2.53"]).ShouldBe("nameserver 192.0.2.53\nsearch corp.example\noptions edns0 trust-ad\n");
        NetworkRules.ResolvConf("nameserver 127.0.0.53\n", []).ShouldBe("nameserver 8.8.8.8\nnameserver 1.1.1.1\n", "only a loopback resolver: public ones");
        NetworkRules.ResolvConf(null, []).ShouldStartWith("nameserver 8.8.8.8\n");
    }

    [Fact]
    public void Key_names_fit_the_kernels_limits_and_differ_by_state_dir()
    {
        var key = BridgeNetwork.KeyOf("/run/corral", "sandbox-1");
        key.Length.ShouldBe(12);
        BridgeNetwork.VethOf(key).Length.ShouldBeLessThanOrEqualTo(15, "IFNAMSIZ");
        BridgeNetwork.KeyOf("/run/other", "sandbox-1").ShouldNotBe(key);
        BridgeNetwork.KeyOf("/run/corral/", "sandbox-1").ShouldBe(key);
    }
}
