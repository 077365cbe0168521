using Corral.Interop;

namespace Corral.Cgroups;

/// <summary>Seam over signalling pids and pausing between kill rounds, so unit tests never signal real processes.</summary>
internal interface IProcessSignaller
{
    /// <summary>SIGKILLs <paramref name="pid"/>; a pid that is already gone is not an error.</summary>
    void Kill(int pid);

    void Pause(TimeSpan delay);
}

internal sealed class SystemProcessSignaller : IProcessSignaller
{
    private const int SIGKILL = 9;

    public static SystemProcessSignaller Instance { get; } = new();

    public void Kill(int pid)
    {
        if (pid > 0)
        {
            _ = LibC.kill(pid, SIGKILL);
        }
    }

    public void Pause(TimeSpan delay) => Thread.Sleep(delay);
}
