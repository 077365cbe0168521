using System.Diagnostics;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Corral.Client;
using Corral.IntegrationTests.Daemon;
using Corral.IntegrationTests.Infrastructure;
using Corral.Interop;
using Corral.Networking;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;
using NetworkMode = Corral.Protocol.V1.NetworkMode;
using PortMapping = Corral.Protocol.V1.PortMapping;

namespace Corral.IntegrationTests.Networking;

/// <summary>
/// `--network bridge` end to end, on runc and gVisor: published ports on 127.0.0.1 (tcp and udp),
/// neighbours blocked unless asked, NAT out to a namespace this test made, the host and a stand-in
/// metadata address (169.254.169.254, given to that namespace) unreachable, DNS, a taken host port,
/// 20 at once, kill -9 of shim, daemon and `corral run`, and nothing left. Traffic goes only to
/// loopback, to sandboxes, or to the namespace the test made.
/// </summary>
public sealed class NetworkTests
{
    public static TheoryData<string> Runtimes => new("runc", "gvisor");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Serves tcp 8080 (answers "peer=ADDRESS") and udp 8081 (echoes "udp:DATA"), forever.</summary>
    private const string Server = """
        import socket, threading
        def udp():
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 8081))
            while True:
                d, a = u.recvfrom(65535); u.sendto(b"udp:" + d, a)
        threading.Thread(target=udp, daemon=True).start()
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen(64)
        print("listening", flush=True)
        while True:
            c, a = s.accept(); c.sendall(("peer=%s\n" % a[0]).encode()); c.close()
        """;

