using System.ComponentModel;
using Corral.Cgroups;
using Corral.Interop;

namespace Corral.Oom;

internal enum CgroupNotification
{
    /// <summary>v1: the cgroup entered OOM (the kill, if any, may land a few ms later).</summary>
    Oom,

    /// <summary>v1: memory.usage_in_bytes crossed the livelock threshold, up or down.</summary>
    UsageThreshold,

    /// <summary>v2: memory.events changed.</summary>
    EventsModified,
}

/// <summary>Seam over the kernel's cgroup memory notifications.</summary>
internal interface ICgroupEventSource
{
    /// <summary>Calls <paramref name="onNotify"/> (on the shared fd thread) on each notification until disposed.</summary>
    IDisposable Subscribe(Action<CgroupNotification> onNotify);
}

/// <summary>v2: inotify IN_MODIFY on memory.events, as containerd does.</summary>
internal sealed class InotifyMemoryEventsSource(string memoryEventsPath) : ICgroupEventSource
{
    public IDisposable Subscribe(Action<CgroupNotification> onNotify)
    {
        var fd = LibC.inotify_init1(LibC.IN_NONBLOCK | LibC.IN_CLOEXEC);
        if (fd < 0)
        {
            throw new Win32Exception(LibC.LastError, "inotify_init1 failed");
        }

        try
        {
            if (LibC.inotify_add_watch(fd, memoryEventsPath, LibC.IN_MODIFY) < 0)
            {
                throw new Win32Exception(LibC.LastError, $"inotify_add_watch {memoryEventsPath} failed");
            }

            var registration = FdEventLoop.Shared.Register(fd, LibC.EPOLLIN, () =>
            {
                FdReader.Drain(fd);
                onNotify(CgroupNotification.EventsModified);
            });
            return new FdSubscription([registration], [fd]);
        }
        catch
        {
            LibC.close(fd);
            throw;
        }
    }
}

/// <summary>
/// v1: eventfds registered through cgroup.event_control: one on memory.oom_control (fires at OOM time),
/// one usage threshold on memory.usage_in_bytes (fires on crossing it either way) to arm the livelock check.
/// </summary>
internal sealed class EventfdMemoryEventsSource(ICgroupFileSystem fs, string memoryDirectory, long? thresholdBytes) : ICgroupEventSource
{
    public IDisposable Subscribe(Action<CgroupNotification> onNotify)
    {
        var fds = new List<int>();
        var kinds = new List<(int Fd, CgroupNotification Kind)>();
        var registrations = new List<IDisposable>();
        try
        {
            Add("memory.oom_control", null, CgroupNotification.Oom);
            if (thresholdBytes is { } bytes)
            {
                Add("memory.usage_in_bytes", bytes, CgroupNotification.UsageThreshold);
            }

            // The last synchronous read: a notification the fd thread has not dispatched yet is still
            // delivered, on the caller's thread, before the fds close.
            return new FdSubscription(registrations, fds, () =>
            {
                foreach (var (efd, kind) in kinds)
                {
                    if (FdReader.Drain(efd))
                    {
                        onNotify(kind);
                    }
                }
            });
        }
        catch
        {
            new FdSubscription(registrations, fds).Dispose();
            throw;
        }

        void Add(string file, long? argument, CgroupNotification kind)
        {
            var efd = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
            if (efd < 0)
            {
                throw new Win32Exception(LibC.LastError, "eventfd failed");
            }

            fds.Add(efd);
            kinds.Add((efd, kind));
            var path = Path.Combine(memoryDirectory, file);
            var cfd = LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC);
            if (cfd < 0)
            {
                throw new Win32Exception(LibC.LastError, $"open {path} failed");
            }

            try
            {
                var line = argument is { } arg ? $"{efd} {cfd} {CgroupFiles.Format(arg)}" : $"{efd} {cfd}";
                fs.WriteAllText(Path.Combine(memoryDirectory, "cgroup.event_control"), line);
            }
            finally
            {
                LibC.close(cfd); // the kernel holds its own reference once registered
            }

            registrations.Add(FdEventLoop.Shared.Register(efd, LibC.EPOLLIN, () =>
            {
                FdReader.Drain(efd);
                onNotify(kind);
            }));
        }
    }
}

internal static unsafe class FdReader
{
    /// <summary>Reads a non-blocking fd until it would block (eventfd counter or queued inotify events).</summary>
    /// <returns>True when anything was pending.</returns>
    public static bool Drain(int fd)
    {
        var buffer = stackalloc byte[4096];
        var any = false;
        while (true)
        {
            var n = LibC.read(fd, buffer, 4096);
            if (n > 0)
            {
                any = true;
                continue;
            }

            if (n < 0 && LibC.LastError == LibC.EINTR)
            {
                continue;
            }

            return any;
        }
    }
}

internal sealed class FdSubscription(IReadOnlyList<IDisposable> registrations, IReadOnlyList<int> fds, Action? beforeClose = null) : IDisposable
{
    private int _disposed;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // Unregister first: after this no callback runs, then the fds can be closed safely.
        foreach (var registration in registrations)
        {
            registration.Dispose();
        }

        beforeClose?.Invoke();
        foreach (var fd in fds)
        {
            LibC.close(fd);
        }
    }
}
