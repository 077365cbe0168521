using System.Globalization;

namespace Corral.Runtimes;

public enum RuntimeKind
{
    Gvisor,
    Runc,
    Crun,
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

    public string CrunPath { get; set; } = "crun";

    /// <summary>Corral keeps its runtimes' state apart from other users of the same binaries.</summary>
    public string RuncRoot { get; set; } = "/run/corral/runc";

    public string RunscRoot { get; set; } = "/run/corral/runsc";

    public string CrunRoot { get; set; } = "/run/corral/crun";

    /// <summary>gVisor platform: ptrace works everywhere; kvm or systrap where the host allows.</summary>
    public string RunscPlatform { get; set; } = "ptrace";
}

/// <summary>One OCI runtime: how to run, signal, delete and inspect a container with it.</summary>
public interface IContainerRuntime
{
    RuntimeKind Kind { get; }

    /// <summary>The name users type and records carry: "runc", "crun" or "gvisor".</summary>
    string Name { get; }

    string Root { get; }

    /// <summary>
    /// True when the runtime process itself must be started inside the container's cgroup (runsc
    /// with --ignore-cgroups); false when the runtime places the container by cgroupsPath (runc, crun).
    /// </summary>
    bool LaunchesInsideCgroup { get; }

    /// <summary>The binary this runtime runs (its configured path).</summary>
    string Binary { get; }

    /// <summary>
    /// True when the container's processes are host processes whose pids the runtime reports (runc,
    /// crun); false for gVisor, whose processes exist only inside its sandbox.
    /// </summary>
    bool HostPids { get; }

    /// <summary>Runs the container in the foreground; returns when its PID 1 exits.</summary>
    RuntimeInvocation Run(string id, string bundleDir, string pidFile, bool gpu, bool network = false, bool writableRoot = false);

    RuntimeInvocation Kill(string id, int signal);

    /// <summary>
    /// Runs the process described by <paramref name="processFile"/> (OCI process.json) in the running
    /// container, in the foreground: returns with its exit status. <paramref name="pidFile"/> gets its
    /// pid (on the host for runc; runsc writes the sandbox-internal pid to <paramref name="internalPidFile"/>).
    /// </summary>
    RuntimeInvocation Exec(string id, string processFile, string pidFile, string internalPidFile);

    /// <summary>
    /// The same exec, detached: the runtime starts the process with the caller's own stdio and returns
    /// once it runs, having written its host pid to <paramref name="pidFile"/>; null where the foreground
    /// exec already hands the process the caller's stdio (crun, runsc). runc's foreground exec copies stdio
    /// through pipes of its own and forwards every signal it takes to the process, the SIGPIPE its stdin
    /// copy gets once the process closed its stdin among them; run detached under <see cref="Supervision.ExecReaper"/>, it cannot.
    /// </summary>
    RuntimeInvocation? ExecDetached(string id, string processFile, string pidFile);

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

    /// <summary>
    /// Removes exactly <paramref name="id"/>'s state once its processes are known dead, where the runtime's
    /// own delete cannot address it (runsc takes an id as a prefix: "gp" is ambiguous while "gp1" exists).
    /// </summary>
    void RemoveStateOfStopped(string id)
    {
    }
}

public static class ContainerRuntimes
{
    public static IContainerRuntime Create(RuntimeKind kind, RuntimeOptions options) => kind switch
    {
        RuntimeKind.Runc => new RuncRuntime(options),
        RuntimeKind.Gvisor => new RunscRuntime(options),
        RuntimeKind.Crun => new CrunRuntime(options),
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
            case "crun":
                kind = RuntimeKind.Crun;
                return true;
            default:
                kind = default;
                return false;
        }
    }

    public static string NameOf(RuntimeKind kind) => kind switch
    {
        RuntimeKind.Runc => "runc",
        RuntimeKind.Crun => "crun",
        _ => "gvisor",
    };

    /// <summary>The Debian package that provides the runtime's binary.</summary>
    public static string PackageOf(RuntimeKind kind) => kind switch
    {
        RuntimeKind.Runc => "runc",
        RuntimeKind.Crun => "crun",
        _ => "runsc",
    };

    internal static string Signal(int signal) => signal.ToString(CultureInfo.InvariantCulture);
}

/// <summary>runc's command line (run, kill, exec --process --pid-file, delete --force, list, --root), shared by runc and crun.</summary>
internal abstract class RuncCompatibleRuntime : IContainerRuntime
{
    public abstract RuntimeKind Kind { get; }

    public abstract string Name { get; }

    public abstract string Root { get; }

    public abstract string Binary { get; }

