using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Corral.Common;
using Corral.Interop;
using Corral.Runtimes;
using Corral.Supervision;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Win32.SafeHandles;

namespace Corral.Networking;

/// <summary>The one seam of the network's effects on the host: `ip` and `nft` runs, and sysctls.</summary>
public interface INetworkCommands
{
    Task<RuntimeCommandResult> RunAsync(string binary, IReadOnlyList<string> args, string? stdin);

    /// <summary>Sets /proc/sys/<paramref name="name"/> when it exists and differs.</summary>
    void WriteSysctl(string name, string value);
}

/// <summary>What a bridged sandbox holds in the host-wide directory while it lives (KEY.json, beside its owner lock KEY.lock).</summary>
public sealed record NetworkRecord(string Id, string StateDir, string Address, bool HasRules);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(NetworkRecord))]
internal sealed partial class NetworkJsonContext : JsonSerializerContext;

/// <summary>
/// A bridged sandbox's network while its supervisor lives: the owner lock of its record (free the
/// moment the supervisor dies, which is how orphans are told apart) and the sockets that hold its
/// published host ports (so no other sandbox or program can take them meanwhile).
/// </summary>
public sealed class NetworkLease : IDisposable
{
    private readonly OwnerLock _owner;
    private readonly List<SafeFileHandle> _reservations;

    internal NetworkLease(string key, NetworkRecord record, NetworkAttachment attachment, OwnerLock owner, List<SafeFileHandle> reservations)
    {
        Key = key;
        Record = record;
        Attachment = attachment;
        _owner = owner;
        _reservations = reservations;
    }

    public string Key { get; }

    public NetworkRecord Record { get; }

    public NetworkAttachment Attachment { get; }

    /// <summary>The namespace the runtime joins, where `ip netns add` always puts it (<see cref="NetworkOptions.NetnsDir"/> is only where Corral looks).</summary>
    public string NamespacePath => "/run/netns/" + Attachment.Namespace;

    internal void ReleaseOwner() => _owner.Release();

    public void Dispose()
    {
        foreach (var socket in _reservations)
        {
            socket.Dispose();
        }

        _owner.Dispose();
    }
}

