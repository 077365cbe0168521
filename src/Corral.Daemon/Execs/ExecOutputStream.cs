using System.Threading.Channels;
using Google.Protobuf;
using Proto = Corral.Protocol.V1;

namespace Corral.Daemon.Execs;

/// <summary>
/// One of an exec's output pipes as a write-only stream: each write becomes a response message on a
/// bounded channel that one writer drains to the gRPC call, so a slow caller slows the process's
/// output instead of growing the daemon's memory.
/// </summary>
internal sealed class ExecOutputStream(Proto.LogStream stream, ChannelWriter<Proto.ExecResponse> output, CancellationToken callEnded) : Stream
{
    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var chunk = new Proto.LogChunk { Stream = stream, Data = ByteString.CopyFrom(buffer.Span) };
        try
        {
            await output.WriteAsync(new Proto.ExecResponse { Output = chunk }, callEnded).ConfigureAwait(false);
        }
        catch (ChannelClosedException ex)
        {
            // The exit was already sent: output later than the drain grace is dropped.
            throw new IOException("the exec's output stream has ended", ex);
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}
