using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Corral.Common;

namespace Corral.Networking;

/// <summary>none: loopback only (the default); bridge: its own namespace on Corral's bridge, NAT out.</summary>
public enum NetworkMode
{
    None,
    Bridge,
}

public enum PortProtocol
{
    Tcp,
    Udp,
}

/// <summary>A published port: HOST_IP:HOST_PORT on the host reaches CONTAINER_PORT in the sandbox. HostPort 0 asks for a free one.</summary>
public sealed record PortMapping(string HostIp, int HostPort, int ContainerPort, PortProtocol Protocol = PortProtocol.Tcp)
{
    public override string ToString() =>
        $"{HostIp}:{HostPort.ToString(CultureInfo.InvariantCulture)}->{ContainerPort.ToString(CultureInfo.InvariantCulture)}/{Protocol.ToString().ToLowerInvariant()}";
}

/// <summary>
/// Where a bridged sandbox may send new connections. By default: anywhere outside, but not the host,
/// not link-local addresses (cloud metadata) and not other sandboxes. Deny wins over allow; an allow
/// opens one of the default blocks (the host, a neighbour) for this sandbox only. None: no new
/// connection out at all (published ports still answer).
/// </summary>
public sealed record EgressPolicy
{
    public bool None { get; init; }

    public IReadOnlyList<string> AllowCidrs { get; init; } = [];

    public IReadOnlyList<string> DenyCidrs { get; init; } = [];

    public bool IsDefault => !None && AllowCidrs.Count == 0 && DenyCidrs.Count == 0;
}

/// <summary>A sandbox's network, as asked: validated once by <see cref="NetworkInput.Validate"/>.</summary>
public sealed record NetworkRequest
{
    public static NetworkRequest Disabled { get; } = new();

    public NetworkMode Mode { get; init; } = NetworkMode.None;

    public IReadOnlyList<PortMapping> Ports { get; init; } = [];

    public EgressPolicy Egress { get; init; } = new();

    /// <summary>Nameservers for the sandbox's /etc/resolv.conf; empty: the host's (loopback ones left out).</summary>
    public IReadOnlyList<string> Dns { get; init; } = [];
}

/// <summary>What a bridged sandbox got: its address, gateway and the host ports that reach it.</summary>
public sealed record NetworkAttachment(string Address, string Gateway, int PrefixLength, string HostInterface, string Namespace, IReadOnlyList<PortMapping> Ports);

/// <summary>The parsers and the one check of network input: every field comes from an attacker.</summary>
public static class NetworkInput
{
    public const int MaxPorts = 64;

    public const int MaxCidrs = 64;

    public const int MaxDns = 3;

    public static NetworkMode ParseMode(string? text) => text switch
    {
        null or "" or "none" => NetworkMode.None,
        "bridge" => NetworkMode.Bridge,
        _ => throw CorralException.Invalid($"invalid --network {InputRules.Quote(text)}: use none or bridge"),
    };

    /// <summary>[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]; HOST_IP defaults to 127.0.0.1.</summary>
    public static PortMapping ParsePort(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bad = $"invalid --publish {InputRules.Quote(text)}: use [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], ports 1-65535 (host port 0 picks a free one)";
        var protocol = PortProtocol.Tcp;
        var body = text;
        var slash = text.LastIndexOf('/');
        if (slash >= 0)
        {
            protocol = text[(slash + 1)..] switch
            {
                "tcp" => PortProtocol.Tcp,
                "udp" => PortProtocol.Udp,
                _ => throw CorralException.Invalid(bad),
            };
            body = text[..slash];
        }

        var parts = body.Split(':');
        var (hostIp, hostPort, containerPort) = parts.Length switch
        {
            2 => ("127.0.0.1", parts[0], parts[1]),
            3 => (parts[0], parts[1], parts[2]),
            _ => throw CorralException.Invalid(bad),
        };
        if (!IPAddress.TryParse(hostIp, out var address) || address.AddressFamily != AddressFamily.InterNetwork || hostIp.Count(c => c == '.') != 3)
        {
            throw CorralException.Invalid($"invalid --publish {InputRules.Quote(text)}: the host address must be an IPv4 address");
        }

        return new PortMapping(address.ToString(), Port(hostPort, allowZero: true, bad), Port(containerPort, allowZero: false, bad), protocol);
    }

    /// <summary>none, allow-cidr=CIDR[,CIDR...] or deny-cidr=CIDR[,CIDR...]; repeatable, folded into one policy.</summary>
    public static EgressPolicy ParseEgress(IEnumerable<string> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        var policy = new EgressPolicy();
        foreach (var item in items)
        {
            if (item == "none")
            {
                policy = policy with { None = true };
                continue;
            }

            if (item == "default")
            {
                continue;
            }

            var eq = item.IndexOf('=', StringComparison.Ordinal);
            var key = eq < 0 ? item : item[..eq];
            var values = eq < 0 ? [] : item[(eq + 1)..].Split(',');
            if (values.Length == 0 || values.Any(v => v.Length == 0))
            {
                throw CorralException.Invalid($"invalid --egress {InputRules.Quote(item)}: use none, allow-cidr=CIDR[,CIDR] or deny-cidr=CIDR[,CIDR]");
            }

            policy = key switch
            {
                "allow-cidr" => policy with { AllowCidrs = [.. policy.AllowCidrs, .. values] },
                "deny-cidr" => policy with { DenyCidrs = [.. policy.DenyCidrs, .. values] },
                _ => throw CorralException.Invalid($"invalid --egress {InputRules.Quote(item)}: use none, allow-cidr=CIDR[,CIDR] or deny-cidr=CIDR[,CIDR]"),
            };
        }

        return policy;
    }

