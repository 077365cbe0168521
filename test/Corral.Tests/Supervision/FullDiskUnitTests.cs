using System.Text;
using Corral.Shim;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Supervision;

/// <summary>Output is drained and counted, never blocked, when its destination refuses writes (issue #10, item 11).</summary>
public sealed class FullDiskUnitTests
{
    [Fact]
    public async Task ThePumpKeepsDrainingWhenTheSinkFailsAndCountsWhatItDropped()
    {
        var data = Encoding.UTF8.GetBytes(new string('x', 200_000) + "the end");
        var pump = new OutputPump(new MemoryStream(data), new FailingStream(), tailBytes: 64);

        await pump.Completion.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);

        pump.Total.ShouldBe(data.Length, "the whole pipe is read, whatever the sink does");
        pump.DroppedBytes.ShouldBe(data.Length);
        pump.SinkError.ShouldNotBeNull().ShouldContain("No space left on device");
        pump.Tail().ShouldEndWith("the end");
    }

    [Fact]
    public void TheSandboxLogOnAFullDeviceDropsAndCountsInsteadOfThrowing()
    {
        // /dev/full refuses every write with ENOSPC, as a full filesystem does.
        var failures = new List<string>();
        using var log = new SandboxLog("/dev/full", capBytes: 1 << 20, onWriteFailed: failures.Add);

        log.Append(OutputStream.Stdout, new byte[1000]);
        log.Append(OutputStream.Stderr, new byte[500]);

        log.DroppedBytes.ShouldBe(1500);
        failures.Count.ShouldBe(1);
        failures[0].ShouldContain("No space left on device");
    }

    private sealed class FailingStream : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new IOException("No space left on device");

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromException(new IOException("No space left on device"));
    }
}
