using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace Corral.Networking;

/// <summary>Where Corral's bridge lives: one per host, shared by `corral run` and every daemon.</summary>
public sealed record NetworkOptions
{
    public string Bridge { get; init; } = "corral0";

    /// <summary>The sandboxes' subnet; the bridge (their gateway) takes its first address.</summary>
    public string Subnet { get; init; } = "10.213.0.0/16";

    /// <summary>Host-wide records of bridged sandboxes (owner locks, leases), 0700.</summary>
    public string StateDir { get; init; } = "/run/corral-net";

    /// <summary>Where `ip netns` keeps named namespaces (looked at for orphans).</summary>
    public string NetnsDir { get; init; } = "/run/netns";

    /// <summary>The host's interfaces (looked at for orphaned veths and for counters).</summary>
    public string InterfacesDir { get; init; } = "/sys/class/net";

    /// <summary>The one nftables table (family inet) Corral owns; each sandbox's rules carry its key as comment.</summary>
    public string Table { get; init; } = "corral";

    public (uint Network, int Prefix) ParsedSubnet
    {
        get
        {
            var cidr = NetworkInput.Cidr(Subnet, "subnet");
            var slash = cidr.IndexOf('/', StringComparison.Ordinal);
            return (Ipv4.ToUInt(IPAddress.Parse(cidr[..slash])), int.Parse(cidr[(slash + 1)..], CultureInfo.InvariantCulture));
        }
    }

    public string Gateway => Ipv4.FromUInt(ParsedSubnet.Network + 1);
}

/// <summary>
/// The text of Corral's firewall and of a sandbox's DNS file, as pure functions of their inputs (what
/// the unit tests read). The security defaults are here, in one place: a sandbox reaches the outside
/// through NAT, but not the host (only replies to the host's own connections come back in), not
/// link-local addresses (169.254.0.0/16: cloud metadata), not other sandboxes, and nothing over IPv6;
/// from outside, only published ports reach a sandbox.
/// </summary>
public static partial class NetworkRules
{
    public const string CommentPrefix = "corral:";

    /// <summary>
    /// Corral's table, as one idempotent nftables transaction: the table and chains are added when
    /// missing, and the base chains (which hold only these fixed rules) are flushed and written again, so
    /// a table someone emptied or changed is whole after the next sandbox starts. The per-sandbox chains
    /// (sandbox_forward, sandbox_input, ports) are never flushed here.
    /// </summary>
    public static string BaseRuleset(NetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var t = $"inet {options.Table}";
        var bridge = Quote(options.Bridge);
        var subnet = NetworkInput.Cidr(options.Subnet, "subnet");
        return $$"""
            add table {{t}}
            add chain {{t}} sandbox_forward
            add chain {{t}} sandbox_input
            add chain {{t}} ports
            add chain {{t}} forward { type filter hook forward priority filter - 5; policy accept; }
            flush chain {{t}} forward
            add rule {{t}} forward ct state established,related accept
            add rule {{t}} forward jump sandbox_forward
            add rule {{t}} forward iifname {{bridge}} oifname {{bridge}} drop
            add rule {{t}} forward iifname {{bridge}} ip daddr 169.254.0.0/16 drop
            add rule {{t}} forward iifname {{bridge}} meta nfproto ipv6 drop
            add rule {{t}} forward iifname {{bridge}} ip saddr != {{subnet}} drop
            add rule {{t}} forward oifname {{bridge}} ct status dnat accept
            add rule {{t}} forward oifname {{bridge}} drop
            add chain {{t}} input { type filter hook input priority filter - 5; policy accept; }
            flush chain {{t}} input
            add rule {{t}} input iifname {{bridge}} ct state established,related accept
            add rule {{t}} input jump sandbox_input
            add rule {{t}} input iifname {{bridge}} drop
            add chain {{t}} prerouting { type nat hook prerouting priority dstnat; policy accept; }
            flush chain {{t}} prerouting
            add rule {{t}} prerouting jump ports
            add chain {{t}} output { type nat hook output priority -100; policy accept; }
            flush chain {{t}} output
            add rule {{t}} output jump ports
            add chain {{t}} postrouting { type nat hook postrouting priority srcnat; policy accept; }
            flush chain {{t}} postrouting
            add rule {{t}} postrouting ip saddr {{subnet}} oifname != {{bridge}} masquerade
            add rule {{t}} postrouting oifname {{bridge}} ip saddr 127.0.0.0/8 masquerade

            """;
    }

