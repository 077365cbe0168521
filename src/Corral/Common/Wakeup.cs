namespace Corral.Common;

/// <summary>A <see cref="SemaphoreSlim"/>(0, 1) used as a wake-up flag: set once however often it is signalled.</summary>
internal static class Wakeup
{
    /// <summary>Sets the flag unless it is set; a no-op once the waiter disposed it.</summary>
    public static void Wake(this SemaphoreSlim flag)
    {
        try
        {
            if (flag.CurrentCount == 0)
            {
                flag.Release();
            }
        }
        catch (Exception ex) when (ex is SemaphoreFullException or ObjectDisposedException)
        {
            // Already set (a concurrent wake), or the wait is over.
        }
    }
}