    /// <summary>Connects to each HOST:PORT argument (2 s each): prints "probe HOST:PORT ok:FIRST_LINE" or "probe HOST:PORT blocked:ERROR".</summary>
    private const string Probe = """
        import socket, sys
        for t in sys.argv[1:]:
            h, p = t.rsplit(":", 1)
            try:
                c = socket.create_connection((h, int(p)), timeout=2); r = "ok:" + c.recv(100).decode().strip(); c.close()
            except Exception as e:
                r = "blocked:" + type(e).__name__
            print("probe", t, r, flush=True)
        """;

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Published_ports_reach_the_sandbox_on_loopback_over_tcp_and_udp(string runtime)
    {
        await using var daemon = await DaemonProcess.StartAsync();
        var id = await daemon.Client.CreateAsync(Bridged(runtime, ["python3", "-c", Server], n =>
        {
            n.Ports.Add(new PortMapping { HostPort = 0, ContainerPort = 8080 });
            n.Ports.Add(new PortMapping { HostPort = 0, ContainerPort = 8081, Protocol = "udp" });
        }), Ct);
        var info = await RunningAsync(daemon.Client, id);

        info.Network.ShouldNotBeNull();
        info.Network.Address.ShouldStartWith("10.213.");
        info.Network.Gateway.ShouldBe("10.213.0.1");
        info.Network.Ports.Count.ShouldBe(2);
        var tcp = info.Network.Ports.Single(p => p.Protocol == "tcp");
        var udp = info.Network.Ports.Single(p => p.Protocol == "udp");
        tcp.HostIp.ShouldBe("127.0.0.1");
        tcp.HostPort.ShouldBeGreaterThan(0u, "port 0 asks for a free one, and Inspect tells which");
        udp.HostPort.ShouldBeGreaterThan(0u);

        (await TcpLineAsync(IPAddress.Loopback, (int)tcp.HostPort)).ShouldStartWith("peer=");
        (await UdpEchoAsync((int)udp.HostPort, "ping")).ShouldBe("udp:ping");

        // Not on the host's other addresses: the default host address is 127.0.0.1.
        if (HostAddress() is { } external)
        {
            (await TryTcpLineAsync(external, (int)tcp.HostPort)).ShouldBeNull($"{external}:{tcp.HostPort} must not reach the sandbox");
        }

        var stats = await daemon.Client.StatsAsync(id, Ct);
        stats.HasNetworkRxBytes.ShouldBeTrue();
        stats.NetworkRxBytes.ShouldBeGreaterThan(0);
        stats.NetworkTxBytes.ShouldBeGreaterThan(0);

        await daemon.Client.RemoveAsync(id, Ct, force: true);
        (await TestHost.LeaksAsync(id, TestHost.StateDir)).ShouldBeEmpty();
        (await TryTcpLineAsync(IPAddress.Loopback, (int)tcp.HostPort)).ShouldBeNull("the port's rule goes with the sandbox");
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Neighbours_are_blocked_by_default_and_reached_when_asked(string runtime)
    {
        await using var daemon = await DaemonProcess.StartAsync();
        var server = await daemon.Client.CreateAsync(Bridged(runtime, ["python3", "-c", Server]), Ct);
        var address = (await RunningAsync(daemon.Client, server)).Network.Address;
        await WaitListeningAsync(daemon.Client, server);
        var target = $"{address}:8080";

        var blocked = await ProbeAsync(daemon.Client, runtime, [target]);
        Begins(blocked[target], "blocked:", "a sandbox does not reach another by default");

        var allowed = await ProbeAsync(daemon.Client, runtime, [target], n => n.EgressAllowCidrs.Add(address + "/32"));
        Begins(allowed[target], "ok:peer=10.213.", "allow-cidr opens the neighbour for this sandbox");

        await daemon.Client.RemoveAsync(server, Ct, force: true);
        (await TestHost.LeaksAsync(server, TestHost.StateDir)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Egress_goes_out_through_nat_but_not_to_the_host_or_metadata_and_dns_is_set(string runtime)
    {
        await using var outside = await OutsideNamespace.CreateAsync();
        using var hostListener = new TcpListener(IPAddress.Any, 0);
        hostListener.Start();
        var hostPort = ((IPEndPoint)hostListener.LocalEndpoint).Port;
        using var answering = new CancellationTokenSource();
        _ = AnswerAsync(hostListener, answering.Token);

        // The stand-in metadata address answers the host itself: the route works, only sandboxes are refused.
        (await TcpLineAsync(IPAddress.Parse(OutsideNamespace.Metadata), 80)).ShouldStartWith("peer=");

        await using var daemon = await DaemonProcess.StartAsync();
        string[] targets = [$"{OutsideNamespace.Address}:80", $"{OutsideNamespace.Metadata}:80", $"10.213.0.1:{hostPort}", .. HostAddress() is { } h ? [$"{h}:{hostPort}"] : Array.Empty<string>()];
        var result = await ProbeAsync(daemon.Client, runtime, targets, n => n.Dns.Add("192.0.2.53"), "cat /etc/resolv.conf; ");

        result[$"{OutsideNamespace.Address}:80"].ShouldBe($"ok:peer={OutsideNamespace.HostSide}", "out through NAT: the outside sees the host's address");
        Begins(result[$"{OutsideNamespace.Metadata}:80"], "blocked:", "169.254.0.0/16 (cloud metadata) is refused");
        Begins(result[$"10.213.0.1:{hostPort}"], "blocked:", "the host (its bridge address) is refused");
        if (HostAddress() is { } host)
        {
            Begins(result[$"{host}:{hostPort}"], "blocked:", "the host (its own address) is refused");
        }

        result["resolv.conf"].ShouldContain("nameserver 192.0.2.53");

        // deny-cidr and none close the outside for one sandbox.
        var denied = await ProbeAsync(daemon.Client, runtime, [$"{OutsideNamespace.Address}:80"], n => n.EgressDenyCidrs.Add("198.51.100.0/24"));
        denied[$"{OutsideNamespace.Address}:80"].ShouldStartWith("blocked:");
        var none = await ProbeAsync(daemon.Client, runtime, [$"{OutsideNamespace.Address}:80"], n => n.EgressNone = true);
        none[$"{OutsideNamespace.Address}:80"].ShouldStartWith("blocked:");
        await answering.CancelAsync();
    }

    [Fact]
    public async Task A_taken_host_port_refuses_the_second_sandbox_and_creates_nothing()
    {
        var rootfs = await TestHost.RootfsAsync();
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();

        await using var daemon = await DaemonProcess.StartAsync();
        var first = await daemon.Client.CreateAsync(Bridged("runc", ["sleep", "60"], n => n.Ports.Add(new PortMapping { HostPort = (uint)port, ContainerPort = 80 })), Ct);
        await RunningAsync(daemon.Client, first);

        var id = TestHost.NewId("port");
        var result = await CorralProcess.RunAsync(["run", "--runtime", "runc", "--rootfs", rootfs, "--name", id, "--network", "bridge", "-p", $"{port}:80", "--", "true"]);
        result.ExitCode.ShouldBe(125, result.Stderr);
        result.Stderr.Trim().Split('\n').Length.ShouldBe(1, result.Stderr);
        result.Stderr.ShouldContain($"host port 127.0.0.1:{port}/tcp is already in use");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();

        // Through the API: ALREADY_EXISTS, and nothing made for it.
        var ex = await Should.ThrowAsync<RpcException>(() => daemon.Client.CreateAsync(Bridged("gvisor", ["true"], n => n.Ports.Add(new PortMapping { HostPort = (uint)port, ContainerPort = 80 })), Ct));
        ex.StatusCode.ShouldBe(StatusCode.AlreadyExists, ex.Status.Detail);

        await daemon.Client.RemoveAsync(first, Ct, force: true);
        (await TestHost.LeaksAsync(first, TestHost.StateDir)).ShouldBeEmpty();
    }

    public static TheoryData<string[], string> BadInput => new()
    {
        { ["--network", "bridge", "-p", "70000:80"], "invalid --publish '70000:80'" },
        { ["--network", "bridge", "-p", "abc"], "invalid --publish 'abc'" },
        { ["--network", "bridge", "-p", "80:0"], "invalid --publish '80:0'" },
        { ["--network", "bridge", "-p", "::1:80:80"], "invalid --publish '::1:80:80'" },
        { ["--network", "bridge", "-p", "80:80/sctp"], "invalid --publish '80:80/sctp'" },
        { ["--network", "mesh"], "invalid --network 'mesh'" },
        { ["--network", "bridge", "--egress", "allow-cidr=10.0.0.0/33"], "invalid --egress allow-cidr='10.0.0.0/33'" },
        { ["--network", "bridge", "--egress", "open"], "invalid --egress 'open'" },
        { ["--network", "bridge", "--dns", "resolver"], "invalid --dns 'resolver'" },
        { ["-p", "8080:80"], "--publish, --egress and --dns need --network bridge" },
    };

    [Theory]
    [MemberData(nameof(BadInput))]
    public async Task Bad_network_input_is_one_line_exit_125_and_nothing_created(string[] options, string expected)
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("badnet");
        var netnsBefore = Namespaces();
        var result = await CorralProcess.RunAsync(["run", "--runtime", "runc", "--rootfs", rootfs, "--name", id, .. options, "--", "true"]);

        result.ExitCode.ShouldBe(125, result.Stderr);
        result.Stderr.Trim().Split('\n').Length.ShouldBe(1, result.Stderr);
        result.Stderr.ShouldStartWith("corral: " + expected);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        Namespaces().Except(netnsBefore).ShouldBeEmpty();
    }

    [Fact]
    public async Task Bad_network_fields_in_the_api_are_invalid_argument()
    {
        await using var daemon = await DaemonProcess.StartAsync();
        var cases = new List<Action<NetworkSpec>>
        {
            n => n.Ports.Add(new PortMapping { HostPort = 70000, ContainerPort = 80 }),
            n => n.Ports.Add(new PortMapping { HostPort = 80, ContainerPort = 0 }),
            n => n.Ports.Add(new PortMapping { HostIp = "localhost", HostPort = 80, ContainerPort = 80 }),
            n => n.Ports.Add(new PortMapping { HostPort = 80, ContainerPort = 80, Protocol = "icmp" }),
            n => n.Mode = (NetworkMode)7,
            n => n.EgressAllowCidrs.Add("not-a-cidr"),
            n => n.Dns.Add("\n"),
        };
        foreach (var configure in cases)
        {
            var ex = await Should.ThrowAsync<RpcException>(() => daemon.Client.CreateAsync(Bridged("runc", ["true"], configure), Ct));
            ex.StatusCode.ShouldBe(StatusCode.InvalidArgument, ex.Status.Detail);
            ex.Status.Detail.ShouldNotContain("\n");
        }

        (await daemon.Client.ListAsync(cancellationToken: Ct)).ShouldBeEmpty("nothing was created");
    }

    [Fact]
    public async Task Twenty_bridged_sandboxes_at_once_start_reach_loopback_and_leave_nothing()
    {
        var rootfs = await TestHost.RootfsAsync();
        var ids = Enumerable.Range(0, 20).Select(i => TestHost.NewId($"net{i}")).ToList();
        var runs = ids.Select((id, i) => CorralProcess.RunAsync(
            ["run", "--runtime", i % 2 == 0 ? "runc" : "gvisor", "--rootfs", rootfs, "--name", id, "--network", "bridge", "-p", "0:8080", "--",
                "python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 9)); s.listen(); c=socket.create_connection(('127.0.0.1', 9)); print(open('/etc/resolv.conf').read().split()[0])"],
            TimeSpan.FromMinutes(5))).ToList();
        var results = await Task.WhenAll(runs);
        foreach (var result in results)
        {
            result.ExitCode.ShouldBe(0, result.Stderr);
            result.Stdout.ShouldBe("nameserver\n");
        }

        foreach (var id in ids)
        {
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Kill9_of_a_shim_and_of_the_daemon_then_the_restarted_daemon_removes_what_the_dead_left(string runtime)
    {
        var first = await DaemonProcess.StartAsync();
        DaemonProcess? second = null;
        try
        {
            var survivor = await first.Client.CreateAsync(Bridged(runtime, ["python3", "-c", Server], n => n.Ports.Add(new PortMapping { ContainerPort = 8080 })), Ct);
            var orphan = await first.Client.CreateAsync(Bridged(runtime, ["sleep", "1000"], n => n.Ports.Add(new PortMapping { ContainerPort = 8080 })), Ct);
            var survivorInfo = await RunningAsync(first.Client, survivor);
            await RunningAsync(first.Client, orphan);
            var orphanKey = BridgeNetwork.KeyOf(TestHost.StateDir, orphan);
            Path.Exists("/run/netns/" + BridgeNetwork.NamespaceOf(orphanKey)).ShouldBeTrue();

            await first.KillHardAsync();
            LibC.kill(DaemonOwnershipTests.ShimPid(first, orphan), 9).ShouldBe(0);
            await Task.Delay(TimeSpan.FromSeconds(1), Ct);

            second = await DaemonProcess.StartInAsync(first.Root);
            var deadline = Stopwatch.StartNew();
            while ((await TestHost.NetworkLeaksAsync(orphanKey)).Count > 0)
            {
                deadline.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(30)), string.Join("; ", await TestHost.NetworkLeaksAsync(orphanKey)));
                await Task.Delay(100, Ct);
            }

            // The adopted one keeps its network and its port.
            var port = (int)survivorInfo.Network.Ports[0].HostPort;
            (await TcpLineAsync(IPAddress.Loopback, port)).ShouldStartWith("peer=");
            (await second.Client.InspectAsync(survivor, Ct)).Network.Address.ShouldBe(survivorInfo.Network.Address);

            await second.Client.RemoveAsync(survivor, Ct, force: true);
            await second.Client.RemoveAsync(orphan, Ct, force: true);
            (await TestHost.LeaksAsync(survivor, TestHost.StateDir)).ShouldBeEmpty();
            (await TestHost.LeaksAsync(orphan, TestHost.StateDir)).ShouldBeEmpty();
        }
        finally
        {
            if (second is not null)
            {
                await second.DisposeAsync();
            }
            else
            {
                await first.DisposeAsync();
            }
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Kill9_of_corral_run_leaves_a_network_that_gc_removes(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("netgc");
        var key = BridgeNetwork.KeyOf(TestHost.StateDir, id);
        using var run = CorralProcess.Start(["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--network", "bridge", "-p", "0:80", "--", "sleep", "1000"]);
        var deadline = Stopwatch.StartNew();
        while (!Path.Exists($"/run/corral-net/{key}.json") || !File.Exists(Path.Combine(TestHost.StateDir, "bundles", id, "init.pid")))
        {
            deadline.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(60)), "the sandbox never started");
            await Task.Delay(50, Ct);
        }

        LibC.kill(run.Id, 9).ShouldBe(0);
        await run.WaitForExitAsync(Ct);
        (await TestHost.NetworkLeaksAsync(key)).ShouldNotBeEmpty("kill -9 leaves the network (what gc is for)");

        // Someone emptied Corral's base chain meanwhile: gc writes it whole again.
        using (var flush = Process.Start(new ProcessStartInfo("/usr/sbin/nft", ["flush", "chain", "inet", "corral", "forward"]) { RedirectStandardError = true })!)
        {
            await flush.WaitForExitAsync(Ct);
            flush.ExitCode.ShouldBe(0);
        }

        var gc = await CorralProcess.RunAsync(["gc"]);
        gc.ExitCode.ShouldBe(0, gc.Stderr);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        (await TestHost.NftRulesAsync())!.ShouldContain("iifname \"corral0\" oifname \"corral0\" drop");
    }

    private static void Begins(string actual, string prefix, string why) =>
        actual.StartsWith(prefix, StringComparison.Ordinal).ShouldBeTrue($"{why}: got '{actual}'");

    private static CreateRequest Bridged(string runtime, string[] command, Action<NetworkSpec>? configure = null)
    {
        var request = DaemonSandboxTests.Request(runtime, command, r => r.Name = TestHost.NewId("net"));
        request.Network = new NetworkSpec { Mode = NetworkMode.Bridge };
        configure?.Invoke(request.Network);
        return request;
    }

    /// <summary>Runs the probe in a new bridged sandbox; also its /etc/resolv.conf under "resolv.conf".</summary>
    // The daemon's sandboxes are supervised in /run/corral (TestHost.StateDir), whatever its --state-dir.
    private static async Task<Dictionary<string, string>> ProbeAsync(CorralClient client, string runtime, string[] targets, Action<NetworkSpec>? configure = null, string prefix = "")
    {
        var script = prefix + "python3 -c \"$0\" \"$@\"";
        var id = await client.CreateAsync(Bridged(runtime, ["sh", "-c", script, Probe, .. targets], configure), Ct);
        var exit = await client.WaitAsync(id, Ct).WaitAsync(TestHost.Scaled(TimeSpan.FromSeconds(90)), Ct);
        exit.ExitCode.ShouldBe(0, exit.StderrTail);
        await client.RemoveAsync(id, Ct);
        var lines = exit.StdoutTail.Trim().Split('\n');
        var result = lines.Where(l => l.StartsWith("probe ", StringComparison.Ordinal)).Select(l => l.Split(' ', 3)).ToDictionary(p => p[1], p => p[2]);
        result["resolv.conf"] = string.Join('\n', lines.Where(l => !l.StartsWith("probe ", StringComparison.Ordinal)));
        return result;
    }

    private static async Task<SandboxInfo> RunningAsync(CorralClient client, string id)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var info = await client.InspectAsync(id, Ct);
            if (info.State == SandboxState.Running && info.Network is not null)
            {
                return info;
            }

            info.State.ShouldNotBe(SandboxState.Failed, info.Error);
            info.State.ShouldNotBe(SandboxState.Exited, info.Exit?.StderrTail);
            watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(75)), $"{id} never ran: {info.State}");
            await Task.Delay(50, Ct);
        }
    }

    private static async Task WaitListeningAsync(CorralClient client, string id)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var stdout = new StringBuilder();
            await foreach (var chunk in client.LogsAsync(id, follow: false, Ct))
            {
                stdout.Append(chunk.Data.ToStringUtf8());
            }

            if (stdout.ToString().Contains("listening", StringComparison.Ordinal))
            {
                return;
            }

            watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(30)), $"{id} never listened: {stdout}");
            await Task.Delay(50, Ct);
        }
    }

    /// <summary>The first line the server sends, retried for a while (a sandbox's server takes a moment to listen).</summary>
    private static async Task<string> TcpLineAsync(IPAddress address, int port)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            if (await TryTcpLineAsync(address, port) is { } line)
            {
                return line;
            }

            watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(30)), $"nothing answered on {address}:{port}");
            await Task.Delay(100, Ct);
        }
    }

    private static async Task<string?> TryTcpLineAsync(IPAddress address, int port)
    {
        using var client = new TcpClient();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            await client.ConnectAsync(address, port, timeout.Token);
            using var reader = new StreamReader(client.GetStream());
            return await reader.ReadLineAsync(timeout.Token);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException)
        {
            return null;
        }
    }

    private static async Task<string> UdpEchoAsync(int port, string text)
    {
        using var udp = new UdpClient(AddressFamily.InterNetwork);
        var watch = Stopwatch.StartNew();
        while (true)
        {
            await udp.SendAsync(Encoding.ASCII.GetBytes(text), new IPEndPoint(IPAddress.Loopback, port), Ct);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(1));
            try
            {
                var reply = await udp.ReceiveAsync(timeout.Token);
                return Encoding.ASCII.GetString(reply.Buffer);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
                watch.Elapsed.ShouldBeLessThan(TestHost.Scaled(TimeSpan.FromSeconds(30)), $"no udp answer on 127.0.0.1:{port}");
            }
        }
    }

    private static async Task AnswerAsync(TcpListener listener, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                using var client = await listener.AcceptTcpClientAsync(cancellationToken);
                var peer = ((IPEndPoint)client.Client.RemoteEndPoint!).Address;
                await client.GetStream().WriteAsync(Encoding.ASCII.GetBytes($"peer={peer}\n"), cancellationToken);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException or IOException)
        {
            // Test over.
        }
    }

    /// <summary>The host's first non-loopback IPv4 address outside Corral's bridge and veths.</summary>
    private static IPAddress? HostAddress() =>
        NetworkInterface.GetAllNetworkInterfaces()
            .Where(i => i.OperationalStatus == OperationalStatus.Up && i.NetworkInterfaceType != NetworkInterfaceType.Loopback && !i.Name.StartsWith("corral", StringComparison.Ordinal) && !i.Name.StartsWith("cv", StringComparison.Ordinal) && !i.Name.StartsWith("ct", StringComparison.Ordinal))
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Select(a => a.Address)
            .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork);

    private static string[] Namespaces() => Directory.Exists("/run/netns") ? Directory.GetFileSystemEntries("/run/netns") : [];


    /// <summary>
    /// "The outside", made by the test: a namespace at 198.51.100.2 behind a veth from the host
    /// (198.51.100.1), also holding 169.254.169.254 (routed to it from the host), serving tcp 80 with
    /// "peer=ADDRESS". Removed with everything it made.
    /// </summary>
    private sealed class OutsideNamespace : IAsyncDisposable
    {
        public const string Address = "198.51.100.2";
        public const string HostSide = "198.51.100.1";
        public const string Metadata = "169.254.169.254";

        private readonly string _name;
        private readonly string _veth;
        private Process? _server;

        private OutsideNamespace(string name, string veth)
        {
            _name = name;
            _veth = veth;
        }

        public static async Task<OutsideNamespace> CreateAsync()
        {
            var suffix = Guid.NewGuid().ToString("N")[..6];
            var outside = new OutsideNamespace("ctest-" + suffix, "ct" + suffix);
            try
            {
                await IpAsync($"netns add {outside._name}");
                await IpAsync($"link add {outside._veth} type veth peer name eth0 netns {outside._name}");
                await IpAsync($"addr add {HostSide}/24 dev {outside._veth}");
                await IpAsync($"link set {outside._veth} up");
                await IpAsync($"-n {outside._name} link set lo up");
                await IpAsync($"-n {outside._name} link set eth0 up");
                await IpAsync($"-n {outside._name} addr add {Address}/24 dev eth0");
                await IpAsync($"-n {outside._name} addr add {Metadata}/32 dev lo");
                await IpAsync($"-n {outside._name} route add default via {HostSide}");
                await IpAsync($"route add {Metadata}/32 via {Address}");
                outside._server = Process.Start(new ProcessStartInfo("ip", ["netns", "exec", outside._name, "/usr/bin/python3", "-c", """
                    import socket
                    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 80)); s.listen(64)
                    while True:
                        c, a = s.accept(); c.sendall(("peer=%s\n" % a[0]).encode()); c.close()
                    """]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
                await TcpLineAsync(IPAddress.Parse(Address), 80);
                return outside;
            }
            catch
            {
                await outside.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_server is { HasExited: false })
            {
                _server.Kill(entireProcessTree: true);
                await _server.WaitForExitAsync();
            }

            _server?.Dispose();
            await IpAsync($"route del {Metadata}/32", check: false);
            await IpAsync($"link del {_veth}", check: false);
            await IpAsync($"netns del {_name}", check: false);
        }

        private static async Task IpAsync(string args, bool check = true)
        {
            using var ip = Process.Start(new ProcessStartInfo("ip", args.Split(' ')) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            var error = await ip.StandardError.ReadToEndAsync();
            await ip.WaitForExitAsync();
            if (check && ip.ExitCode != 0)
            {
                throw new InvalidOperationException($"ip {args}: {error}");
            }
        }
    }
}
