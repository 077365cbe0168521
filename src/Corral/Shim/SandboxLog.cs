using Corral.Common;
using System.Buffers.Binary;
using System.Text;

namespace Corral.Shim;

public enum OutputStream : byte
{
    Stdout = 1,
    Stderr = 2,
}

/// <summary>
/// A sandbox's stdout and stderr in one file, in the order written: frames of
/// [stream: 1 byte][length: 4 bytes little-endian][bytes]. Past the cap, output is dropped and one
/// stderr frame says so; the log never grows beyond cap plus that marker. When the disk refuses a
/// write (ENOSPC, EIO) the log is cut back to its last whole frame, one marker frame is tried, and
/// further output is dropped and counted (<see cref="DroppedBytes"/>): the writer never blocks or fails.
/// </summary>
public sealed class SandboxLog : IDisposable
{
    private const int HeaderSize = 5;
    private readonly FileStream _file;
    private readonly long _capBytes;
    private readonly Lock _gate = new();
    private readonly Action? _onCapReached;
    private long _written;
    private long _dropped;
    private long _goodLength;
    private bool _capped;
    private bool _failed;
    private bool _closed;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public SandboxLog(string path, long capBytes, Action? onCapReached = null, Action<string>? onWriteFailed = null)
    {
        Path = path;
        _capBytes = capBytes;
        _onCapReached = onCapReached;
        _onWriteFailed = onWriteFailed;

        // Unbuffered: a refused write is seen at once, with nothing half-kept in a buffer.
        _file = PrivateFiles.Open(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
    }

    private readonly Action<string>? _onWriteFailed;

    /// <summary>Bytes of output not in the log: past the cap, or refused by the disk.</summary>
    public long DroppedBytes
    {
        get
        {
            lock (_gate)
            {
                return _dropped;
            }
        }
    }

    public string Path { get; }

    /// <summary>True once no more frames will be written (the sandbox ended).</summary>
    public bool IsClosed
    {
        get
        {
            lock (_gate)
            {
                return _closed;
            }
        }
    }

    public Stream StreamFor(OutputStream stream) => new SinkStream(this, stream);

    public void Append(OutputStream stream, ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return;
        }

        TaskCompletionSource changed;
        var capReached = false;
        string? writeFailed = null;
        lock (_gate)
        {
            if (_closed || _capped || _failed)
            {
                _dropped += data.Length;
                return;
            }

            try
            {
                var room = _capBytes - _written;
                if (data.Length > room)
                {
                    var kept = (int)Math.Max(0, room);
                    WriteFrame(stream, data[..kept]);
                    _dropped += data.Length - kept;
                    WriteFrame(OutputStream.Stderr, Encoding.UTF8.GetBytes($"\n[corral: log limit of {_capBytes} bytes reached; further output dropped]\n"));
                    _capped = true;
                    capReached = true;
                }
                else
                {
                    WriteFrame(stream, data);
                }
            }
            catch (IOException ex)
            {
                writeFailed = ex.Message;
                _failed = true;
                _dropped += data.Length;
                TryMarkWriteFailure(ex.Message);
            }

            changed = _changed;
            _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
        if (capReached)
        {
            _onCapReached?.Invoke();
        }

        if (writeFailed is not null)
        {
            _onWriteFailed?.Invoke(writeFailed);
        }
    }

    /// <summary>Cuts a half-written frame off (which frees its blocks) and tries one marker frame.</summary>
    private void TryMarkWriteFailure(string error)
    {
        try
        {
            _file.SetLength(_goodLength);
            _file.Position = _goodLength;
            WriteFrame(OutputStream.Stderr, Encoding.UTF8.GetBytes($"\n[corral: the log could not be written ({error}); further output dropped]\n"));
        }
        catch (IOException)
        {
            try
            {
                _file.SetLength(_goodLength);
            }
            catch (IOException)
            {
                // Frames are whole up to the cut; what follows is ignored by readers as incomplete.
            }
        }
    }

    /// <summary>Completes when a frame was appended or the log closed after this call.</summary>
    public Task ChangedAsync()
    {
        lock (_gate)
        {
            return _closed ? Task.CompletedTask : _changed.Task;
        }
    }

    public void Close()
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            _file.Dispose();
            changed = _changed;
        }

        changed.TrySetResult();
    }

    public void Dispose() => Close();

    /// <summary>Reads frames from the start; with <paramref name="follow"/>, until the log is closed.</summary>
    public IAsyncEnumerable<(OutputStream Stream, byte[] Data)> ReadAsync(bool follow, CancellationToken cancellationToken) =>
        ReadAsync(Path, follow, () => IsClosed, _ => ChangedAsync(), cancellationToken);

    /// <summary>
    /// Reads the frames of the log at <paramref name="path"/>, which another process may be writing:
    /// with <paramref name="follow"/>, until <paramref name="isClosed"/> says no more will come, waking
    /// on <paramref name="changed"/> (which should complete on an append, or after a short poll).
    /// </summary>
    public static async IAsyncEnumerable<(OutputStream Stream, byte[] Data)> ReadAsync(
        string path,
        bool follow,
        Func<bool> isClosed,
        Func<CancellationToken, Task> changed,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await using var reader = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
        var header = new byte[HeaderSize];
        while (true)
        {
            // Take the wait before reading, so an append between the read and the wait is not missed.
            var next = changed(cancellationToken);
            var wasClosed = isClosed();
            while (true)
            {
                var start = reader.Position;
                if (reader.Length - start < HeaderSize)
                {
                    break;
                }

                await reader.ReadExactlyAsync(header, cancellationToken).ConfigureAwait(false);
                var length = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(1));
                if (reader.Length - reader.Position < length)
                {
                    reader.Position = start;
                    break;
                }

                var data = new byte[length];
                await reader.ReadExactlyAsync(data, cancellationToken).ConfigureAwait(false);
                yield return ((OutputStream)header[0], data);
            }

            if (!follow || wasClosed)
            {
                yield break;
            }

            await next.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private void WriteFrame(OutputStream stream, ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return;
        }

        Span<byte> header = stackalloc byte[HeaderSize];
        header[0] = (byte)stream;
        BinaryPrimitives.WriteInt32LittleEndian(header[1..], data.Length);
        _file.Write(header);
        _file.Write(data);
        _written += data.Length;
        _goodLength += HeaderSize + data.Length;
    }

    private sealed class SinkStream(SandboxLog log, OutputStream stream) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => log.Append(stream, buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer) => log.Append(stream, buffer);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            log.Append(stream, buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            log.Append(stream, buffer.AsSpan(offset, count));
            return Task.CompletedTask;
        }
    }
}