/// <summary>
/// Corral's bridge network: one bridge per host (the sandboxes' gateway, NAT out), one network
/// namespace and veth per sandbox, its port isolated on the bridge (neighbours reach each other only
/// through the host's firewall), one nftables table with each sandbox's rules tagged by its key.
/// Created first and removed last around the container; a dead owner's leftovers are found by its
/// free owner lock and removed by <see cref="ReclaimAsync"/> and <see cref="ReconcileAsync"/>.
/// </summary>
public sealed class BridgeNetwork(NetworkOptions options, INetworkCommands? commands = null, ILogger? logger = null)
{
    private readonly INetworkCommands _commands = commands ?? new ProcessNetworkCommands();
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    /// <summary>The host-wide name of a sandbox's network: its state dir and id, hashed (ids repeat across state dirs).</summary>
    public static string KeyOf(string stateDir, string id)
    {
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes(Path.TrimEndingDirectorySeparator(Path.GetFullPath(stateDir)) + "\0" + id));
        return Convert.ToHexStringLower(bytes)[..12];
    }

    public static string NamespaceOf(string key) => "corral-" + key;

    /// <summary>The host end of the sandbox's veth (at most 15 characters).</summary>
    public static string VethOf(string key) => "cv" + key;

    /// <summary>
    /// Gives the sandbox its namespace, address, rules and ports; throws AlreadyExists when a host port
    /// is taken (before anything is created) and HostFault when the host cannot set it up (nothing left).
    /// </summary>
    public async Task<NetworkLease> AttachAsync(string stateDir, string id, NetworkRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var key = KeyOf(stateDir, id);
        var reservations = ReservePorts(request.Ports, out var ports);
        OwnerLock? owner = null;
        NetworkRecord? record = null;
        var sandboxRules = string.Empty;
        try
        {
            Tools.Require();
            PrivateFiles.CreateDirectory(options.StateDir);
            // A reconcile holds a key's lock for a moment while it looks: waited out (0.5 s at most).
            owner = OwnerLock.TryAcquire(RecordLock(key), busyRetries: 50)
                ?? throw CorralException.Conflict($"the network of sandbox '{id}' is held by another live process");
            if (AnythingLeft(key))
            {
                // A supervisor of this name died with its network up: gone before this one starts.
                await TeardownAsync(key, ReadRecord(key)).ConfigureAwait(false);
            }

            using (LockExclusive(Path.Combine(options.StateDir, "ipam.lock")))
            {
                await EnsureBridgeAsync().ConfigureAwait(false);
                var address = Allocate();
                sandboxRules = NetworkRules.SandboxRules(options, key, address, request.Egress, ports);
                record = new NetworkRecord(id, Path.GetFullPath(stateDir), address, sandboxRules.Length > 0);
                PrivateFiles.WriteAtomically(RecordFile(key), JsonSerializer.Serialize(record, NetworkJsonContext.Default.NetworkRecord));
            }

            cancellationToken.ThrowIfCancellationRequested();
            var (_, prefix) = options.ParsedSubnet;
            var ns = NamespaceOf(key);
            var veth = VethOf(key);
            var hostSide = $"""
                netns add {ns}
                link add {veth} type veth peer name eth0 netns {ns}
                link set {veth} master {options.Bridge}
                link set {veth} type bridge_slave isolated on learning on
                link set {veth} up

                """;
            var sandboxSide = $"""
                link set lo up
                addr add {record.Address}/{prefix} dev eth0
                link set eth0 up
                route add default via {options.Gateway}

                """;

            // Corral's table is written whole (see BaseRuleset) when it is missing, with this sandbox's rules
            // in the same transaction. Rewriting the base chains costs ~15 ms each time (the kernel commits
            // hooks), so a table that exists is taken as it is; `corral gc` and a daemon's start rewrite it.

            // The three steps in one process (a shell running ip, ip and nft): each process the supervisor
            // starts costs more than the step it runs. The first failure stops the rest; its message is the error.
            var result = await _commands.RunAsync("/bin/sh", ["-c", SetupScript, "corral-net", Tools.Ip!, Tools.Nft!, hostSide, ns, sandboxSide, NetworkRules.BaseRuleset(options), sandboxRules, options.Table], null).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                throw new IOException($"netns {ns}: {result.Message.ReplaceLineEndings(" ")}");
            }

            NetworkLog.Attached(_logger, id, record.Address, ns, ports.Count);
            return new NetworkLease(key, record, new NetworkAttachment(record.Address, options.Gateway, prefix, veth, ns, ports), owner, reservations);
        }
        catch (Exception ex)
        {
            foreach (var socket in reservations)
            {
                socket.Dispose();
            }

            var left = string.Empty;
            if (owner is not null)
            {
                try
                {
                    if (record is not null)
                    {
                        await TeardownAsync(key, record).ConfigureAwait(false);
                    }

                    owner.Release();
                }
                catch (IOException teardown)
                {
                    // Its record stays, with a free lock: `corral gc` (or a daemon's start) finishes the job.
                    owner.Dispose();
                    left = $" (and removing what was made failed, left for `corral gc`: {teardown.Message})";
                }
            }

            if ((ex is CorralException or OperationCanceledException) && left.Length == 0)
            {
                throw;
            }

            throw CorralException.Host($"cannot set up the sandbox's network: {ex.Message}{left}", ex);
        }
    }

    /// <summary>Removes the sandbox's network (rules, veth, namespace, record), then lets its ports and lock go.</summary>
    public async Task DetachAsync(NetworkLease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        try
        {
            await TeardownAsync(lease.Key, lease.Record).ConfigureAwait(false);
            lease.ReleaseOwner();
        }
        finally
        {
            // A teardown that failed leaves the record with a free lock: `corral gc` finishes it.
            lease.Dispose();
        }
    }

    /// <summary>What a dead supervisor of <paramref name="id"/> left of its network; nothing when its owner lives or nothing is left.</summary>
    public async Task ReclaimAsync(string stateDir, string id)
    {
        var key = KeyOf(stateDir, id);
        if (!AnythingLeft(key))
        {
            return;
        }

        using var owner = OwnerLock.TryAcquire(RecordLock(key), busyRetries: 0);
        if (owner is null)
        {
            return; // its supervisor lives: the network is its to remove
        }

        await TeardownAsync(key, ReadRecord(key)).ConfigureAwait(false);
        owner.Release();
    }

    /// <summary>
    /// Every bridged sandbox network whose owner died, and every namespace, veth or rule of Corral's no
    /// live record names, removed (a restarted daemon, `corral gc`). Returns the keys removed.
    /// </summary>
    public async Task<IReadOnlyList<string>> ReconcileAsync()
    {
        var removed = new List<string>();
        await RepairTableAsync().ConfigureAwait(false);
        if (!Directory.Exists(options.StateDir))
        {
            return removed;
        }

        foreach (var file in Directory.EnumerateFiles(options.StateDir, "*.json"))
        {
            var key = Path.GetFileNameWithoutExtension(file);
            using var owner = OwnerLock.TryAcquire(RecordLock(key), busyRetries: 0);
            if (owner is null)
            {
                continue;
            }

            await TeardownAsync(key, ReadRecord(key)).ConfigureAwait(false);
            owner.Release();
            removed.Add(key);
        }

        // What exists is looked at before the records: a sandbox writes its record before it makes its
        // namespace, veth or rules, so whatever is seen here without a record afterwards has none.
        var orphans = new HashSet<string>(StringComparer.Ordinal);
        if (Directory.Exists(options.NetnsDir))
        {
            orphans.UnionWith(Directory.EnumerateFileSystemEntries(options.NetnsDir, "corral-*").Select(p => Path.GetFileName(p)["corral-".Length..]));
        }

        if (Directory.Exists(options.InterfacesDir))
        {
            orphans.UnionWith(Directory.EnumerateFileSystemEntries(options.InterfacesDir, "cv*").Select(p => Path.GetFileName(p)[2..]).Where(k => k.Length == 12));
        }

        if (Tools.Nft is not null && await ListTableAsync().ConfigureAwait(false) is { } listing)
        {
            orphans.UnionWith(NetworkRules.KeysIn(listing));
        }

        var live = Directory.EnumerateFiles(options.StateDir, "*.json").Select(Path.GetFileNameWithoutExtension).OfType<string>().ToHashSet(StringComparer.Ordinal);
        orphans.ExceptWith(live);
        foreach (var key in orphans.Where(k => k.All(char.IsAsciiHexDigitLower)))
        {
            using var owner = OwnerLock.TryAcquire(RecordLock(key), busyRetries: 0);
            if (owner is null)
            {
                continue;
            }

            await TeardownAsync(key, null).ConfigureAwait(false);
            owner.Release();
            removed.Add(key);
        }

        return removed;
    }

    /// <summary>Bytes the sandbox received and sent, read off the host end of its veth (its rx is the sandbox's tx).</summary>
    public static (long Rx, long Tx)? Counters(string hostInterface)
    {
        try
        {
            var dir = Path.Combine("/sys/class/net", hostInterface, "statistics");
            var hostRx = long.Parse(File.ReadAllText(Path.Combine(dir, "rx_bytes")).Trim(), CultureInfo.InvariantCulture);
            var hostTx = long.Parse(File.ReadAllText(Path.Combine(dir, "tx_bytes")).Trim(), CultureInfo.InvariantCulture);
            return (hostTx, hostRx);
        }
        catch (Exception ex) when (ex is IOException or FormatException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Rules, veth, namespace and record of <paramref name="key"/>, whichever exist; a step that fails throws after the others ran.</summary>
    private async Task TeardownAsync(string key, NetworkRecord? record)
    {
        var failures = new List<string>();
        if ((record is null || record.HasRules) && Tools.Nft is not null && await ListTableAsync().ConfigureAwait(false) is { } listing)
        {
            var deletes = NetworkRules.DeletesFor(options, listing, k => k == key);
            if (deletes.Count > 0)
            {
                var result = await _commands.RunAsync(Tools.Nft, ["-f", "-"], string.Concat(deletes)).ConfigureAwait(false);
                if (!result.Succeeded)
                {
                    failures.Add($"nft: {result.Message}");
                }
            }
        }

        var ns = NamespaceOf(key);
        var veth = VethOf(key);
        var batch = new StringBuilder();
        if (Directory.Exists(VethDir(key)))
        {
            batch.Append(CultureInfo.InvariantCulture, $"link del {veth}\n");
        }

        if (Path.Exists(NamespaceFile(key)))
        {
            batch.Append(CultureInfo.InvariantCulture, $"netns del {ns}\n");
        }

        if (batch.Length > 0 && Tools.Ip is { } ip)
        {
            var result = await _commands.RunAsync(ip, ["-force", "-batch", "-"], batch.ToString()).ConfigureAwait(false);
            if (!result.Succeeded || Directory.Exists(VethDir(key)) || Path.Exists(NamespaceFile(key)))
            {
                failures.Add($"ip: {result.Message}");
            }
        }

        if (failures.Count > 0)
        {
            throw new IOException($"network {key}: {string.Join("; ", failures)}");
        }

        File.Delete(RecordFile(key));
        NetworkLog.Detached(_logger, record?.Id ?? key, record?.Address ?? "-");
    }

    private async Task EnsureBridgeAsync()
    {
        var bridge = options.Bridge;
        if (!Directory.Exists(Path.Combine(options.InterfacesDir, bridge)))
        {
            var (_, prefix) = options.ParsedSubnet;
            var result = await _commands.RunAsync(Tools.Ip!, ["-batch", "-"], $"""
                link add {bridge} type bridge
                addr add {options.Gateway}/{prefix} dev {bridge}
                link set {bridge} up

                """).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                throw new IOException($"ip: cannot make the bridge {bridge}: {result.Message}");
            }
        }

        // The host routes for its sandboxes; the bridge answers ARP for a neighbour (ports are isolated,
        // so neighbours meet only through the host's firewall) and sends no redirects around it; a
        // published 127.0.0.1 port may be routed to the bridge; the bridge has no IPv6 address.
        _commands.WriteSysctl("net/ipv4/ip_forward", "1");
        _commands.WriteSysctl($"net/ipv4/conf/{bridge}/proxy_arp", "1");
        _commands.WriteSysctl($"net/ipv4/conf/{bridge}/proxy_arp_pvlan", "1");
        _commands.WriteSysctl($"net/ipv4/conf/{bridge}/send_redirects", "0");
        _commands.WriteSysctl($"net/ipv4/conf/{bridge}/route_localnet", "1");
        _commands.WriteSysctl($"net/ipv6/conf/{bridge}/disable_ipv6", "1");
    }

    /// <summary>A host-wide mutex (an flock, waited for) around address allocation and the bridge's setup.</summary>
    private static SafeFileHandle LockExclusive(string path)
    {
        var fd = LibC.open(path, LibC.O_RDWR | LibC.O_CREAT | LibC.O_CLOEXEC, 0b110_000_000);
        if (fd < 0)
        {
            throw CorralException.Host($"cannot open {path}: {LibC.LastErrorMessage}");
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        while (LibC.flock(fd, LibC.LOCK_EX) != 0)
        {
            if (LibC.LastError != LibC.EINTR)
            {
                var error = LibC.LastErrorMessage;
                handle.Dispose();
                throw CorralException.Host($"cannot lock {path}: {error}");
            }
        }

        return handle;
    }

    private async Task<string?> ListTableAsync()
    {
        var result = await _commands.RunAsync(Tools.Nft ?? "nft", ["-a", "list", "table", "inet", options.Table], null).ConfigureAwait(false);
        return result.Succeeded ? result.Stdout : null;
    }

    private string Allocate()
    {
        var (network, prefix) = options.ParsedSubnet;
        var size = 1u << (32 - prefix);
        var used = Directory.EnumerateFiles(options.StateDir, "*.json")
            .Select(f => ReadRecord(Path.GetFileNameWithoutExtension(f))?.Address)
            .OfType<string>()
            .ToHashSet(StringComparer.Ordinal);
        var cursorFile = Path.Combine(options.StateDir, "next");
        var next = File.Exists(cursorFile) && uint.TryParse(File.ReadAllText(cursorFile).Trim(), CultureInfo.InvariantCulture, out var n) ? n : 2u;
        for (var tried = 0u; tried < size; tried++)
        {
            var offset = (next + tried) % size;
            if (offset < 2 || offset == size - 1)
            {
                continue; // network, gateway, broadcast
            }

            var address = Ipv4.FromUInt(network + offset);
            if (!used.Contains(address))
            {
                PrivateFiles.WriteAtomically(cursorFile, (offset + 1).ToString(CultureInfo.InvariantCulture));
                return address;
            }
        }

        throw CorralException.Host($"no free address left in {options.Subnet}");
    }

    /// <summary>Throws AlreadyExists when a fixed host port of <paramref name="ports"/> is taken now.</summary>
    public static void EnsurePortsFree(IReadOnlyList<PortMapping> ports)
    {
        ArgumentNullException.ThrowIfNull(ports);
        foreach (var socket in ReservePorts([.. ports.Where(p => p.HostPort != 0)], out _))
        {
            socket.Dispose();
        }
    }

    /// <summary>
    /// Binds each host port (not listening: the DNAT rule sends its traffic to the sandbox first), so
    /// that no other sandbox or program can take it while the sandbox lives. Plain sockets, without the
    /// SO_REUSEADDR .NET sets on its own, under which two bound sockets of one user share a port.
    /// </summary>
    private static List<SafeFileHandle> ReservePorts(IReadOnlyList<PortMapping> asked, out List<PortMapping> ports)
    {
        var sockets = new List<SafeFileHandle>();
        ports = [];
        try
        {
            foreach (var port in asked)
            {
                var fd = LibC.socket(LibC.AF_INET, (port.Protocol == PortProtocol.Udp ? LibC.SOCK_DGRAM : LibC.SOCK_STREAM) | LibC.SOCK_CLOEXEC, 0);
                if (fd < 0)
                {
                    throw CorralException.Host($"cannot publish {port}: socket: {LibC.LastErrorMessage}");
                }

                var handle = new SafeFileHandle(fd, ownsHandle: true);
                sockets.Add(handle);
                var address = new LibC.SockAddrIn
                {
                    Family = LibC.AF_INET,
                    Port = (ushort)IPAddress.HostToNetworkOrder((short)port.HostPort),
                    Address = (uint)IPAddress.HostToNetworkOrder((int)Ipv4.ToUInt(IPAddress.Parse(port.HostIp))),
                };
                if (LibC.bind(fd, address, Marshal.SizeOf<LibC.SockAddrIn>()) != 0)
                {
                    var errno = LibC.LastError;
                    throw errno == LibC.EADDRINUSE
                        ? CorralException.Conflict($"cannot publish {port}: host port {port.HostIp}:{port.HostPort}/{port.Protocol.ToString().ToLowerInvariant()} is already in use")
                        : CorralException.Invalid($"cannot publish {port}: {LibC.ErrorText(errno)}");
                }

                var length = Marshal.SizeOf<LibC.SockAddrIn>();
                if (LibC.getsockname(fd, out var bound, ref length) != 0)
                {
                    throw CorralException.Host($"cannot publish {port}: getsockname: {LibC.LastErrorMessage}");
                }

                ports.Add(port with { HostPort = (ushort)IPAddress.NetworkToHostOrder((short)bound.Port) });
            }

            return sockets;
        }
        catch
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// $1 ip, $2 nft, $3 the host side's `ip -batch`, $4 the namespace, $5 its side's batch, $6 Corral's
    /// table, $7 the sandbox's rules, $8 the table's name.
    /// </summary>
    private const string SetupScript = """
        set -e
        printf '%s' "$3" | "$1" -batch -
        printf '%s' "$5" | "$1" -n "$4" -batch -
        if ! "$2" list table inet "$8" >/dev/null 2>&1; then
          printf '%s%s' "$6" "$7" | "$2" -f -
        elif [ -n "$7" ]; then
          printf '%s' "$7" | "$2" -f -
        fi
        """;

    /// <summary>Writes Corral's table whole again (its base chains flushed and rewritten; the sandboxes' rules kept).</summary>
    public async Task RepairTableAsync()
    {
        if (Tools.Nft is { } nft && (Directory.Exists(Path.Combine(options.InterfacesDir, options.Bridge)) || await ListTableAsync().ConfigureAwait(false) is not null))
        {
            var result = await _commands.RunAsync(nft, ["-f", "-"], NetworkRules.BaseRuleset(options)).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                throw new IOException($"nft: {result.Message.ReplaceLineEndings(" ")}");
            }
        }
    }

    private NetworkRecord? ReadRecord(string key)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(RecordFile(key)), NetworkJsonContext.Default.NetworkRecord);
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private string RecordFile(string key) => Path.Combine(options.StateDir, key + ".json");

    private string NamespaceFile(string key) => Path.Combine(options.NetnsDir, NamespaceOf(key));

    private string VethDir(string key) => Path.Combine(options.InterfacesDir, VethOf(key));

    /// <summary>Whether the sandbox's record, namespace or veth exists (what a dead supervisor may leave).</summary>
    private bool AnythingLeft(string key) => File.Exists(RecordFile(key)) || Path.Exists(NamespaceFile(key)) || Directory.Exists(VethDir(key));

    private string RecordLock(string key) => Path.Combine(options.StateDir, key + ".lock");

    /// <summary>Where `ip` and `nft` are (sbin is not always on PATH).</summary>
    private static class Tools
    {
        public static string? Ip { get; } = Find("ip");

        public static string? Nft { get; } = Find("nft");

        public static void Require()
        {
            if (Ip is null)
            {
                throw CorralException.Host("--network bridge needs `ip`: install iproute2 (apt-get install iproute2)");
            }

            if (Nft is null)
            {
                throw CorralException.Host("--network bridge needs `nft`: install nftables (apt-get install nftables)");
            }
        }

        private static string? Find(string name) =>
            RuntimeCommandRunner.Locate(name) ?? new[] { "/usr/sbin/", "/sbin/" }.Select(d => d + name).FirstOrDefault(File.Exists);
    }
}

/// <summary>The real host: `ip` and `nft` through the project's one command runner, sysctls under /proc/sys.</summary>
public sealed class ProcessNetworkCommands : INetworkCommands
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    public void WriteSysctl(string name, string value)
    {
        var path = "/proc/sys/" + name;
        if (File.Exists(path) && File.ReadAllText(path).Trim() != value)
        {
            File.WriteAllText(path, value);
        }
    }

    public Task<RuntimeCommandResult> RunAsync(string binary, IReadOnlyList<string> args, string? stdin) =>
        RuntimeCommandRunner.RunAsync(new RuntimeInvocation(binary, args), Deadline, CancellationToken.None, stdin);
}

internal static partial class NetworkLog
{
    [LoggerMessage(2301, LogLevel.Information, "network attached id={Id} address={Address} netns={Namespace} ports={Ports}")]
    public static partial void Attached(ILogger logger, string id, string address, string @namespace, int ports);

    [LoggerMessage(2302, LogLevel.Debug, "network removed id={Id} address={Address}")]
    public static partial void Detached(ILogger logger, string id, string address);
}
