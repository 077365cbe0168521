using System.Diagnostics;
using System.Text;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>Sandboxes end to end through the client and the real daemon, on both runtimes.</summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonSandboxTests(DaemonFixture fixture)
{
    private const string Allocate300Mb = "b = b'\\x01' * (300 << 20); print('survived')";

    public static TheoryData<string> Runtimes => TestRuntimes.All;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ExitCodesComeBackThroughWait(string runtime)
    {
        // The foundation's exit cases, through the API: os._exit, sys.exit, an uncaught exception, a
        // background child outliving PID 1 (the exit is still prompt).
        var cases = new (string[] Command, int ExitCode)[]
        {
            (["true"], 0), (["false"], 1), (["sh", "-c", "exit 3"], 3),
            (["python3", "-c", "import os; print('bye', flush=True); os._exit(0)"], 0),
            (["python3", "-c", "import sys; sys.exit(0)"], 0),
            (["python3", "-c", "raise ValueError('boom')"], 1),
            (["sh", "-c", "sleep 100 & exit 0"], 0),
        };
        foreach (var (command, expected) in cases)
        {
            var id = await CreateAsync(runtime, command);
            var exit = await fixture.Client.WaitAsync(id, Ct);

            exit.ExitCode.ShouldBe(expected, string.Join(' ', command));
            exit.DurationMs.ShouldBeLessThan(30_000, "the exit must not wait for a background child");
            exit.Id.ShouldBe(id);
            exit.Runtime.ShouldBe(runtime);
            exit.Command.ShouldBe(command);
            exit.HasSignal.ShouldBeFalse();
            exit.OomKilled.ShouldBeFalse();
            var info = await fixture.Client.InspectAsync(id, Ct);
            info.State.ShouldBe(SandboxState.Exited);
            info.Exit.ExitCode.ShouldBe(expected);
            File.Exists(Path.Combine(fixture.Daemon.StateDir, "sandboxes", id, "exit.json")).ShouldBeTrue();
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            await fixture.Client.RemoveAsync(id, Ct);
            Directory.Exists(Path.Combine(fixture.Daemon.StateDir, "sandboxes", id)).ShouldBeFalse();
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task OomKillIsReportedAndItsEventComesBeforeTheExit(string runtime)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var name = fixture.Track(TestHost.NewId("doom"));
        var events = CollectEventsAsync(name, stop.Token);

        var id = await CreateAsync(runtime, ["python3", "-c", Allocate300Mb], r =>
        {
            r.MemoryBytes = 64L << 20;
            r.Name = name;
        });
        var exit = await fixture.Client.WaitAsync(id, Ct);

        exit.ExitCode.ShouldBe(137, exit.StderrTail);
        exit.OomKilled.ShouldBeTrue();
        exit.OomReason.ShouldBe("kernel");
        exit.MemoryLimitBytes.ShouldBe(64L << 20);
        exit.StdoutTail.ShouldNotContain("survived");
        exit.OomEvents.ShouldContain(e => e.Kind == "victim" && e.VictimPid > 0 && e.VictimProcess.Length > 0, "the record names the process the kernel chose");
        var seen = await events.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var types = seen.Select(e => e.Type).ToList();
        types.ShouldContain(EventType.Oom);
        types.IndexOf(EventType.Created).ShouldBe(0);
        types.IndexOf(EventType.Oom).ShouldBeLessThan(types.IndexOf(EventType.Exited), string.Join(",", types));
        seen[^1].Exit.OomKilled.ShouldBeTrue();
        await fixture.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task LogsReturnStdoutAndStderrTagged(string runtime)
    {
        var id = await CreateAsync(runtime, ["sh", "-c", "echo to-out; echo to-err >&2; echo more-out"]);
        await fixture.Client.WaitAsync(id, Ct);

        var (stdout, stderr) = await ReadLogsAsync(id, follow: false);

        stdout.ShouldBe("to-out\nmore-out\n");
        stderr.ShouldBe("to-err\n");
        await fixture.Client.RemoveAsync(id, Ct);
    }

    [Fact]
    public async Task FollowedLogsStreamUntilTheSandboxEnds()
    {
        var id = await CreateAsync("runc", ["sh", "-c", "echo first; sleep 1; echo second >&2; sleep 0.5; echo third"]);

        var watch = Stopwatch.StartNew();
        var (stdout, stderr) = await ReadLogsAsync(id, follow: true);

        watch.Elapsed.ShouldBeGreaterThan(TimeSpan.FromSeconds(1.2), "follow must wait for output still to come");
        stdout.ShouldBe("first\nthird\n");
        stderr.ShouldBe("second\n");
        (await fixture.Client.InspectAsync(id, Ct)).State.ShouldBe(SandboxState.Exited);
        await fixture.Client.RemoveAsync(id, Ct);
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task KillEscalatesToSigkillAfterTheGrace(string runtime)
    {
        // SIGTERM ignored (inherited through exec): only the SIGKILL after the grace ends it.
        var id = await CreateAsync(runtime, ["sh", "-c", "trap '' TERM; echo ready; exec sleep 600"]);
        await WaitForOutputAsync(id, "ready");

        var watch = Stopwatch.StartNew();
        await fixture.Client.KillAsync(id, "TERM", TimeSpan.FromSeconds(1), Ct);
        var exit = await fixture.Client.WaitAsync(id, Ct);

        watch.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromSeconds(0.9));
        exit.ExitCode.ShouldBe(137);
        exit.Signal.ShouldBe("SIGKILL");
        exit.OomKilled.ShouldBeFalse();
        await fixture.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task KillWithinTheGraceRunsTheHandler()
    {
        var script = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))\nprint('ready', flush=True)\ntime.sleep(60)";
        var id = await CreateAsync("runc", ["python3", "-c", script]);
        await WaitForStateAsync(id, SandboxState.Running);
        await WaitForOutputAsync(id, "ready");

        var watch = Stopwatch.StartNew();
        await fixture.Client.KillAsync(id, "TERM", TimeSpan.FromSeconds(20), Ct);
        var exit = await fixture.Client.WaitAsync(id, Ct);

        watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(10));
        exit.ExitCode.ShouldBe(143);
        await fixture.Client.RemoveAsync(id, Ct);
    }

    [Fact]
    public async Task RemovingARunningSandboxIsRefused()
    {
        await using var sandbox = await fixture.Client.StartAsync(Request("runc", ["sleep", "600"]), Ct);
        fixture.Track(sandbox.Id);
        await WaitForStateAsync(sandbox.Id, SandboxState.Running);

        var refused = await Should.ThrowAsync<RpcException>(() => fixture.Client.RemoveAsync(sandbox.Id, Ct));

        refused.StatusCode.ShouldBe(StatusCode.FailedPrecondition);
        refused.Status.Detail.ShouldContain("still running");
        (await sandbox.InspectAsync(Ct)).State.ShouldBe(SandboxState.Running);
        await sandbox.DisposeAsync();
        (await Should.ThrowAsync<RpcException>(() => fixture.Client.InspectAsync(sandbox.Id, Ct))).StatusCode.ShouldBe(StatusCode.NotFound);
        (await TestHost.LeaksAsync(sandbox.Id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ForcedRemoveKillsARunningSandboxAndLeavesNothing(string runtime)
    {
        var id = await CreateAsync(runtime, ["sleep", "600"]);
        await WaitForStateAsync(id, SandboxState.Running);
        var host = "unix://" + fixture.Daemon.SocketPath;

        var rm = await CorralProcess.RunAsync(["--host", host, "rm", "-f", id]);

        rm.ExitCode.ShouldBe(0, rm.Stderr);
        (await Should.ThrowAsync<RpcException>(() => fixture.Client.InspectAsync(id, Ct))).StatusCode.ShouldBe(StatusCode.NotFound);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        Directory.Exists(Path.Combine(fixture.Daemon.StateDir, "sandboxes", id)).ShouldBeFalse();
    }

    [Fact]
    public async Task TimeoutKillsTheSandboxAndSaysSo()
    {
        var id = await CreateAsync("runc", ["sleep", "60"], r => r.Timeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(1)));

        var exit = await fixture.Client.WaitAsync(id, Ct);

        exit.TimedOut.ShouldBeTrue();
        exit.ExitCode.ShouldBe(137);
        exit.DurationMs.ShouldBeLessThan(10_000);
        var kill = await Should.ThrowAsync<RpcException>(() => fixture.Client.KillAsync(id, "KILL", null, Ct));
        kill.StatusCode.ShouldBe(StatusCode.FailedPrecondition);
        await fixture.Client.RemoveAsync(id, Ct);
    }

    [Fact]
    public async Task ANameInUseIsAlreadyExists()
    {
        var name = fixture.Track(TestHost.NewId("dup"));
        await using var first = await fixture.Client.StartAsync(Request("runc", ["sleep", "600"], r => r.Name = name), Ct);
        first.Id.ShouldBe(name);
        await WaitForStateAsync(name, SandboxState.Running);

        var ex = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(Request("runc", ["true"], r => r.Name = name), Ct));

        ex.StatusCode.ShouldBe(StatusCode.AlreadyExists);
        (await first.InspectAsync(Ct)).State.ShouldBe(SandboxState.Running);
    }

    [Fact]
    public async Task KillBeforeTheRuntimeStartedItEndsTheRun()
    {
        var id = await CreateAsync("gvisor", ["sleep", "600"]);

        await fixture.Client.KillAsync(id, "KILL", TimeSpan.Zero, Ct);
        var exit = await fixture.Client.WaitAsync(id, Ct).WaitAsync(TimeSpan.FromSeconds(30), Ct);

        // Before the runtime reported the pid the run is stopped (SIGTERM, then SIGKILL); after, SIGKILL is sent.
        exit.ExitCode.ShouldBeOneOf(137, 143);
        await fixture.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task UnknownIdsAreNotFound()
    {
        var id = TestHost.NewId("nope");
        var client = fixture.Client;

        foreach (var call in new Func<Task>[]
        {
            () => client.WaitAsync(id, Ct),
            () => client.InspectAsync(id, Ct),
            () => client.KillAsync(id, "KILL", null, Ct),
            () => client.RemoveAsync(id, Ct),
            async () => await client.LogsAsync(id, false, Ct).ToListAsync(Ct),
        })
        {
            var ex = await Should.ThrowAsync<RpcException>(call);
            ex.StatusCode.ShouldBe(StatusCode.NotFound);
            ex.Status.Detail.ShouldContain(id);
        }
    }

    [Fact]
    public async Task BadRequestsAreInvalidArgumentAndCreateNothing()
    {
        var before = (await fixture.Client.ListAsync(cancellationToken: Ct)).Count;
        var name = TestHost.NewId("bad");
        var cases = new (string What, CreateRequest Request)[]
        {
            ("memory below the minimum", Request("runc", ["true"], r => { r.MemoryBytes = 1024; r.Name = name; })),
            ("negative memory", Request("runc", ["true"], r => { r.MemoryBytes = -1; r.Name = name; })),
            ("relative rootfs", Request("runc", ["true"], r => { r.Rootfs = "relative/rootfs"; r.Name = name; })),
            ("missing rootfs", Request("runc", ["true"], r => { r.Rootfs = "/nonexistent/rootfs"; r.Name = name; })),
            ("bad name", Request("runc", ["true"], r => r.Name = "Not A Name!")),
            ("command not in the rootfs", Request("gvisor", ["/no/such/binary"], r => r.Name = name)),
            ("relative workdir", Request("runc", ["true"], r => { r.Workdir = "tmp"; r.Name = name; })),
        };

        foreach (var (what, request) in cases)
        {
            var ex = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(request, Ct), what);
            ex.StatusCode.ShouldBe(StatusCode.InvalidArgument, what);
            ex.Status.Detail.ShouldNotBeNullOrWhiteSpace(what);
        }

        (await fixture.Client.ListAsync(cancellationToken: Ct)).Count.ShouldBe(before);
        Directory.Exists(Path.Combine(fixture.Daemon.StateDir, "sandboxes", name)).ShouldBeFalse();
        (await TestHost.LeaksAsync(name)).ShouldBeEmpty();
    }

    [Fact]
    public async Task ListFiltersByLabelAndState()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var done = await CreateAsync("runc", ["true"], r => r.Labels["test"] = tag);
        await fixture.Client.WaitAsync(done, Ct);
        await using var running = await fixture.Client.StartAsync(Request("runc", ["sleep", "600"], r => r.Labels["test"] = tag), Ct);
        fixture.Track(running.Id);
        await WaitForStateAsync(running.Id, SandboxState.Running);

        var all = await fixture.Client.ListAsync(new Dictionary<string, string> { ["test"] = tag }, cancellationToken: Ct);
        var exited = await fixture.Client.ListAsync(new Dictionary<string, string> { ["test"] = tag }, [SandboxState.Exited], Ct);

        all.Select(s => s.Id).Order().ShouldBe(new[] { done, running.Id }.Order());
        exited.Select(s => s.Id).ShouldBe([done]);
        exited[0].Labels["test"].ShouldBe(tag);
        await fixture.Client.RemoveAsync(done, Ct);
    }

    internal static CreateRequest Request(string runtime, string[] command, Action<CreateRequest>? configure = null, string? rootfs = null)
    {
        var request = new CreateRequest
        {
            Rootfs = rootfs ?? TestHost.RootfsAsync().GetAwaiter().GetResult(),
            Runtime = TestRuntimes.Proto(runtime),
        };
        request.Command.AddRange(command);
        configure?.Invoke(request);
        return request;
    }

    private async Task<string> CreateAsync(string runtime, string[] command, Action<CreateRequest>? configure = null)
    {
        var id = await fixture.Client.CreateAsync(Request(runtime, command, configure, fixture.Rootfs), Ct);
        return fixture.Track(id);
    }

    private async Task<(string Stdout, string Stderr)> ReadLogsAsync(string id, bool follow)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        await foreach (var chunk in fixture.Client.LogsAsync(id, follow, Ct))
        {
            (chunk.Stream == LogStream.Stdout ? stdout : stderr).Append(chunk.Data.ToStringUtf8());
        }

        return (stdout.ToString(), stderr.ToString());
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

    private async Task WaitForOutputAsync(string id, string text)
    {
        var watch = Stopwatch.StartNew();
        while (!(await ReadLogsAsync(id, follow: false)).Stdout.Contains(text, StringComparison.Ordinal))
        {
            watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30), $"{id} never printed {text}");
            await Task.Delay(50, Ct);
        }
    }

    private async Task<List<Event>> CollectEventsAsync(string id, CancellationToken cancellationToken)
    {
        var seen = new List<Event>();
        await foreach (var e in fixture.Client.EventsAsync(follow: true, cancellationToken))
        {
            if (e.Id != id)
            {
                continue;
            }

            seen.Add(e);
            if (e.Type is EventType.Exited or EventType.Failed)
            {
                break;
            }
        }

        return seen;
    }
}
