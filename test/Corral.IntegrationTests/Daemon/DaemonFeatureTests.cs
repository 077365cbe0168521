using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Corral.Client;
using Corral.Images;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// A daemon with every optional part on: TCP with a bearer token, a small admission capacity
/// (2 cpus, 512Mi), and its own image store holding a tiny image. Its tests run one at a time:
/// admission counts every sandbox the daemon runs.
/// </summary>
public sealed class FeatureDaemonFixture : IAsyncLifetime
{
    public const string TinyImage = "localhost/tiny:1";

    private readonly List<string> _ids = [];

    public string Root { get; } = Directory.CreateTempSubdirectory("corral-daemon-features-").FullName;

    public DaemonProcess Daemon { get; private set; } = null!;

    public CorralClient Client => Daemon.Client;

    public string Rootfs { get; private set; } = null!;

    public string TokenFile => Path.Combine(Root, "token");

    public string Token { get; } = Guid.NewGuid().ToString("N");

    public string DataDir => Path.Combine(Root, "data");

    public int Port { get; private set; }

    public string TcpHost => $"tcp://127.0.0.1:{Port}";

    public string Track(string id)
    {
        lock (_ids)
        {
            _ids.Add(id);
        }

        return id;
    }

    public async ValueTask InitializeAsync()
    {
        Rootfs = await TestHost.RootfsAsync();
        File.WriteAllText(TokenFile, Token + "\n");
        File.SetUnixFileMode(TokenFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        await ImportTinyImageAsync();
        Port = FreePort();
        Daemon = await DaemonProcess.StartAsync(
            "--listen", $"127.0.0.1:{Port}", "--token-file", TokenFile,
            "--capacity-cpus", "2", "--capacity-memory", "512Mi",
            "--data-dir", DataDir);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (Daemon is null)
            {
                return;
            }

            var exitCode = await Daemon.StopAsync(TimeSpan.FromSeconds(60));
            var output = await Daemon.Output;
            await Daemon.DisposeAsync();
            exitCode.ShouldBe(0, output);
            var leaks = new List<string>();
            foreach (var id in _ids)
            {
                leaks.AddRange(await TestHost.LeaksAsync(id));
            }

            leaks.ShouldBeEmpty();
        }
        finally
        {
            Directory.Delete(Root, recursive: true);
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>dash and libc from the default rootfs as one layer: enough for `sh -c`, quick to pack and unpack.</summary>
    private async Task ImportTinyImageAsync()
    {
        var layer = Path.Combine(Root, "tiny.tar");
        string[] entries =
        [
            "./bin", "./lib", "./lib64", "./sbin", "./usr", "./usr/bin", "./usr/lib", "./usr/lib64", "./usr/lib/x86_64-linux-gnu",
            "./usr/bin/dash", "./usr/bin/sh", "./usr/bin/sleep", "./usr/lib/x86_64-linux-gnu/libc.so.6", "./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "./usr/lib64/ld-linux-x86-64.so.2", "./root", "./tmp", "./proc", "./sys", "./dev", "./etc",
        ];
        var (code, output) = await Tool.RunAsync("tar", ["-C", Rootfs, "--no-recursion", "-cf", layer, .. entries]);
        code.ShouldBe(0, output);
        var layout = Path.Combine(Root, "tiny-layout");
        OciLayoutWriter.Write(layout, "1", [layer], new ContainerConfig
        {
            Cmd = ["sh", "-c", "echo from-image $FROM_IMAGE; pwd"],
            Env = ["PATH=/usr/bin:/bin", "FROM_IMAGE=yes"],
            WorkingDir = "/root",
        });
        await new ImageImporter(new ImageStore(DataDir)).ImportAsync(layout, TinyImage);
    }
}

/// <summary>TCP with a bearer token, admission, Stats, images in Create, and ps filters through the CLI.</summary>
public sealed class DaemonFeatureTests(FeatureDaemonFixture fixture) : IClassFixture<FeatureDaemonFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task TcpCallsWithoutTheRightTokenAreUnauthenticated()
    {
        using var none = CorralClient.Connect(fixture.TcpHost);
        using var wrong = CorralClient.Connect(fixture.TcpHost, "not-" + fixture.Token);
        var name = TestHost.NewId("unauth");

        foreach (var (what, client) in new[] { ("no token", none), ("wrong token", wrong) })
        {
            var list = await Should.ThrowAsync<RpcException>(() => client.ListAsync(cancellationToken: Ct), what);
            list.StatusCode.ShouldBe(StatusCode.Unauthenticated, what);
            list.Status.Detail.ShouldContain("bearer token", Case.Insensitive, what);
            var create = await Should.ThrowAsync<RpcException>(() => client.CreateAsync(Request(["true"], r => r.Name = name), Ct), what);
            create.StatusCode.ShouldBe(StatusCode.Unauthenticated, what);
        }

        (await fixture.Client.ListAsync(cancellationToken: Ct)).ShouldNotContain(s => s.Id == name);
        (await TestHost.LeaksAsync(name)).ShouldBeEmpty();
    }

    [Fact]
    public async Task TcpCallsWithTheTokenWork()
    {
        await using var client = CorralClient.Connect(fixture.TcpHost, fixture.Token);

        (await client.IsServingAsync(Ct)).ShouldBeTrue();
        var id = fixture.Track(await client.CreateAsync(Request(["sh", "-c", "echo over-tcp; exit 4"]), Ct));
        var exit = await client.WaitAsync(id, Ct);

        exit.ExitCode.ShouldBe(4);
        exit.StdoutTail.ShouldBe("over-tcp\n");
        (await client.InspectAsync(id, Ct)).State.ShouldBe(SandboxState.Exited);
        await client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task TheCliTakesTheTokenFromTheTokenFile()
    {
        var wrongFile = Path.Combine(fixture.Root, "wrong-token");
        File.WriteAllText(wrongFile, "wrong\n");

        var ok = await CorralProcess.RunAsync(["--host", fixture.TcpHost, "--token-file", fixture.TokenFile, "ps", "--label", "nothing=here"]);
        var missing = await CorralProcess.RunAsync(["--host", fixture.TcpHost, "ps"]);
        var wrong = await CorralProcess.RunAsync(["--host", fixture.TcpHost, "--token-file", wrongFile, "ps"]);

        ok.ExitCode.ShouldBe(0, ok.Stderr);
        ok.Stdout.ShouldContain("ID");
        missing.ExitCode.ShouldBe(125);
        missing.Stderr.ShouldBe($"corral: --host {fixture.TcpHost} needs the daemon's token: --token-file F, or $CORRAL_TOKEN\n");
        wrong.ExitCode.ShouldBe(125);
        wrong.Stderr.ShouldStartWith("corral: the daemon refused the call: invalid bearer token");
        wrong.Stderr.Count(c => c == '\n').ShouldBe(1);
    }

    [Fact]
    public async Task ListenWithoutAPrivateTokenFileOrOnAPortInUseIsRefusedAtStart()
    {
        var shared = Path.Combine(fixture.Root, "shared-token");
        File.WriteAllText(shared, "t\n");
        File.SetUnixFileMode(shared, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        var port = FeatureDaemonFixture.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture);

        var noToken = await ServeAsync("--listen", $"127.0.0.1:{port}");
        var readable = await ServeAsync("--listen", $"127.0.0.1:{port}", "--token-file", shared);
        var inUse = await ServeAsync("--listen", $"127.0.0.1:{fixture.Port}", "--token-file", fixture.TokenFile);

        noToken.Code.ShouldNotBe(0);
        noToken.Stderr.ShouldBe($"corral serve: --listen 127.0.0.1:{port} needs --token-file F: the TCP endpoint is only served with a bearer token\n");
        readable.Code.ShouldNotBe(0);
        readable.Stderr.ShouldContain("chmod 600");
        readable.Stderr.Count(c => c == '\n').ShouldBe(1);
        inUse.Code.ShouldNotBe(0);
        inUse.Stderr.ShouldStartWith("corral serve: cannot listen: ");
        inUse.Stderr.ShouldContain("address already in use");
    }

    [Fact]
    public async Task ASandboxLargerThanTheCapacityIsRefusedAndLeavesNothing()
    {
        var before = (await fixture.Client.ListAsync(cancellationToken: Ct)).Count;
        var name = TestHost.NewId("huge");

        var cpus = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(Request(["true"], r => { r.Cpus = 3; r.Name = name; }), Ct));
        var memory = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(Request(["true"], r => { r.MemoryBytes = 1L << 30; r.Name = name; }), Ct));

        cpus.StatusCode.ShouldBe(StatusCode.ResourceExhausted);
        cpus.Status.Detail.ShouldBe("not enough capacity for 3 cpus (free: 2 of 2); 0 running sandboxes reserve 0 cpus and 0: that is more than the daemon's whole capacity: ask for less");
        memory.StatusCode.ShouldBe(StatusCode.ResourceExhausted);
        memory.Status.Detail.ShouldContain("1Gi memory (free: 512Mi of 512Mi)");
        (await fixture.Client.ListAsync(cancellationToken: Ct)).Count.ShouldBe(before);
        Directory.Exists(Path.Combine(fixture.Daemon.StateDir, "sandboxes", name)).ShouldBeFalse();
        (await TestHost.LeaksAsync(name)).ShouldBeEmpty();
    }