    /// <summary>
    /// The one check, for the CLI, the API and the shim alike: returns the request with every address
    /// in canonical form (what the firewall rules are written from), or throws InvalidArgument.
    /// </summary>
    public static NetworkRequest Validate(NetworkRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!Enum.IsDefined(request.Mode))
        {
            throw CorralException.Invalid($"invalid network mode {(int)request.Mode}: use none or bridge");
        }

        if (request.Mode == NetworkMode.None)
        {
            if (request.Ports.Count > 0 || !request.Egress.IsDefault || request.Dns.Count > 0)
            {
                throw CorralException.Invalid("--publish, --egress and --dns need --network bridge");
            }

            return NetworkRequest.Disabled;
        }

        if (request.Ports.Count > MaxPorts)
        {
            throw CorralException.Invalid($"too many published ports ({request.Ports.Count}): at most {MaxPorts}");
        }

        var ports = new List<PortMapping>();
        foreach (var port in request.Ports)
        {
            var canonical = ParsePort($"{port.HostIp}:{port.HostPort.ToString(CultureInfo.InvariantCulture)}:{port.ContainerPort.ToString(CultureInfo.InvariantCulture)}/{(port.Protocol == PortProtocol.Udp ? "udp" : port.Protocol == PortProtocol.Tcp ? "tcp" : "?")}");
            if (canonical.HostPort != 0 && ports.Any(p => p.HostPort == canonical.HostPort && p.Protocol == canonical.Protocol && Overlaps(p.HostIp, canonical.HostIp)))
            {
                throw CorralException.Invalid($"invalid --publish {canonical}: host port {canonical.HostPort} is published twice");
            }

            ports.Add(canonical);
        }

        if (request.Egress.AllowCidrs.Count + request.Egress.DenyCidrs.Count > MaxCidrs)
        {
            throw CorralException.Invalid($"too many --egress CIDRs: at most {MaxCidrs}");
        }

        var egress = request.Egress with
        {
            AllowCidrs = [.. request.Egress.AllowCidrs.Select(c => Cidr(c, "allow-cidr"))],
            DenyCidrs = [.. request.Egress.DenyCidrs.Select(c => Cidr(c, "deny-cidr"))],
        };
        if (request.Dns.Count > MaxDns)
        {
            throw CorralException.Invalid($"too many --dns servers ({request.Dns.Count}): at most {MaxDns}");
        }

        var dns = request.Dns.Select(d => IPAddress.TryParse(d, out var a) && (a.AddressFamily == AddressFamily.InterNetwork ? d.Count(c => c == '.') == 3 : a.AddressFamily == AddressFamily.InterNetworkV6)
            ? a.ToString()
            : throw CorralException.Invalid($"invalid --dns {InputRules.Quote(d)}: use an IP address")).ToList();
        return request with { Ports = ports, Egress = egress, Dns = dns };
    }

    /// <summary>An IPv4 CIDR (a bare address is a /32), canonical: host bits cleared.</summary>
    public static string Cidr(string text, string what = "cidr")
    {
        ArgumentNullException.ThrowIfNull(text);
        var bad = $"invalid --egress {what}={InputRules.Quote(text)}: use an IPv4 CIDR such as 192.0.2.0/24";
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var addressText = slash < 0 ? text : text[..slash];
        var prefix = 32;
        if (slash >= 0 && (!int.TryParse(text[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out prefix) || prefix > 32))
        {
            throw CorralException.Invalid(bad);
        }

        if (!IPAddress.TryParse(addressText, out var address) || address.AddressFamily != AddressFamily.InterNetwork || addressText.Count(c => c == '.') != 3)
        {
            throw CorralException.Invalid(bad);
        }

        var value = Ipv4.ToUInt(address) & Ipv4.Mask(prefix);
        return $"{Ipv4.FromUInt(value)}/{prefix.ToString(CultureInfo.InvariantCulture)}";
    }

    private static int Port(string text, bool allowZero, string bad) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port <= 65535 && (port > 0 || allowZero) && text.Length <= 5
            ? port
            : throw CorralException.Invalid(bad);

    private static bool Overlaps(string a, string b) => a == b || a == "0.0.0.0" || b == "0.0.0.0";
}

/// <summary>IPv4 arithmetic on host-order integers.</summary>
public static class Ipv4
{
    public static uint ToUInt(IPAddress address)
    {
        var bytes = address.GetAddressBytes();
        return ((uint)bytes[0] << 24) | ((uint)bytes[1] << 16) | ((uint)bytes[2] << 8) | bytes[3];
    }

    public static string FromUInt(uint value) =>
        string.Create(CultureInfo.InvariantCulture, $"{value >> 24}.{(value >> 16) & 0xff}.{(value >> 8) & 0xff}.{value & 0xff}");

    public static uint Mask(int prefix) => prefix == 0 ? 0u : uint.MaxValue << (32 - prefix);
}
