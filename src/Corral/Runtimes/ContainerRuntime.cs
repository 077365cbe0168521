using System.Globalization;

namespace Corral.Runtimes;

public enum RuntimeKind
{
    Gvisor,
    Runc,
}

/// <summary>A runtime binary and the arguments for one call of it.</summary>
public sealed record RuntimeInvocation(string FileName, IReadOnlyList<string> Args)
{
    public override string ToString() => string.Join(' ', [FileName, .. Args]);

    /// <summary>The invocation with stdin, stdout and stderr all redirected to pipes.</summary>
    public System.Diagnostics.ProcessStartInfo StartInfo()
    {
        var info = new System.Diagnostics.ProcessStartInfo(FileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in Args)
        {
            info.ArgumentList.Add(arg);
        }

        return info;
    }
}

public sealed class RuntimeOptions
{
    public string RuncPath { get; set; } = "runc";

    public string RunscPath { get; set; } = "runsc";

    /// <summary>Corral keeps its runtimes' state apart from other users of the same binaries.</summary>
    public string RuncRoot { get; set; } = "/run/corral/runc";

    public string RunscRoot { get; set; } = "/run/corral/runsc";

    /// <summary>gVisor platform: ptrace works everywhere; kvm or systrap where the host allows.</summary>
    public string RunscPlatform { get; set; } = "ptrace";
}

/// <summary>One OCI runtime: how to run, signal, delete and inspect a container with it.</summary>
public interface IContainerRuntime
{
    RuntimeKind Kind { get; }

    /// <summary>The name users type and records carry: "runc" or "gvisor".</summary>
    string Name { get; }

    string Root { get; }

    /// <summary>
    /// True when the runtime process itself must be started inside the container's cgroup (runsc
    /// with --ignore-cgroups); false when the runtime places the container by cgroupsPath (runc).
    /// </summary>
    bool LaunchesInsideCgroup { get; }

    /// <summary>Runs the container in the foreground; returns when its PID 1 exits.</summary>
    RuntimeInvocation Run(string id, string bundleDir, string pidFile, bool gpu);

    RuntimeInvocation Kill(string id, int signal);

    /// <summary>
    /// Runs the process described by <paramref name="processFile"/> (OCI process.json) in the running
    /// container, in the foreground: returns with its exit status. <paramref name="pidFile"/> gets its
    /// pid (on the host for runc; runsc writes the sandbox-internal pid to <paramref name="internalPidFile"/>).
    /// </summary>
    RuntimeInvocation Exec(string id, string processFile, string pidFile, string internalPidFile);

    /// <summary>Signals one exec'd process by the pid <see cref="Exec"/> reported; null where the host pid is signalled directly (runc).</summary>
    RuntimeInvocation? KillProcess(string id, int pid, int signal);

    RuntimeInvocation Delete(string id);

    RuntimeInvocation List();

    /// <summary>Whether the runtime still holds state for <paramref name="id"/> under its root.</summary>
    bool HasState(string id);

    /// <summary>
    /// Removes files the runtime left for a container it never finished creating and that its own
    /// delete refuses to touch (runsc leaves a lock file when killed before the sandbox started).
    /// </summary>
    void RemoveLeftoverState(string id);
}

public static class ContainerRuntimes
{
    public static IContainerRuntime Create(RuntimeKind kind, RuntimeOptions options) => kind switch
    {
        RuntimeKind.Runc => new RuncRuntime(options),
        RuntimeKind.Gvisor => new RunscRuntime(options),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    public static bool TryParse(string? name, out RuntimeKind kind)
    {
        switch (name?.ToLowerInvariant())
        {
            case "gvisor" or "runsc":
                kind = RuntimeKind.Gvisor;
                return true;
            case "runc":
                kind = RuntimeKind.Runc;
                return true;
            default:
                kind = default;
                return false;
        }
    }

    public static string NameOf(RuntimeKind kind) => kind == RuntimeKind.Runc ? "runc" : "gvisor";

    internal static string Signal(int signal) => signal.ToString(CultureInfo.InvariantCulture);
}

internal sealed class RuncRuntime(RuntimeOptions options) : IContainerRuntime
{
    public RuntimeKind Kind => RuntimeKind.Runc;

