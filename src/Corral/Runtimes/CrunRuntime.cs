namespace Corral.Runtimes;

/// <summary>
/// crun: runc's command line (run, kill, exec --process --pid-file, delete, list, --root) from a C
/// binary that starts containers faster. Like runc it places the container by the spec's cgroupsPath,
/// as the child <c>ctr</c> of the Corral-owned cgroup (its cgroupfs manager: the default, no
/// --systemd-cgroup), creates that child in every hierarchy and removes it as it exits, so the same
/// cgroup handling, OOM accounting and exec joining apply. On a hybrid host it refuses while any
/// controller is attached to the v2 hierarchy: <see cref="CrunHost"/> checks that first.
/// </summary>
internal sealed class CrunRuntime(RuntimeOptions options) : RuncCompatibleRuntime
{
    public override RuntimeKind Kind => RuntimeKind.Crun;

    public override string Name => "crun";

    public override string Root => options.CrunRoot;

    public override string Binary => options.CrunPath;

    /// <summary>crun keeps a directory per container under its root (status, config, exec fifo).</summary>
    protected override string StateFileName => "status";
}
