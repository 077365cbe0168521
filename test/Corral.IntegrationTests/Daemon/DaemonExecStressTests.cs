using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// Execs ended early (cancelled by the caller, killed with KillExec, stdin still open or closed by the
/// process, their sandbox removed) interleaved with unary calls, on a daemon of the test's own whose log
/// is read at the end: no call's stream may be touched after its handler returned (issue #10, item 21:
/// a stdin reader left pending landed on a later Remove, which answered UNKNOWN).
/// </summary>
[Collection(DaemonLoadCollection.Name)]
public sealed class DaemonExecStressTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ExecsEndedEarlyNeverDisturbLaterCalls()
    {
        var rootfs = await TestHost.RootfsAsync();
        var daemon = await DaemonProcess.StartAsync();
        var client = daemon.Client;
        var ids = new List<string>();
        var failures = new List<string>();
        var passed = false;
        try
        {
            var runc = await client.CreateAsync(DaemonSandboxTests.Request("runc", [], rootfs: rootfs), Ct);
            var gvisor = await client.CreateAsync(DaemonSandboxTests.Request("gvisor", [], rootfs: rootfs), Ct);
            ids.AddRange([runc, gvisor]);
            await Task.WhenAll(new Corral.Client.Sandbox(client, runc).WaitRunningAsync(Ct), new Corral.Client.Sandbox(client, gvisor).WaitRunningAsync(Ct));

            const int Execs = 96;
            using var gate = new SemaphoreSlim(12);
            var work = Enumerable.Range(0, Execs).Select(async i =>
            {
                await gate.WaitAsync(Ct);
                try
                {
                    var sandbox = i % 3 == 0 ? gvisor : runc;
                    var outcome = await EndEarlyAsync(client, sandbox, i % 4);
                    if (outcome is not null)
                    {
                        lock (failures)
                        {
                            failures.Add($"exec {i} (kind {i % 4}) in {sandbox}: {outcome}");
                        }
                    }

                    // Unary calls right behind it, on the same connection: each must answer correctly.
                    (await client.InspectAsync(sandbox, Ct)).State.ShouldBe(SandboxState.Running);
                    (await client.ListAsync(cancellationToken: Ct)).Select(s => s.Id).ShouldContain(sandbox);
                    if (i % 8 == 0)
                    {
                        var shortLived = await client.CreateAsync(DaemonSandboxTests.Request("runc", ["true"], rootfs: rootfs), Ct);
                        lock (ids)
                        {
                            ids.Add(shortLived);
                        }

                        (await client.WaitAsync(shortLived, Ct)).ExitCode.ShouldBe(0);
                        await client.RemoveAsync(shortLived, Ct);
                        (await Should.ThrowAsync<RpcException>(() => client.InspectAsync(shortLived, Ct))).StatusCode.ShouldBe(StatusCode.NotFound);
                    }
                }
                finally
                {
                    gate.Release();
                }
            });
            await Task.WhenAll(work);

            // A sandbox removed with execs still running in it, then more unary calls.
            var doomed = await client.CreateAsync(DaemonSandboxTests.Request("runc", [], rootfs: rootfs), Ct);
            ids.Add(doomed);
            await new Corral.Client.Sandbox(client, doomed).WaitRunningAsync(Ct);
            var orphans = Enumerable.Range(0, 6).Select(_ => client.ExecAsync(doomed, ["sleep", "600"], cancellationToken: Ct)).ToList();
            await WaitForRunningExecsAsync(client, doomed, 6);
            await client.RemoveAsync(doomed, Ct, force: true);
            foreach (var orphan in orphans)
            {
                var ended = await orphan.WaitAsync(TimeSpan.FromSeconds(60), Ct);
                ended.Exit.ExitCode.ShouldBeGreaterThan(128, "an exec whose sandbox was removed is killed");
            }

            (await client.InspectAsync(runc, Ct)).State.ShouldBe(SandboxState.Running);
            failures.ShouldBeEmpty();
            passed = true;
        }
        finally
        {
            await Task.WhenAll(ids.Select(async id =>
            {
                try
                {
                    await client.RemoveAsync(id, Ct, force: true);
                }
                catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
                {
                }
            }));
            if (!passed)
            {
                // A failed run must not leave its daemon behind.
                await daemon.DisposeAsync();
            }
        }

        (await daemon.StopAsync(TimeSpan.FromSeconds(60))).ShouldBe(0);
        var log = await daemon.Output;
        await daemon.DisposeAsync();
        log.ShouldNotContain("Reading is already in progress");
        log.ShouldNotContain("ObjectDisposedException");
        log.ShouldNotContain("Error when executing service method");
        foreach (var id in ids)
        {
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }

    /// <summary>One exec ended early in one of four ways; null when it ended as it should, else what went wrong.</summary>
    private static async Task<string?> EndEarlyAsync(Corral.Client.CorralClient client, string sandbox, int kind)
    {
        switch (kind)
        {
            case 0:
            {
                // Cancelled by the caller once it runs.
                using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
                var started = new TaskCompletionSource();
                var call = client.ExecAsync(Start(sandbox, ["sleep", "600"]), started: _ => started.TrySetResult(), cancellationToken: cancel.Token);
                await Task.WhenAny(started.Task, call);
                await cancel.CancelAsync();
                var ex = await Should.ThrowAsync<Exception>(() => call);
                return ex is RpcException { StatusCode: StatusCode.Cancelled } or OperationCanceledException ? null : $"cancel gave {ex.GetType().Name}: {ex.Message}";
            }

            case 1:
            {
                // Killed by KillExec, its stdin still open (the caller keeps the request stream).
                var execId = new TaskCompletionSource<string>();
                using var stdin = new EndlessStdin(TimeSpan.FromMilliseconds(50));
                var call = client.ExecAsync(Start(sandbox, ["sleep", "600"]), stdin: stdin, started: s => execId.TrySetResult(s.ExecId), cancellationToken: Ct);
                await client.KillExecAsync(sandbox, await execId.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct), cancellationToken: Ct);
                var exit = await call;
                return exit.ExitCode == 137 ? null : $"KillExec gave exit {exit.ExitCode}";
            }

            case 2:
            {
                // Ends by itself while the caller's stdin never ends: the handler returns with a read pending.
                using var stdin = new EndlessStdin(Timeout.InfiniteTimeSpan);
                var exit = await client.ExecAsync(Start(sandbox, ["true"]), stdin: stdin, cancellationToken: Ct);
                return exit.ExitCode == 0 ? null : $"true gave exit {exit.ExitCode}";
            }

            default:
            {
                // Closes its stdin early while the caller keeps sending.
                using var stdin = new EndlessStdin(TimeSpan.FromMilliseconds(5));
                using var stdout = new MemoryStream();
                var exit = await client.ExecAsync(Start(sandbox, ["sh", "-c", "exec 0<&-; echo closed"]), stdin: stdin, stdout: stdout, cancellationToken: Ct);
                var text = System.Text.Encoding.UTF8.GetString(stdout.ToArray());
                return exit.ExitCode == 0 && text == "closed\n" ? null : $"closing stdin gave exit {exit.ExitCode}, stdout '{text}'";
            }
        }
    }

    private static async Task WaitForRunningExecsAsync(Corral.Client.CorralClient client, string sandbox, int count)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while ((await client.ListExecsAsync(sandbox, Ct)).Count(e => e.State == ExecState.Running) < count)
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, "the execs never all ran");
            await Task.Delay(20, Ct);
        }
    }

    private static ExecStart Start(string sandboxId, string[] command)
    {
        var start = new ExecStart { SandboxId = sandboxId };
        start.Command.AddRange(command);
        return start;
    }

    /// <summary>Stdin that never ends: a line every <c>interval</c> (never one with an infinite interval) until cancelled.</summary>
    internal sealed class EndlessStdin(TimeSpan interval) : Stream
    {
        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Task.Delay(interval, cancellationToken);
            buffer.Span[0] = (byte)'\n';
            return 1;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
