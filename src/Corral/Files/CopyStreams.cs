using System.Buffers;
using Corral.Common;
using Microsoft.Win32.SafeHandles;

namespace Corral.Files;

/// <summary>
/// The archive written by a copy out: counted, and once <see cref="Discard"/> is set (the copy
/// failed) nothing more reaches the output, so a failed copy never ends in a tar trailer that
/// would make what was written look complete. The caller keeps the inner stream.
/// </summary>
internal sealed class ArchiveOutputStream(Stream inner) : Stream
{
    public long Count { get; private set; }

    public bool Discard { get; set; }

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (Discard)
        {
            return;
        }

        inner.Write(buffer);
        Count += buffer.Length;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Flush()
    {
        if (!Discard)
        {
            inner.Flush();
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}

/// <summary>
/// A file's content as exactly <c>length</c> bytes (its size when it was stat'ed): a file the
/// container grows meanwhile is cut there, one it shrinks is padded with zeros, so the tar header
/// written before the data stays true. Read with pread in 1 MiB pieces; the caller keeps the handle.
/// </summary>
internal sealed class ExactLengthStream(SafeFileHandle file, long length, CancellationToken cancellationToken) : Stream
{
    private const int CopyBuffer = 1 << 20;

    private long _position;
    private bool _ended;

    public override bool CanRead => true;

    // Seekable only so that a tar writer takes Length as the entry's size up front.
    public override bool CanSeek => true;

    public override bool CanWrite => false;

    public override long Length => length;

    public override long Position { get => _position; set => throw new NotSupportedException(); }

    public override int Read(Span<byte> buffer)
    {
        var want = (int)Math.Min(buffer.Length, length - _position);
        if (want <= 0)
        {
            return 0;
        }

        var n = _ended ? 0 : RandomAccess.Read(file, buffer[..want], _position);
        if (n == 0)
        {
            _ended = true;
            buffer[..want].Clear();
            n = want;
        }

        _position += n;
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override void CopyTo(Stream destination, int bufferSize)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(CopyBuffer);
        try
        {
            int n;
            while ((n = Read(buffer.AsSpan(0, CopyBuffer))) > 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                destination.Write(buffer, 0, n);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
