using System.Collections.Concurrent;
using System.ComponentModel;

namespace Corral.Interop;

/// <summary>
/// One epoll thread for every kernel notification Corral waits on (eventfds, inotify, pidfds),
/// so that a thousand idle containers cost one sleeping thread and no timers.
/// </summary>
internal sealed unsafe class FdEventLoop
{
    public static FdEventLoop Shared { get; } = new();

    private readonly int _epfd;
    private readonly ConcurrentDictionary<ulong, Registration> _registrations = new();
    private long _nextId;

    private FdEventLoop()
    {
        _epfd = LibC.epoll_create1(LibC.EPOLL_CLOEXEC);
        if (_epfd < 0)
        {
            throw new Win32Exception(LibC.LastError, "epoll_create1 failed");
        }

        var thread = new Thread(Loop) { IsBackground = true, Name = "corral-fd-events" };
        thread.Start();
    }

    /// <summary>Calls <paramref name="onReady"/> on the loop thread each time <paramref name="fd"/> is ready.</summary>
    public IDisposable Register(int fd, uint events, Action onReady)
    {
        var id = (ulong)Interlocked.Increment(ref _nextId);
        var registration = new Registration(this, id, fd, onReady);
        _registrations[id] = registration;
        var ev = new LibC.EpollEvent { Events = events, Data = id };
        if (LibC.epoll_ctl(_epfd, LibC.EPOLL_CTL_ADD, fd, ref ev) != 0)
        {
            var error = LibC.LastError;
            _registrations.TryRemove(id, out _);
            throw new Win32Exception(error, $"epoll_ctl(ADD, fd={fd}) failed");
        }

        return registration;
    }

    private void Unregister(Registration registration)
    {
        var ev = default(LibC.EpollEvent);
        LibC.epoll_ctl(_epfd, LibC.EPOLL_CTL_DEL, registration.Fd, ref ev);
        _registrations.TryRemove(registration.Id, out _);
    }

    private void Loop()
    {
        const int Max = 64;
        var events = stackalloc LibC.EpollEvent[Max];
        while (true)
        {
            var n = LibC.epoll_wait(_epfd, events, Max, -1);
            if (n < 0)
            {
                continue; // EINTR
            }

            for (var i = 0; i < n; i++)
            {
                if (_registrations.TryGetValue(events[i].Data, out var registration))
                {
                    registration.Fire();
                }
            }
        }
    }

    private sealed class Registration(FdEventLoop loop, ulong id, int fd, Action onReady) : IDisposable
    {
        private readonly Lock _gate = new();
        private bool _disposed;

        public ulong Id => id;

        public int Fd => fd;

        public void Fire()
        {
            lock (_gate)
            {
                if (_disposed)
                {
                    return;
                }

                try
                {
                    onReady();
                }
                catch (Exception ex)
                {
                    // A watcher's bug must not stop every other container's notifications.
                    Console.Error.WriteLine($"corral: fd event handler failed fd={fd} error={ex.Message}");
                }
            }
        }

        /// <summary>After this returns the callback is not running and will not run again.</summary>
        public void Dispose()
        {
            lock (_gate)
            {
                if (_disposed)
                {
                    return;
                }

                _disposed = true;
                loop.Unregister(this);
            }
        }
    }
}
