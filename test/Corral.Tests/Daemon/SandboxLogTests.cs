using System.Text;
using Corral.Daemon.Sandboxes;
using Corral.Shim;
using Microsoft.Extensions.Time.Testing;
using Shouldly;
using Xunit;

namespace Corral.Tests.Daemon;

public sealed class SandboxLogTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("corral-log-test-").FullName;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task FramesComeBackInWriteOrderTaggedByStream()
    {
        using var log = new SandboxLog(Path.Combine(_dir, "output.log"), 1 << 20);
        log.StreamFor(OutputStream.Stdout).Write("one\n"u8);
        log.StreamFor(OutputStream.Stderr).Write("two\n"u8);
        await log.StreamFor(OutputStream.Stdout).WriteAsync(Encoding.UTF8.GetBytes("three\n"), Ct);
        log.Close();

        var frames = await log.ReadAsync(follow: false, Ct).ToListAsync(Ct);

        frames.Select(f => (f.Stream, Encoding.UTF8.GetString(f.Data))).ShouldBe(
        [
            (OutputStream.Stdout, "one\n"),
            (OutputStream.Stderr, "two\n"),
            (OutputStream.Stdout, "three\n"),
        ]);
    }

    [Fact]
    public async Task OutputPastTheCapIsDroppedWithOneMarker()
    {
        var capped = 0;
        using var log = new SandboxLog(Path.Combine(_dir, "output.log"), 10, () => capped++);
        var stdout = log.StreamFor(OutputStream.Stdout);
        stdout.Write("0123456"u8);
        stdout.Write("789abcdef"u8);
        stdout.Write("more"u8);
        log.Close();

        var frames = await log.ReadAsync(follow: false, Ct).ToListAsync(Ct);

        string.Concat(frames.Where(f => f.Stream == OutputStream.Stdout).Select(f => Encoding.UTF8.GetString(f.Data))).ShouldBe("0123456789");
        frames.Count(f => f.Stream == OutputStream.Stderr).ShouldBe(1);
        Encoding.UTF8.GetString(frames[^1].Data).ShouldContain("log limit of 10 bytes reached");
        capped.ShouldBe(1);
        new FileInfo(log.Path).Length.ShouldBeLessThan(200);
    }

    [Fact]
    public async Task AFollowingReaderSeesLaterWritesAndEndsAtClose()
    {
        using var log = new SandboxLog(Path.Combine(_dir, "output.log"), 1 << 20);
        log.StreamFor(OutputStream.Stdout).Write("early\n"u8);
        var reading = log.ReadAsync(follow: true, Ct).ToListAsync(Ct).AsTask();
        await Task.Delay(50, Ct);
        reading.IsCompleted.ShouldBeFalse();

        log.StreamFor(OutputStream.Stderr).Write("late\n"u8);
        log.Close();
        var frames = await reading.WaitAsync(TimeSpan.FromSeconds(5), Ct);

        frames.Select(f => Encoding.UTF8.GetString(f.Data)).ShouldBe(["early\n", "late\n"]);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}

public sealed class EventHubTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task LateSubscribersGetHistoryThenLiveEventsInOrder()
    {
        var hub = new EventHub(100, new FakeTimeProvider());
        hub.Publish(SandboxEventType.Created, "c-1");
        hub.Publish(SandboxEventType.Started, "c-1", pid: 42);
        var reading = hub.ReadAsync(follow: true, Ct).ToListAsync(Ct).AsTask();
        await Task.Delay(50, Ct);
        hub.Publish(SandboxEventType.Oom, "c-1");
        hub.Publish(SandboxEventType.Exited, "c-1");
        hub.Complete();

        var events = await reading.WaitAsync(TimeSpan.FromSeconds(5), Ct);

        events.Select(e => e.Type).ShouldBe([SandboxEventType.Created, SandboxEventType.Started, SandboxEventType.Oom, SandboxEventType.Exited]);
        events.Select(e => e.Sequence).ShouldBe([1L, 2L, 3L, 4L]);
        events[1].Pid.ShouldBe(42);
    }

    [Fact]
    public async Task HistoryIsBoundedAndNonFollowingReadersEndAtOnce()
    {
        var hub = new EventHub(2, new FakeTimeProvider());
        for (var i = 0; i < 5; i++)
        {
            hub.Publish(SandboxEventType.Created, $"c-{i}");
        }

        var events = await hub.ReadAsync(follow: false, Ct).ToListAsync(Ct);

        events.Select(e => e.Id).ShouldBe(["c-3", "c-4"]);
    }
}
