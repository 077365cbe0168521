using System.IO.Compression;

namespace Corral.Images;

/// <summary>What every forward-only, read-only wrapper stream here shares.</summary>
internal abstract class ReadOnlyStream : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public abstract override int Read(Span<byte> buffer);

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>Gives back bytes already read for a magic-number probe, then the rest of the stream.</summary>
internal sealed class PrefixedStream(byte[] prefix, Stream inner) : ReadOnlyStream
{
    private int _offset;

    public override int Read(Span<byte> buffer)
    {
        if (_offset < prefix.Length)
        {
            var n = Math.Min(buffer.Length, prefix.Length - _offset);
            prefix.AsSpan(_offset, n).CopyTo(buffer);
            _offset += n;
            return n;
        }

        return inner.Read(buffer);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner.Dispose();
        }

        base.Dispose(disposing);
    }
}

/// <summary>GZipStream that fails on a stream cut short instead of ending quietly.</summary>
internal sealed class StrictGZipStream(Stream compressed) : ReadOnlyStream
{
    private readonly CountingStream _counted = new(compressed);
    private GZipStream? _gzip;
    private long _output;
    private bool _checked;

    public override int Read(Span<byte> buffer)
    {
        _gzip ??= new GZipStream(_counted, CompressionMode.Decompress, leaveOpen: true);
        var n = _gzip.Read(buffer);
        _output += n;
        if (n == 0 && buffer.Length > 0 && !_checked)
        {
            // .NET ends a truncated stream without an error: the trailer's ISIZE (the uncompressed
            // length mod 2^32, last four bytes) must match what came out.
            _checked = true;
            if (!_counted.TailIsComplete || _counted.TailLength != (uint)_output)
            {
                throw new InvalidDataException("the gzip stream is truncated (its trailer does not match the data)");
            }
        }

        return n;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _gzip?.Dispose();
            _counted.Dispose();
        }

        base.Dispose(disposing);
    }

    private sealed class CountingStream(Stream inner) : ReadOnlyStream
    {
        private readonly byte[] _tail = new byte[8];
        private long _total;

        public bool TailIsComplete => _total >= 8;

        /// <summary>The last four bytes read, little-endian.</summary>
        public uint TailLength => BitConverter.ToUInt32(_tail, 4);

        public override int Read(Span<byte> buffer)
        {
            var n = inner.Read(buffer);
            if (n >= 8)
            {
                buffer.Slice(n - 8, 8).CopyTo(_tail);
            }
            else if (n > 0)
            {
                Array.Copy(_tail, n, _tail, 0, 8 - n);
                buffer[..n].CopyTo(_tail.AsSpan(8 - n));
            }

            _total += n;
            return n;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}

/// <summary>Fails as soon as more than <c>max</c> bytes came out: an unpack stops at its cap, not after.</summary>
internal sealed class CappedStream(Stream inner, long max, string refusal, bool leaveOpen = false) : ReadOnlyStream
{
    /// <summary>A layer's unpacked bytes, capped by <paramref name="option"/>'s value.</summary>
    public static CappedStream Layer(Stream inner, long max, string option) =>
        new(inner, max, $"refusing layer: it unpacks to more than {Corral.Common.ByteSize.Format(max)} ({max} bytes; raise it with {option})");

    /// <summary>The bytes read so far.</summary>
    public long Count { get; private set; }

    public override int Read(Span<byte> buffer)
    {
        var n = inner.Read(buffer);
        Count += n;
        if (Count > max)
        {
            throw new Corral.Common.CorralException(Corral.Common.ErrorKind.ResourceExhausted, refusal);
        }

        return n;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !leaveOpen)
        {
            inner.Dispose();
        }

        base.Dispose(disposing);
    }
}
