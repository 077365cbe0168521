using System.Diagnostics;
using System.Text;
using Corral.Client;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>Processes run inside running sandboxes through the real daemon and client, on both runtimes.</summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonExecTests(DaemonFixture fixture)
{
    public static TheoryData<string> Runtimes => DaemonSandboxTests.Runtimes;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ExecPassesStdinOutputAndExitCodesInAnIdleSandbox(string runtime)
    {
        // No command: the sandbox idles and takes execs; an exec right after Create waits for the start.
        await using var sandbox = await StartIdleAsync(runtime, r => r.Env["FROM_SANDBOX"] = "sandbox-env");

        var codes = await sandbox.ExecAsync(["sh", "-c", "echo out; echo err >&2; exit 3"], cancellationToken: Ct);
        var cat = await sandbox.ExecAsync(["cat"], "line one\nline two\n", Ct);
        var killed = await sandbox.ExecAsync(["sh", "-c", "kill -9 $$"], cancellationToken: Ct);
        var output = new MemoryStream();
        var envExit = await fixture.Client.ExecAsync(Start(sandbox.Id, ["sh", "-c", "echo $FROM_SANDBOX $FROM_EXEC; pwd"], s => { s.Env["FROM_EXEC"] = "exec-env"; s.Workdir = "/tmp"; }), stdout: output, cancellationToken: Ct);

        codes.ExitCode.ShouldBe(3);
        codes.Stdout.ShouldBe("out\n");
        codes.Stderr.ShouldBe("err\n");
        codes.Exit.HasSignal.ShouldBeFalse();
        cat.ExitCode.ShouldBe(0, cat.Stderr);
        cat.Stdout.ShouldBe("line one\nline two\n");
        killed.ExitCode.ShouldBe(137);
        killed.Exit.Signal.ShouldBe("SIGKILL");
        envExit.ExitCode.ShouldBe(0);
        Encoding.UTF8.GetString(output.ToArray()).ShouldBe("sandbox-env exec-env\n/tmp\n");

        // The sandbox itself is untouched by its execs; SIGTERM ends the idle PID 1 at once.
        (await sandbox.InspectAsync(Ct)).State.ShouldBe(SandboxState.Running);
        var watch = Stopwatch.StartNew();
        await sandbox.KillAsync("TERM", TimeSpan.FromSeconds(30), Ct);
        var exit = await sandbox.WaitAsync(Ct);
        exit.ExitCode.ShouldBe(143);
        watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(20), "the idle command must end on SIGTERM, not wait for the grace");
        AssertNoExecFiles(sandbox.Id);
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task AnExecThatClosesItsStdinWhileTheCallerStillWritesEndsAsItChose(string runtime)
    {
        // runc's foreground exec took a SIGPIPE in its own stdin copy once the process had closed its
        // stdin, and forwarded it to the process: this ended 141 before its echo, every time (issue #10).
        await using var sandbox = await StartIdleAsync(runtime);
        for (var i = 0; i < 3; i++)
        {
            using var stdin = new DaemonExecStressTests.EndlessStdin(TimeSpan.FromMilliseconds(5));
            using var stdout = new MemoryStream();
            var exit = await fixture.Client.ExecAsync(Start(sandbox.Id, ["sh", "-c", "exec 0<&-; sleep 0.3; echo closed; exit 7"]), stdin: stdin, stdout: stdout, cancellationToken: Ct);
            exit.ExitCode.ShouldBe(7, $"try {i}");
            Encoding.UTF8.GetString(stdout.ToArray()).ShouldBe("closed\n");
        }

        // A process that keeps reading still gets everything, and its stdin's end.
        var cat = await sandbox.ExecAsync(["sh", "-c", "cat; echo done"], "one\ntwo\n", Ct);
        cat.ExitCode.ShouldBe(0, cat.Stderr);
        cat.Stdout.ShouldBe("one\ntwo\ndone\n");
        AssertNoExecFiles(sandbox.Id);
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task AnExecThatRunsTheSandboxOutOfMemoryEnds137(string runtime)
    {
        // Under gVisor the kernel's kill ends the whole sandbox and runsc exec itself answered 128
        // ("connecting to control server"): the exec's process died with its sandbox, 137 as under runc.
        await using var sandbox = await StartIdleAsync(runtime, r => r.MemoryBytes = 64L << 20);
        await sandbox.WaitRunningAsync(Ct);

        var exec = await sandbox.ExecAsync(["python3", "-c", "b = b'\\x01' * (300 << 20); print('survived')"], cancellationToken: Ct);

        exec.ExitCode.ShouldBe(137, exec.Stderr);
        exec.Exit.SandboxEnded.ShouldBe(runtime == "gvisor");
        exec.Stdout.ShouldNotContain("survived");
        if (runtime == "gvisor")
        {
            var exit = await sandbox.WaitAsync(Ct);
            exit.OomKilled.ShouldBeTrue("gVisor ends the whole sandbox on an OOM kill");
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task SeveralExecsRunAtOnceAndAreListedSignalledAndKilledWithTheirCall(string runtime)
    {
        await using var sandbox = await StartIdleAsync(runtime);
        using var cancelThird = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var ids = new string[3];
        Task<ExecExit> Long(int slot, CancellationToken ct) =>
            fixture.Client.ExecAsync(Start(sandbox.Id, ["sleep", "600"]), started: s => Volatile.Write(ref ids[slot], s.ExecId), cancellationToken: ct);

        var first = Long(0, Ct);
        var second = Long(1, Ct);
        var third = Long(2, cancelThird.Token);
        var quick = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => sandbox.ExecAsync(["sh", "-c", $"echo quick-{i}"], cancellationToken: Ct)));
        var watch = Stopwatch.StartNew();
        while ((await sandbox.ListExecsAsync(Ct)).Count(e => e.State == ExecState.Running) < 3)
        {
            watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(60), "three long execs never ran at once");
            await Task.Delay(20, Ct);
        }

        quick.Select(q => q.Stdout).ShouldBe(Enumerable.Range(0, 6).Select(i => $"quick-{i}\n"));
        var running = (await sandbox.ListExecsAsync(Ct)).Where(e => e.State == ExecState.Running).ToList();
        running.ShouldAllBe(e => e.Pid > 0 && e.Command.SequenceEqual(new[] { "sleep", "600" }));
        ids.Order().ShouldBe(running.Select(e => e.ExecId).Order());

        await fixture.Client.KillExecAsync(sandbox.Id, ids[0], "TERM", Ct);
        await fixture.Client.KillExecAsync(sandbox.Id, ids[1], cancellationToken: Ct);
        (await first).ExitCode.ShouldBe(143);
        (await second).ExitCode.ShouldBe(137);
        await cancelThird.CancelAsync();
        await Should.ThrowAsync<RpcException>(() => third);

        // The cancelled call's process was killed: nothing of the three stays running.
        watch.Restart();
        while ((await sandbox.ListExecsAsync(Ct)).Any(e => e.State == ExecState.Running))
        {
            watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30), "the exec of a cancelled call kept running");
            await Task.Delay(20, Ct);
        }

        var ps = await sandbox.ExecAsync(["sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"], cancellationToken: Ct);
        ps.ExitCode.ShouldBe(0, ps.Stderr);
        ps.Stdout.ShouldContain("sleep 86400");
        ps.Stdout.ShouldNotContain("sleep 600");
        var again = await Should.ThrowAsync<RpcException>(() => fixture.Client.KillExecAsync(sandbox.Id, ids[0], cancellationToken: Ct));
        again.StatusCode.ShouldBe(StatusCode.FailedPrecondition);
        var unknown = await Should.ThrowAsync<RpcException>(() => fixture.Client.KillExecAsync(sandbox.Id, "x-00000000", cancellationToken: Ct));
        unknown.StatusCode.ShouldBe(StatusCode.NotFound);
        (await sandbox.ListExecsAsync(Ct)).Count.ShouldBe(10);
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task AnExecPastItsTimeoutIsKilled(string runtime)
    {
        await using var sandbox = await StartIdleAsync(runtime);

        var exit = await fixture.Client.ExecAsync(Start(sandbox.Id, ["sleep", "600"], s => s.Timeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(1))), cancellationToken: Ct);

        exit.TimedOut.ShouldBeTrue();
        exit.ExitCode.ShouldBe(137);
        exit.DurationMs.ShouldBeLessThan(30_000);
    }

    [Fact]
    public async Task BadExecRequestsGetTheRightStatusAndLeaveNothing()
    {
        await using var sandbox = await StartIdleAsync("runc");
        var done = fixture.Track(await fixture.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["true"], rootfs: fixture.Rootfs), Ct));
        await fixture.Client.WaitAsync(done, Ct);

        var unknown = await ExecErrorAsync(Start(TestHost.NewId("nope"), ["true"]));
        var ended = await ExecErrorAsync(Start(done, ["true"]));
        var missing = await ExecErrorAsync(Start(sandbox.Id, ["/no/such/binary"]));
        var relative = await ExecErrorAsync(Start(sandbox.Id, ["true"], s => s.Workdir = "tmp"));
        var noDir = await ExecErrorAsync(Start(sandbox.Id, ["true"], s => s.Workdir = "/no/such/dir"));
        var empty = await ExecErrorAsync(Start(sandbox.Id, []));
        var badEnv = await ExecErrorAsync(Start(sandbox.Id, ["true"], s => s.Env["A=B"] = "x"));
        using var call = fixture.Client.Raw.Exec(cancellationToken: Ct);
        await call.RequestStream.WriteAsync(new ExecRequest { Stdin = Google.Protobuf.ByteString.CopyFromUtf8("no start first") }, Ct);
        var noStart = await Should.ThrowAsync<RpcException>(async () => await call.ResponseStream.MoveNext(Ct));

        unknown.StatusCode.ShouldBe(StatusCode.NotFound);
        ended.StatusCode.ShouldBe(StatusCode.FailedPrecondition);
        ended.Status.Detail.ShouldContain("has ended");
        missing.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        missing.Status.Detail.ShouldBe("command not found in the container's root filesystem: /no/such/binary");
        relative.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        noDir.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        empty.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        badEnv.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        noStart.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        (await sandbox.ListExecsAsync(Ct)).ShouldBeEmpty();
        AssertNoExecFiles(sandbox.Id);
        (await sandbox.ExecAsync(["true"], cancellationToken: Ct)).ExitCode.ShouldBe(0, "the sandbox still takes execs");
        await fixture.Client.RemoveAsync(done, Ct);
    }

    [Fact]
    public async Task CorralExecThroughTheDaemonAndHere()
    {
        await using var sandbox = await StartIdleAsync("runc");
        await sandbox.WaitRunningAsync(Ct);
        var host = "unix://" + fixture.Daemon.SocketPath;

        var exit = await CorralProcess.RunAsync(["--host", host, "exec", sandbox.Id, "--env", "X=from-cli", "--", "sh", "-c", "echo $X; echo oops >&2; exit 5"]);
        var stdin = await CorralProcess.RunAsync(["--host", host, "exec", "-i", sandbox.Id, "--", "cat"], stdin: "through the daemon\n");
        var here = await CorralProcess.RunAsync(["exec", sandbox.Id, "--", "sh", "-c", "echo in-process; exit 6"]);
        var list = await CorralProcess.RunAsync(["--host", host, "execs", sandbox.Id]);
        var unknown = await CorralProcess.RunAsync(["--host", host, "exec", "no-such-sandbox", "--", "true"]);
        var notFound = await CorralProcess.RunAsync(["--host", host, "exec", sandbox.Id, "--", "nosuch"]);

        exit.ExitCode.ShouldBe(5);
        exit.Stdout.ShouldBe("from-cli\n");
        exit.Stderr.ShouldBe("oops\n");
        stdin.ExitCode.ShouldBe(0, stdin.Stderr);
        stdin.Stdout.ShouldBe("through the daemon\n");
        here.ExitCode.ShouldBe(6, here.Stderr);
        here.Stdout.ShouldBe("in-process\n");
        list.ExitCode.ShouldBe(0, list.Stderr);
        list.Stdout.ShouldContain("EXEC");
        list.Stdout.ShouldContain("exited");
        unknown.ExitCode.ShouldBe(1);
        unknown.Stderr.ShouldBe("corral: no such sandbox: no-such-sandbox\n");
        notFound.ExitCode.ShouldBe(127);
        notFound.Stderr.ShouldBe("corral: command not found in the container's root filesystem: nosuch\n");
    }

    private static ExecStart Start(string sandboxId, string[] command, Action<ExecStart>? configure = null)
    {
        var start = new ExecStart { SandboxId = sandboxId };
        start.Command.AddRange(command);
        configure?.Invoke(start);
        return start;
    }

    private async Task<Corral.Client.Sandbox> StartIdleAsync(string runtime, Action<CreateRequest>? configure = null)
    {
        var sandbox = await fixture.Client.StartAsync(DaemonSandboxTests.Request(runtime, [], configure, fixture.Rootfs), Ct);
        fixture.Track(sandbox.Id);
        return sandbox;
    }

    private async Task<RpcException> ExecErrorAsync(ExecStart start) =>
        await Should.ThrowAsync<RpcException>(() => fixture.Client.ExecAsync(start, cancellationToken: Ct), string.Join(' ', start.Command));

    private static void AssertNoExecFiles(string id)
    {
        var bundle = Path.Combine(TestHost.StateDir, "bundles", id);
        (Directory.Exists(bundle) ? Directory.GetFiles(bundle, "exec-*") : []).ShouldBeEmpty();
    }
}
