using System.Collections.Concurrent;
using System.ComponentModel;
using Corral.Interop;

namespace Corral.Shim;

/// <summary>
/// One inotify instance for many directories (the daemon watches every sandbox's directory with it):
/// the callback of a directory runs on the shared event thread whenever a file in it is written,
/// created or renamed into it. A queue overflow calls every callback.
/// </summary>
public sealed unsafe class DirectoryWatcher : IDisposable
{
    private const uint Mask = LibC.IN_MODIFY | LibC.IN_CLOSE_WRITE | LibC.IN_MOVED_TO | LibC.IN_CREATE;
    private readonly int _fd;
    private readonly IDisposable _registration;
    private readonly ConcurrentDictionary<int, Action> _callbacks = new();

    public DirectoryWatcher()
    {
        _fd = LibC.inotify_init1(LibC.IN_CLOEXEC | LibC.IN_NONBLOCK);
        if (_fd < 0)
        {
            throw new Win32Exception(LibC.LastError, "inotify_init1 failed");
        }

        _registration = FdEventLoop.Shared.Register(_fd, LibC.EPOLLIN, Drain);
    }

    /// <summary>Calls <paramref name="onChange"/> on every change in <paramref name="directory"/> until disposed.</summary>
    public IDisposable Watch(string directory, Action onChange)
    {
        var wd = LibC.inotify_add_watch(_fd, directory, Mask);
        if (wd < 0)
        {
            throw new IOException($"cannot watch {directory}: {LibC.LastErrorMessage}");
        }

        _callbacks[wd] = onChange;
        return new Subscription(this, wd);
    }

    public void Dispose()
    {
        _registration.Dispose();
        _ = LibC.close(_fd);
    }

    private void Drain()
    {
        const int Size = 16 * 1024;
        var buffer = stackalloc byte[Size];
        var fired = new HashSet<int>();
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
                    fired.UnionWith(_callbacks.Keys);
                }
                else if ((mask & LibC.IN_IGNORED) != 0)
                {
                    _callbacks.TryRemove(wd, out _);
                }
                else
                {
                    fired.Add(wd);
                }
            }
        }

        foreach (var wd in fired)
        {
            if (_callbacks.TryGetValue(wd, out var callback))
            {
                callback();
            }
        }
    }

    private sealed class Subscription(DirectoryWatcher watcher, int wd) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0 && watcher._callbacks.TryRemove(wd, out _))
            {
                _ = LibC.inotify_rm_watch(watcher._fd, wd);
            }
        }
    }
}
