using System.Text;

namespace Corral.Supervision;

/// <summary>
/// Copies one of the container's pipes to the caller, byte for byte, keeping its last bytes. It never
/// stops draining the pipe: when the caller's stream refuses a write (a full disk, a closed terminal),
/// further output is read, kept in the tail and counted as dropped, so the workload never blocks.
/// </summary>
internal sealed class OutputPump
{
    private readonly byte[] _tail;
    private readonly Lock _gate = new();
    private long _total;
    private long _dropped;
    private string? _sinkError;

    public OutputPump(Stream source, Stream? sink, int tailBytes)
    {
        _tail = new byte[tailBytes];
        Completion = Task.Run(() => PumpAsync(source, sink));
    }

    public Task Completion { get; }

    /// <summary>Bytes read from the pipe so far.</summary>
    public long Total
    {
        get
        {
            lock (_gate)
            {
                return _total;
            }
        }
    }

    /// <summary>Bytes read but not written to the caller because its stream failed.</summary>
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

    /// <summary>Why the caller's stream stopped taking output, if it did.</summary>
    public string? SinkError
    {
        get
        {
            lock (_gate)
            {
                return _sinkError;
            }
        }
    }

    public string Tail()
    {
        lock (_gate)
        {
            var length = (int)Math.Min(_total, _tail.Length);
            var start = (int)(_total % _tail.Length);
            var bytes = new byte[length];
            if (_total <= _tail.Length)
            {
                Array.Copy(_tail, bytes, length);
            }
            else
            {
                var first = _tail.Length - start;
                Array.Copy(_tail, start, bytes, 0, first);
                Array.Copy(_tail, 0, bytes, first, start);
            }

            return Encoding.UTF8.GetString(bytes);
        }
    }

    private async Task PumpAsync(Stream source, Stream? sink)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            int read;
            while ((read = await source.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                if (sink is not null)
                {
                    try
                    {
                        await sink.WriteAsync(buffer.AsMemory(0, read)).ConfigureAwait(false);
                        await sink.FlushAsync().ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is IOException or ObjectDisposedException or NotSupportedException or UnauthorizedAccessException)
                    {
                        lock (_gate)
                        {
                            _sinkError = ex.Message;
                            _dropped += read;
                        }

                        sink = null;
                        Remember(buffer.AsSpan(0, read));
                        continue;
                    }
                }
                else if (_sinkError is not null)
                {
                    lock (_gate)
                    {
                        _dropped += read;
                    }
                }

                Remember(buffer.AsSpan(0, read));
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The pipe was closed under us after the drain grace: what was read is kept.
        }
    }

    private void Remember(ReadOnlySpan<byte> data)
    {
        lock (_gate)
        {
            if (data.Length > _tail.Length)
            {
                _total += data.Length - _tail.Length;
                data = data[^_tail.Length..];
            }

            foreach (var b in data)
            {
                _tail[_total++ % _tail.Length] = b;
            }
        }
    }
}