    [Fact]
    public async Task TwoThatFitOnlyOneAtATimeAreAdmittedInTurn()
    {
        void Big(CreateRequest r)
        {
            r.Cpus = 1.5;
            r.MemoryBytes = 300L << 20;
        }

        // Concurrent creates: the check and the create are one step, so exactly one gets in.
        var attempts = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => TryCreateAsync(Request(["sleep", "600"], Big))));
        var admitted = attempts.Where(a => a.Id is not null).Select(a => fixture.Track(a.Id!)).ToList();
        admitted.Count.ShouldBe(1, string.Join(" | ", attempts.Select(a => a.Error?.Status.Detail)));
        attempts.Where(a => a.Id is null).ShouldAllBe(a => a.Error!.StatusCode == StatusCode.ResourceExhausted);
        var first = admitted[0];

        var refused = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(Request(["true"], Big), Ct));
        refused.StatusCode.ShouldBe(StatusCode.ResourceExhausted);
        refused.Status.Detail.ShouldBe("not enough capacity for 1.5 cpus (free: 0.5 of 2) and 300Mi memory (free: 212Mi of 512Mi); 1 running sandboxes reserve 1.5 cpus and 300Mi: wait until one ends, or ask for less");

        await fixture.Client.KillAsync(first, "KILL", TimeSpan.Zero, Ct);
        await fixture.Client.WaitAsync(first, Ct);
        var second = fixture.Track(await fixture.Client.CreateAsync(Request(["sh", "-c", "exit 5"], Big), Ct));
        (await fixture.Client.WaitAsync(second, Ct)).ExitCode.ShouldBe(5);

        await fixture.Client.RemoveAsync(first, Ct);
        await fixture.Client.RemoveAsync(second, Ct);
        (await TestHost.LeaksAsync(first)).ShouldBeEmpty();
        (await TestHost.LeaksAsync(second)).ShouldBeEmpty();
    }

    [Fact]
    public async Task StatsReadTheRunningSandboxsCgroup()
    {
        var id = fixture.Track(await fixture.Client.CreateAsync(Request(["sh", "-c", "echo ready; exec sleep 600"], r => { r.MemoryBytes = 64L << 20; r.Pids = 32; }), Ct));
        await WaitForStateAsync(id, SandboxState.Running);

        var stats = await fixture.Client.StatsAsync(id, Ct);
        var cli = await CorralProcess.RunAsync(["--host", fixture.TcpHost, "--token-file", fixture.TokenFile, "stats", id, "--json"]);
        var table = await CorralProcess.RunAsync(["--host", "unix://" + fixture.Daemon.SocketPath, "stats", id]);

        stats.Id.ShouldBe(id);
        stats.MemoryLimitBytes.ShouldBe(64L << 20);
        stats.MemoryCurrentBytes.ShouldBeGreaterThan(0);
        stats.PidsLimit.ShouldBe(32);
        stats.PidsCurrent.ShouldBeGreaterThanOrEqualTo(1);
        stats.OomKills.ShouldBe(0);
        cli.ExitCode.ShouldBe(0, cli.Stderr);
        using (var json = JsonDocument.Parse(cli.Stdout))
        {
            json.RootElement.GetProperty("memoryLimitBytes").GetString().ShouldBe((64L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture));
            json.RootElement.GetProperty("pidsLimit").GetString().ShouldBe("32");
        }

        table.ExitCode.ShouldBe(0, table.Stderr);
        table.Stdout.ShouldContain("64Mi");

        await fixture.Client.KillAsync(id, "KILL", TimeSpan.Zero, Ct);
        await fixture.Client.WaitAsync(id, Ct);
        var ended = await Should.ThrowAsync<RpcException>(() => fixture.Client.StatsAsync(id, Ct));
        ended.StatusCode.ShouldBe(StatusCode.FailedPrecondition);
        ended.Status.Detail.ShouldContain("has ended");
        var unknown = await Should.ThrowAsync<RpcException>(() => fixture.Client.StatsAsync(TestHost.NewId("nope"), Ct));
        unknown.StatusCode.ShouldBe(StatusCode.NotFound);
        await fixture.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task ASandboxFromAnImageRunsItsDefaultsAndLeavesNothing(string runtime)
    {
        var request = DaemonSandboxTests.Request(runtime, [], r => r.Image = FeatureDaemonFixture.TinyImage, rootfs: string.Empty);

        var id = fixture.Track(await fixture.Client.CreateAsync(request, Ct));
        var exit = await fixture.Client.WaitAsync(id, Ct);

        exit.ExitCode.ShouldBe(0, exit.StderrTail);
        exit.StdoutTail.ShouldBe("from-image yes\n/root\n");
        string[] imageCmd = ["sh", "-c", "echo from-image $FROM_IMAGE; pwd"];
        exit.Command.ShouldBe(imageCmd);
        await fixture.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        Directory.Exists(Path.Combine(TestHost.StateDir, "bundles", id)).ShouldBeFalse();
    }

    [Fact]
    public async Task RunDetachedWithAnImageGoesThroughTheDaemon()
    {
        var host = "unix://" + fixture.Daemon.SocketPath;

        var run = await CorralProcess.RunAsync(["--host", host, "run", "-d", "--runtime", "runc", "--image", FeatureDaemonFixture.TinyImage, "--env", "FROM_IMAGE=overridden", "--", "sh", "-c", "echo $FROM_IMAGE"]);
        run.ExitCode.ShouldBe(0, run.Stderr);
        var id = fixture.Track(run.Stdout.Trim());
        var wait = await CorralProcess.RunAsync(["--host", host, "wait", id]);
        var logs = await CorralProcess.RunAsync(["--host", host, "logs", id]);

        wait.ExitCode.ShouldBe(0, wait.Stderr);
        logs.Stdout.ShouldBe("overridden\n");
        (await CorralProcess.RunAsync(["--host", host, "rm", id])).ExitCode.ShouldBe(0);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task AnIdleSandboxFromAnImageTakesExecsWithTheImagesSettings(string runtime)
    {
        var request = DaemonSandboxTests.Request(runtime, [], r => { r.Image = FeatureDaemonFixture.TinyImage; r.Idle = true; }, rootfs: string.Empty);
        await using var sandbox = await fixture.Client.StartAsync(request, Ct);
        fixture.Track(sandbox.Id);

        var exec = await sandbox.ExecAsync(["sh", "-c", "echo $FROM_IMAGE; pwd"], cancellationToken: Ct);
        var withCommand = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(
            DaemonSandboxTests.Request(runtime, ["true"], r => { r.Image = FeatureDaemonFixture.TinyImage; r.Idle = true; }, rootfs: string.Empty), Ct));

        exec.ExitCode.ShouldBe(0, exec.Stderr);
        exec.Stdout.ShouldBe("yes\n/root\n");
        (await sandbox.InspectAsync(Ct)).State.ShouldBe(SandboxState.Running);
        withCommand.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        withCommand.Status.Detail.ShouldContain("choose one");
    }

    [Fact]
    public async Task TheCliRunsAnIdleSandboxFromAnImageExecsIntoItAndRemovesIt()
    {
        var host = "unix://" + fixture.Daemon.SocketPath;

        var run = await CorralProcess.RunAsync(["--host", host, "run", "-d", "--idle", "--runtime", "gvisor", "--image", FeatureDaemonFixture.TinyImage]);
        run.ExitCode.ShouldBe(0, run.Stderr);
        var id = fixture.Track(run.Stdout.Trim());
        var exec = await CorralProcess.RunAsync(["--host", host, "exec", id, "--", "sh", "-c", "echo $FROM_IMAGE; exit 4"]);
        var idleHere = await CorralProcess.RunAsync(["run", "--idle", "--", "true"]);
        var rm = await CorralProcess.RunAsync(["--host", host, "rm", "-f", id]);

        exec.ExitCode.ShouldBe(4, exec.Stderr);
        exec.Stdout.ShouldBe("yes\n");
        idleHere.ExitCode.ShouldBe(125);
        idleHere.Stderr.ShouldBe("corral: --idle needs -d: an idle sandbox lives in the daemon and takes `corral exec`\n");
        rm.ExitCode.ShouldBe(0, rm.Stderr);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task ImageRequestsThatCannotBeMetCreateNothing()
    {
        var before = (await fixture.Client.ListAsync(cancellationToken: Ct)).Count;
        var name = TestHost.NewId("img");

        var both = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(Request(["true"], r => { r.Image = FeatureDaemonFixture.TinyImage; r.Name = name; }), Ct));
        var unknown = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(Request(["true"], r => { r.Image = "localhost/absent:1"; r.Name = name; }, rootfs: string.Empty), Ct));
        var notInImage = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(Request(["python3"], r => { r.Image = FeatureDaemonFixture.TinyImage; r.Name = name; }, rootfs: string.Empty), Ct));

        both.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        both.Status.Detail.ShouldContain("choose one");
        unknown.StatusCode.ShouldBe(StatusCode.NotFound);
        unknown.Status.Detail.ShouldStartWith("no image 'localhost/absent:1' in the daemon's image store");
        notInImage.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        (await fixture.Client.ListAsync(cancellationToken: Ct)).Count.ShouldBe(before);
        (await TestHost.LeaksAsync(name)).ShouldBeEmpty();
    }

    [Fact]
    public async Task PsThroughTheDaemonFiltersByLabelAndState()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var done = fixture.Track(await fixture.Client.CreateAsync(Request(["true"], r => r.Labels["ps"] = tag), Ct));
        await fixture.Client.WaitAsync(done, Ct);
        var running = fixture.Track(await fixture.Client.CreateAsync(Request(["sleep", "600"], r => r.Labels["ps"] = tag), Ct));
        var other = fixture.Track(await fixture.Client.CreateAsync(Request(["true"], r => r.Labels["ps"] = "other"), Ct));
        await WaitForStateAsync(running, SandboxState.Running);
        var host = "unix://" + fixture.Daemon.SocketPath;

        var all = await CorralProcess.RunAsync(["--host", host, "ps", "--label", $"ps={tag}"]);
        var exited = await CorralProcess.RunAsync(["--host", host, "ps", "--label", $"ps={tag}", "--state", "exited", "--json"]);
        var bad = await CorralProcess.RunAsync(["--host", host, "ps", "--state", "sleeping"]);

        all.ExitCode.ShouldBe(0, all.Stderr);
        all.Stdout.ShouldContain(done);
        all.Stdout.ShouldContain(running);
        all.Stdout.ShouldNotContain(other);
        all.Stdout.ShouldContain($"ps={tag}");
        exited.ExitCode.ShouldBe(0, exited.Stderr);
        using (var json = JsonDocument.Parse(exited.Stdout))
        {
            json.RootElement.GetProperty("sandboxes").EnumerateArray().Select(s => s.GetProperty("id").GetString()).ShouldBe([done]);
        }

        bad.ExitCode.ShouldBe(125);
        bad.Stderr.ShouldBe("corral: invalid --state 'sleeping': use created, running, exited or failed\n");

        await fixture.Client.KillAsync(running, "KILL", TimeSpan.Zero, Ct);
        foreach (var id in new[] { done, running, other })
        {
            await fixture.Client.WaitAsync(id, Ct);
            await fixture.Client.RemoveAsync(id, Ct);
        }
    }

    private CreateRequest Request(string[] command, Action<CreateRequest>? configure = null, string? rootfs = null) =>
        DaemonSandboxTests.Request("runc", command, configure, rootfs ?? fixture.Rootfs);

    private async Task<(string? Id, RpcException? Error)> TryCreateAsync(CreateRequest request)
    {
        try
        {
            return (await fixture.Client.CreateAsync(request, Ct), null);
        }
        catch (RpcException ex)
        {
            return (null, ex);
        }
    }

    private async Task WaitForStateAsync(string id, SandboxState state)
    {
        var watch = Stopwatch.StartNew();
        while ((await fixture.Client.InspectAsync(id, Ct)).State != state)
        {
            watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30), $"{id} never reached {state}");
            await Task.Delay(20, Ct);
        }
    }

    private static async Task<(int Code, string Stderr)> ServeAsync(params string[] args)
    {
        var (result, socketLeft) = await DaemonProcess.RefuseAsync(args);
        socketLeft.ShouldBeFalse("a refused daemon must not listen");
        return (result.ExitCode, result.Stderr);
    }
}
