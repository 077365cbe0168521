using System.Globalization;
using System.Text;
using Corral.Common;
using Corral.Interop;
using Microsoft.Win32.SafeHandles;

namespace Corral.Supervision;

/// <summary>
/// An flock(2) on a file, held by its owner for the owner's whole life: the kernel drops it the moment
/// the owner dies, however it dies, so "is the owner alive" is "is the lock held", never a guess from a
/// pid (reused) or from a file's contents (possibly half written). The owner writes its pid into the
/// file for messages only. Only the owner removes the file, and only while it holds the lock; whoever
/// locks a file that was removed meanwhile (its path now names another file or none) tries again.
/// </summary>
public sealed class OwnerLock : IDisposable
{
    private readonly SafeFileHandle _handle;

    private OwnerLock(string path, SafeFileHandle handle)
    {
        Path = path;
        _handle = handle;
    }

    public string Path { get; }

    /// <summary>Takes the lock, or returns null when a live owner holds it. Creates the file when missing.</summary>
    /// <param name="busyRetries">Retries, 10 ms apart, while the lock is busy: a probe (<see cref="IsHeld"/>) holds it for a moment.</param>
    public static OwnerLock? TryAcquire(string path, int busyRetries = 5)
    {
        for (var attempt = 0; attempt < 100; attempt++)
        {
            // Not File.OpenHandle: on Unix it takes an flock of its own (FileShare emulation), which fails
            // with a sharing violation while the owner holds the lock.
            var fd = LibC.open(path, LibC.O_RDWR | LibC.O_CREAT | LibC.O_CLOEXEC, 0b110_000_000);
            if (fd < 0)
            {
                throw CorralException.Host($"cannot open {path}: {LibC.LastErrorMessage}");
            }

            var handle = new SafeFileHandle(fd, ownsHandle: true);
            if (LibC.flock(fd, LibC.LOCK_EX | LibC.LOCK_NB) != 0)
            {
                var errno = LibC.LastError;
                handle.Dispose();
                if (errno != LibC.EWOULDBLOCK)
                {
                    throw CorralException.Host($"cannot lock {path}: {LibC.ErrorText(errno)}");
                }

                if (busyRetries-- <= 0)
                {
                    return null;
                }

                Thread.Sleep(10);
                continue;
            }

            // The previous owner removes the file while holding the lock: a lock on a removed file is no claim.
            if (!StillNamed(fd))
            {
                handle.Dispose();
                continue;
            }

            var owned = new OwnerLock(path, handle);
            try
            {
                owned.WriteOwner();
            }
            catch (IOException ex)
            {
                // A full disk: the lock (which is ours) goes, with its file, and the reason is the error.
                owned.Release();
                throw CorralException.Host($"cannot record the owner in {path}: {ex.Message}", ex);
            }

            return owned;
        }

        throw CorralException.Host($"cannot lock {path}: it keeps being replaced");
    }

    /// <summary>True while some process holds the lock on <paramref name="path"/> (a shared probe, released at once).</summary>
    public static bool IsHeld(string path)
    {
        var fd = LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            return false;
        }

        try
        {
            if (LibC.flock(fd, LibC.LOCK_SH | LibC.LOCK_NB) == 0)
            {
                _ = LibC.flock(fd, LibC.LOCK_UN);
                return false;
            }

            return LibC.LastError == LibC.EWOULDBLOCK;
        }
        finally
        {
            _ = LibC.close(fd);
        }
    }

    /// <summary>The pid the owner wrote, when there is one (for messages).</summary>
    public static int? OwnerPid(string path)
    {
        // Not File.ReadAllText: its FileShare flock fails while the owner holds the lock.
        var fd = LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            return null;
        }

        try
        {
            using var reader = new StreamReader(new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Read), Encoding.ASCII);
            return int.TryParse(reader.ReadToEnd().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Removes the file, then lets the lock go: no one can take a removed file for a claim.</summary>
    public void Release()
    {
        if (_handle.IsClosed)
        {
            return;
        }

        try
        {
            File.Delete(Path);
        }
        finally
        {
            _handle.Dispose();
        }
    }

    /// <summary>Lets the lock go and leaves the file (for a lock whose file is its fixed address: the daemon's).</summary>
    public void Dispose() => _handle.Dispose();

    private void WriteOwner()
    {
        var bytes = Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        RandomAccess.SetLength(_handle, 0);
        RandomAccess.Write(_handle, bytes, 0);
    }

    private static bool StillNamed(int fd)
    {
        try
        {
            var target = new FileInfo($"/proc/self/fd/{fd.ToString(CultureInfo.InvariantCulture)}").LinkTarget;
            // Lock files are never renamed: the inode is either still at its path or unlinked.
            return target is not null && !target.EndsWith(" (deleted)", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
    }
}