    /// <summary>
    /// One sandbox's rules (empty when it has only the defaults): deny first, then allow, then "none";
    /// then its published ports. Each rule carries the sandbox's key, which is how they are removed.
    /// </summary>
    public static string SandboxRules(NetworkOptions options, string key, string address, EgressPolicy egress, IReadOnlyList<PortMapping> ports)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(egress);
        ArgumentNullException.ThrowIfNull(ports);
        var table = $"inet {options.Table}";
        var comment = $"comment {Quote(CommentPrefix + key)}";
        var text = new StringBuilder();
        foreach (var chain in new[] { "sandbox_forward", "sandbox_input" })
        {
            foreach (var cidr in egress.DenyCidrs)
            {
                text.Append(CultureInfo.InvariantCulture, $"add rule {table} {chain} ip saddr {address} ip daddr {cidr} drop {comment}\n");
            }

            foreach (var cidr in egress.AllowCidrs)
            {
                text.Append(CultureInfo.InvariantCulture, $"add rule {table} {chain} ip saddr {address} ip daddr {cidr} accept {comment}\n");
            }

            if (egress.None && chain == "sandbox_forward")
            {
                text.Append(CultureInfo.InvariantCulture, $"add rule {table} {chain} ip saddr {address} drop {comment}\n");
            }
        }

        foreach (var port in ports)
        {
            var protocol = port.Protocol == PortProtocol.Udp ? "udp" : "tcp";
            var match = port.HostIp == "0.0.0.0" ? "fib daddr type local" : $"ip daddr {port.HostIp}";
            text.Append(CultureInfo.InvariantCulture, $"add rule {table} ports {match} {protocol} dport {port.HostPort} dnat ip to {address}:{port.ContainerPort} {comment}\n");
        }

        return text.ToString();
    }

    /// <summary>
    /// From `nft -a list table inet TABLE`: the delete commands for every rule whose comment names a key
    /// <paramref name="remove"/> selects (one sandbox's, or every orphan's).
    /// </summary>
    public static IReadOnlyList<string> DeletesFor(NetworkOptions options, string listing, Func<string, bool> remove)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(listing);
        ArgumentNullException.ThrowIfNull(remove);
        var deletes = new List<string>();
        string? chain = null;
        foreach (var line in listing.Split('\n'))
        {
            if (ChainLine().Match(line) is { Success: true } c)
            {
                chain = c.Groups[1].Value;
                continue;
            }

            if (chain is not null && RuleLine().Match(line) is { Success: true } r && remove(r.Groups[1].Value))
            {
                deletes.Add($"delete rule inet {options.Table} {chain} handle {r.Groups[2].Value}\n");
            }
        }

        return deletes;
    }

    /// <summary>Every sandbox key named by a rule comment in the listing.</summary>
    public static IReadOnlySet<string> KeysIn(string listing) =>
        RuleLine().Matches(listing ?? string.Empty).Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);

    /// <summary>
    /// The sandbox's /etc/resolv.conf: the asked servers, else the host's minus loopback ones (unreachable
    /// from a sandbox), else public resolvers; the host's search and options lines are kept.
    /// </summary>
    public static string ResolvConf(string? hostResolvConf, IReadOnlyList<string> dns)
    {
        ArgumentNullException.ThrowIfNull(dns);
        var servers = new List<string>(dns);
        var rest = new List<string>();
        foreach (var raw in (hostResolvConf ?? string.Empty).Split('\n'))
        {
            var line = raw.Trim();
            var fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 2 && fields[0] == "nameserver")
            {
                if (dns.Count == 0 && IPAddress.TryParse(fields[1], out var a) && !IPAddress.IsLoopback(a) && !fields[1].StartsWith("fe80", StringComparison.OrdinalIgnoreCase))
                {
                    servers.Add(a.ToString());
                }
            }
            else if (fields.Length >= 2 && fields[0] is "search" or "options" && line.All(ch => ch is >= ' ' and < '\x7f'))
            {
                rest.Add(line);
            }
        }

        if (servers.Count == 0)
        {
            servers.AddRange(["8.8.8.8", "1.1.1.1"]);
        }

        var text = new StringBuilder();
        foreach (var server in servers.Take(NetworkInput.MaxDns))
        {
            text.Append("nameserver ").Append(server).Append('\n');
        }

        foreach (var line in rest)
        {
            text.Append(line).Append('\n');
        }

        return text.ToString();
    }

    /// <summary>The sandbox's /etc/hosts.</summary>
    public static string Hosts(string address, string hostname) =>
        $"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{hostname}\n";

    private static string Quote(string text) => "\"" + text + "\"";

    [GeneratedRegex(@"^\s*chain ([A-Za-z0-9_]+) \{")]
    private static partial Regex ChainLine();

    [GeneratedRegex(@"comment ""corral:([0-9a-f]{1,32})"".*# handle ([0-9]+)", RegexOptions.Multiline)]
    private static partial Regex RuleLine();
}
