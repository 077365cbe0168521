using System.ComponentModel;
using System.IO.Pipes;
using Corral.Common;

namespace Corral.Interop;

/// <summary>
/// Reads a child's pipe without holding a thread: the fd is made non-blocking and waits on the shared
/// epoll thread. .NET reads a pipe with a blocking read on a thread-pool thread, so a daemon with
/// hundreds of execs' outputs open would starve its pool (seen: 150 execs at once left output unread
/// for seconds). The <see cref="PipeStream"/> keeps owning the fd, but this holds a reference on its
/// handle until disposed: the fd is not closed (and its number not reused) while it is in the epoll set.
/// Without that, the owner closing the pipe first let this registration's removal delete another
/// pipe's that had been given the same fd number, and that pipe's output was never read.
/// </summary>
internal sealed class EpollPipeReader : Stream
{
    private readonly PipeStream _pipe;
    private readonly int _fd;
    private readonly SemaphoreSlim _readable = new(0, 1);
    private readonly IDisposable _registration;
    private volatile bool _disposed;

    public EpollPipeReader(PipeStream pipe)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        _pipe = pipe;
        var held = false;
        pipe.SafePipeHandle.DangerousAddRef(ref held);
        _fd = (int)pipe.SafePipeHandle.DangerousGetHandle();
        var flags = LibC.fcntl(_fd, LibC.F_GETFL, 0);
        if (flags < 0 || LibC.fcntl(_fd, LibC.F_SETFL, flags | LibC.O_NONBLOCK) < 0)
        {
            var error = LibC.LastError;
            pipe.SafePipeHandle.DangerousRelease();
            throw new Win32Exception(error, $"fcntl(O_NONBLOCK) on fd {_fd} failed");
        }

        // Edge-triggered: one wake-up per arrival; ReadAsync reads until EAGAIN before it waits again.
        _registration = FdEventLoop.Shared.Register(_fd, LibC.EPOLLIN | LibC.EPOLLRDHUP | LibC.EPOLLHUP | LibC.EPOLLERR | LibC.EPOLLET, Signal);
    }

    /// <summary>
    /// True when every write end of the pipe is closed: what is left in it ends in EOF without anyone
    /// else's help, so a reader that has not got there yet is only behind (a busy daemon), not blocked.
    /// </summary>
    public bool WritersGone
    {
        get
        {
            try
            {
                return WhileOpen(0, static (fd, _) =>
                {
                    var poll = new LibC.PollFd { Fd = fd, Events = LibC.POLLIN };
                    return LibC.poll(ref poll, 1, 0) > 0 && (poll.Revents & LibC.POLLHUP) != 0;
                });
            }
            catch (ObjectDisposedException)
            {
                return true;
            }
        }
    }

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var (n, error) = ReadNow(buffer);
            if (n >= 0)
            {
                return (int)n;
            }

            if (error == LibC.EINTR)
            {
                continue;
            }

            if (error != LibC.EAGAIN)
            {
                throw new IOException($"read from pipe fd {_fd} failed: {new Win32Exception(error).Message}");
            }

            await _readable.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_disposed)
        {
            // Off the epoll set while the fd is still ours, then let it close; a pending read wakes and ends.
            _disposed = true;
            _registration.Dispose();
            Signal();
            _pipe.SafePipeHandle.DangerousRelease();
            _pipe.Dispose();
        }

        base.Dispose(disposing);
    }

    private unsafe (nint Read, int Error) ReadNow(Memory<byte> buffer) => WhileOpen(buffer, static (fd, buffer) =>
    {
        using var pin = buffer.Pin();
        var n = LibC.read(fd, (byte*)pin.Pointer, buffer.Length);
        return (n, n < 0 ? LibC.LastError : 0);
    });

    /// <summary>
    /// Runs <paramref name="use"/> on the fd with a reference on its handle: a concurrent Dispose cannot
    /// close the fd (and let its number be reused) under it. Throws ObjectDisposedException once closed.
    /// </summary>
    private T WhileOpen<TState, T>(TState state, Func<int, TState, T> use)
    {
        var added = false;
        var handle = _pipe.SafePipeHandle;
        try
        {
            handle.DangerousAddRef(ref added);
            return use(_fd, state);
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    private void Signal() => _readable.Wake();
}