    public string Name => "runc";

    public string Root => options.RuncRoot;

    public bool LaunchesInsideCgroup => false;

    public RuntimeInvocation Run(string id, string bundleDir, string pidFile, bool gpu) =>
        Invoke("run", "--bundle", bundleDir, "--pid-file", pidFile, id);

    public RuntimeInvocation Kill(string id, int signal) => Invoke("kill", id, ContainerRuntimes.Signal(signal));

    public RuntimeInvocation Exec(string id, string processFile, string pidFile, string internalPidFile) =>
        Invoke("exec", "--process", processFile, "--pid-file", pidFile, id);

    public RuntimeInvocation? KillProcess(string id, int pid, int signal) => null;

    public RuntimeInvocation Delete(string id) => Invoke("delete", "--force", id);

    public RuntimeInvocation List() => Invoke("list");

    public bool HasState(string id) => Directory.Exists(Path.Combine(Root, id));

    public void RemoveLeftoverState(string id)
    {
        var dir = Path.Combine(Root, id);
        if (Directory.Exists(dir) && !File.Exists(Path.Combine(dir, "state.json")))
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private RuntimeInvocation Invoke(params string[] args) => new(options.RuncPath, ["--root", Root, .. args]);
}

internal sealed class RunscRuntime(RuntimeOptions options) : IContainerRuntime
{
    public RuntimeKind Kind => RuntimeKind.Gvisor;

    public string Name => "gvisor";

    public string Root => options.RunscRoot;

    public bool LaunchesInsideCgroup => true;

    public RuntimeInvocation Run(string id, string bundleDir, string pidFile, bool gpu)
    {
        // --ignore-cgroups keeps `runsc run` returning as soon as PID 1 dies (the seed's fix);
        // the limits come from the Corral-owned cgroup the runsc process is started in.
        List<string> args = ["--root", Root, "--platform", options.RunscPlatform, "--network", "none", "--ignore-cgroups"];
        if (gpu)
        {
            args.Add("--nvproxy=true");
        }

        args.AddRange(["run", "--bundle", bundleDir, "--pid-file", pidFile, id]);
        return new RuntimeInvocation(options.RunscPath, args);
    }

    public RuntimeInvocation Kill(string id, int signal) => Invoke("kill", id, ContainerRuntimes.Signal(signal));

    public RuntimeInvocation Exec(string id, string processFile, string pidFile, string internalPidFile) =>
        Invoke("exec", "--process", processFile, "--pid-file", pidFile, "--internal-pid-file", internalPidFile, id);

    public RuntimeInvocation? KillProcess(string id, int pid, int signal) =>
        Invoke("kill", "--pid", pid.ToString(CultureInfo.InvariantCulture), id, ContainerRuntimes.Signal(signal));

    public RuntimeInvocation Delete(string id) => Invoke("delete", "--force", id);

    public RuntimeInvocation List() => Invoke("list");

    public bool HasState(string id) =>
        Directory.Exists(Root) && Directory.EnumerateFileSystemEntries(Root, id + "_sandbox:*").Any();

    public void RemoveLeftoverState(string id)
    {
        if (!Directory.Exists(Root) || Directory.EnumerateFiles(Root, id + "_sandbox:*.state").Any())
        {
            return;
        }

        foreach (var lockFile in Directory.EnumerateFiles(Root, id + "_sandbox:*.lock"))
        {
            File.Delete(lockFile);
        }
    }

    private RuntimeInvocation Invoke(params string[] args) => new(options.RunscPath, ["--root", Root, .. args]);
}