    public bool LaunchesInsideCgroup => false;

    public bool HostPids => true;

    /// <summary>The file in a container's state directory that says the runtime still knows it.</summary>
    protected abstract string StateFileName { get; }

    /// <summary>runc and crun write their own failures to a JSON log in the bundle (<see cref="RuntimeFailures"/>).</summary>
    public RuntimeInvocation Run(string id, string bundleDir, string pidFile, bool gpu, bool network = false, bool writableRoot = false) =>
        Invoke("--log", Path.Combine(bundleDir, RuntimeFailures.RuncLogName), "--log-format", "json", "run", "--bundle", bundleDir, "--pid-file", pidFile, id);

    public RuntimeInvocation Kill(string id, int signal) => Invoke("kill", id, ContainerRuntimes.Signal(signal));

    public RuntimeInvocation Exec(string id, string processFile, string pidFile, string internalPidFile) =>
        Invoke("exec", "--process", processFile, "--pid-file", pidFile, id);

    public virtual RuntimeInvocation? ExecDetached(string id, string processFile, string pidFile) => null;

    public RuntimeInvocation? KillProcess(string id, int pid, int signal) => null;

    public RuntimeInvocation Delete(string id) => Invoke("delete", "--force", id);

    public RuntimeInvocation List() => Invoke("list");

    /// <summary>A directory per container under the root.</summary>
    public bool HasState(string id) => Directory.Exists(Path.Combine(Root, id));

    public void RemoveLeftoverState(string id)
    {
        var dir = Path.Combine(Root, id);
        if (Directory.Exists(dir) && !File.Exists(Path.Combine(dir, StateFileName)))
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    protected RuntimeInvocation Invoke(params string[] args) => new(Binary, ["--root", Root, .. args]);
}

internal sealed class RuncRuntime(RuntimeOptions options) : RuncCompatibleRuntime
{
    public override RuntimeKind Kind => RuntimeKind.Runc;

    public override string Name => "runc";

    public override string Root => options.RuncRoot;

    public override string Binary => options.RuncPath;

    protected override string StateFileName => "state.json";

    public override RuntimeInvocation? ExecDetached(string id, string processFile, string pidFile) =>
        Invoke("exec", "--detach", "--process", processFile, "--pid-file", pidFile, id);
}

internal sealed class RunscRuntime(RuntimeOptions options) : IContainerRuntime
{
    public RuntimeKind Kind => RuntimeKind.Gvisor;

    public string Name => "gvisor";

    public string Root => options.RunscRoot;

    public bool LaunchesInsideCgroup => true;

    public string Binary => options.RunscPath;

    public bool HostPids => false;

    public RuntimeInvocation Run(string id, string bundleDir, string pidFile, bool gpu, bool network = false, bool writableRoot = false)
    {
        // --ignore-cgroups keeps `runsc run` returning as soon as PID 1 dies (the seed's fix);
        // the limits come from the Corral-owned cgroup the runsc process is started in.
        // A bridged sandbox: runsc starts its sandbox in the network namespace the spec names (Corral's,
        // behind its bridge and firewall). In --network host mode the sentry's sockets are host sockets
        // of that namespace: runsc 20221219 refuses --network sandbox (its own netstack) on kernels that
        // show /proc/sys/net/core/rmem_default in every namespace, which it takes for the root namespace.
        List<string> args = ["--root", Root, "--platform", options.RunscPlatform, "--network", network ? "host" : "none", "--ignore-cgroups"];

        // A writable root takes files from outside while it runs (`corral cp`): the sentry then checks the
        // host's tree on each lookup instead of trusting its cache (the default, exclusive, would hide them).
        if (writableRoot)
        {
            args.Add("--file-access=shared");
        }

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

    public RuntimeInvocation? ExecDetached(string id, string processFile, string pidFile) => null;

    public RuntimeInvocation? KillProcess(string id, int pid, int signal) =>
        Invoke("kill", "--pid", pid.ToString(CultureInfo.InvariantCulture), id, ContainerRuntimes.Signal(signal));

    public RuntimeInvocation Delete(string id) => Invoke("delete", "--force", id);

    public RuntimeInvocation List() => Invoke("list");

    public bool HasState(string id) =>
        Directory.Exists(Root) && Directory.EnumerateFileSystemEntries(Root, id + "_sandbox:*").Any();

    public void RemoveStateOfStopped(string id)
    {
        // A single-container sandbox: sandbox id and container id are the same.
        foreach (var suffix in new[] { ".state", ".lock" })
        {
            File.Delete(Path.Combine(Root, $"{id}_sandbox:{id}{suffix}"));
        }
    }

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
