using System.ComponentModel;

namespace Corral.Interop;

/// <summary>
/// A callback, once, when a process that need not be this one's child exits: a pidfd on the shared event
/// loop, no timer. A pid read from a file may name another process by the time it is opened: the caller
/// proves, after <see cref="TryWatch"/>, that it still names the one it means.
/// </summary>
public sealed class ProcessExitWatch : IDisposable
{
    private readonly int _pidfd;
    private readonly IDisposable _registration;
    private int _disposed;

    private ProcessExitWatch(int pidfd, IDisposable registration)
    {
        _pidfd = pidfd;
        _registration = registration;
    }

    /// <returns>Null when the process is gone already or pidfds are not available (Linux before 5.3).</returns>
    public static ProcessExitWatch? TryWatch(int pid, Action onExit)
    {
        var pidfd = LibC.PidfdOpen(pid);
        if (pidfd < 0)
        {
            return null;
        }

        try
        {
            // Edge-triggered: a pidfd turns readable once, at the exit (already readable: reported at once).
            return new ProcessExitWatch(pidfd, FdEventLoop.Shared.Register(pidfd, LibC.EPOLLIN | LibC.EPOLLET, onExit));
        }
        catch (Win32Exception)
        {
            _ = LibC.close(pidfd);
            return null;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _registration.Dispose();
            _ = LibC.close(_pidfd);
        }
    }
}
