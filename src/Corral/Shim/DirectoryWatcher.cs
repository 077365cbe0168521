using System.ComponentModel;
using Corral.Interop;

namespace Corral.Shim;

/// <summary>
/// One inotify instance for many directories (the daemon watches every sandbox's directory with it,
/// execs their bundle while the runtime starts them): each subscriber's callback runs on the shared
/// event thread whenever a file in its directory is written, created or renamed into it. Several
/// subscribers may watch one directory (inotify gives it one watch); a queue overflow calls every callback.
/// </summary>
public sealed unsafe class DirectoryWatcher : IDisposable
{
    private const uint Mask = LibC.IN_MODIFY | LibC.IN_CLOSE_WRITE | LibC.IN_MOVED_TO | LibC.IN_CREATE;
    private static readonly Lazy<DirectoryWatcher> SharedWatcher = new(() => new DirectoryWatcher());
    private readonly int _fd;
    private readonly IDisposable _registration;
    private readonly Lock _gate = new();
    private readonly Dictionary<int, List<Subscription>> _subscribers = [];
    private int _disposed;

    public DirectoryWatcher()
    {
        _fd = LibC.inotify_init1(LibC.IN_CLOEXEC | LibC.IN_NONBLOCK);
        if (_fd < 0)
        {
            throw new Win32Exception(LibC.LastError, "inotify_init1 failed");
        }

        _registration = FdEventLoop.Shared.Register(_fd, LibC.EPOLLIN, Drain);
    }

    /// <summary>
    /// Watches <paramref name="directory"/> on the process's shared watcher; null when it cannot (the
    /// directory is gone, or the host's inotify limits are reached): the caller then polls.
    /// </summary>
    public static IDisposable? TryWatchShared(string directory, Action onChange)
    {
        try
        {
            return SharedWatcher.Value.Watch(directory, onChange);
        }
        catch (Exception ex) when (ex is IOException or Win32Exception)
        {
            return null;
        }
    }

    /// <summary>Calls <paramref name="onChange"/> on every change in <paramref name="directory"/> until disposed.</summary>
    public IDisposable Watch(string directory, Action onChange)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            var wd = LibC.inotify_add_watch(_fd, directory, Mask);
            if (wd < 0)
            {
                throw new IOException($"cannot watch {directory}: {LibC.LastErrorMessage}");
            }

            var subscription = new Subscription(this, wd, onChange);
            if (!_subscribers.TryGetValue(wd, out var list))
            {
                _subscribers[wd] = list = [];
            }

            list.Add(subscription);
            return subscription;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // Off the event thread first (no Drain runs after this), then the fd can go.
        _registration.Dispose();
        lock (_gate)
        {
            _subscribers.Clear();
        }

        _ = LibC.close(_fd);
    }

    private void Unsubscribe(Subscription subscription)
    {
        lock (_gate)
        {
            if (_disposed != 0 || !_subscribers.TryGetValue(subscription.Wd, out var list) || !list.Remove(subscription))
            {
                return;
            }

            if (list.Count == 0)
            {
                // The last subscriber of the directory: the watch goes (wds are not reused while the instance lives).
                _subscribers.Remove(subscription.Wd);
                _ = LibC.inotify_rm_watch(_fd, subscription.Wd);
            }
        }
    }

    private void Drain()
    {
        const int Size = 16 * 1024;
        var buffer = stackalloc byte[Size];
        var fired = new HashSet<int>();
        var overflow = false;
        while (true)
        {
            var n = LibC.read(_fd, buffer, Size);
            if (n <= 0)
            {
                break;
            }

            for (var offset = 0; offset < n;)
            {
                // struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[len]; }
                var wd = *(int*)(buffer + offset);
                var mask = *(uint*)(buffer + offset + 4);
                var length = *(uint*)(buffer + offset + 12);
                offset += 16 + (int)length;
                if ((mask & LibC.IN_Q_OVERFLOW) != 0)
                {
                    overflow = true;
                }
                else if ((mask & LibC.IN_IGNORED) == 0)
                {
                    fired.Add(wd);
                }
            }
        }

        List<Action> callbacks = [];
        lock (_gate)
        {
            foreach (var (wd, list) in _subscribers)
            {
                if (overflow || fired.Contains(wd))
                {
                    callbacks.AddRange(list.Select(s => s.OnChange));
                }
            }
        }

        // Outside the lock: a callback may subscribe or unsubscribe.
        foreach (var callback in callbacks)
        {
            callback();
        }
    }

    private sealed class Subscription(DirectoryWatcher watcher, int wd, Action onChange) : IDisposable
    {
        private int _disposed;

        public int Wd => wd;

        public Action OnChange => onChange;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                watcher.Unsubscribe(this);
            }
        }
    }
}
