using Corral.Cgroups;
using Corral.Common;
using Corral.Interop;

namespace Corral.Runtimes;

/// <summary>
/// crun refuses a hybrid cgroup host (v1 controllers, plus a cgroup2 mount such as
/// /sys/fs/cgroup/unified) while any controller is attached to the v2 hierarchy: "cgroups in hybrid
/// mode not supported, drop all controllers from cgroupv2", even with --cgroup-manager=disabled.
/// Such a controller is usually one that no v1 hierarchy took (hugetlb on the dev machine). Mounting
/// a v1 hierarchy for it moves it off the v2 hierarchy, and crun then runs: <see cref="Setup"/> does
/// that (idempotent); <see cref="EnsureSupported"/> refuses a crun run at once, with one line saying so.
/// </summary>
public static class CrunHost
{
    /// <summary>A hybrid host's cgroup2 mount with controllers attached; null when crun can run.</summary>
    public sealed record HybridConflict(string V2MountPoint, IReadOnlyList<string> Controllers, string V1Parent);

    public static HybridConflict? FindConflict() =>
        FindConflict(File.ReadAllText(MountInfo.SelfPath), path => File.Exists(path) ? File.ReadAllText(path) : null);

    /// <summary>
    /// Decides from mountinfo and the cgroup2 mount's cgroup.controllers (read through
    /// <paramref name="readFile"/>): hybrid means v1 hierarchies and a cgroup2 mount side by side.
    /// </summary>
    internal static HybridConflict? FindConflict(string mountInfo, Func<string, string?> readFile)
    {
        var mounts = MountInfo.Parse(mountInfo);
        var v1 = mounts.FirstOrDefault(m => m.FileSystemType == "cgroup");
        if (v1 is null)
        {
            return null; // pure v2 (or no cgroups): crun's own business
        }

        foreach (var v2 in mounts.Where(m => m.FileSystemType == "cgroup2"))
        {
            var controllers = (readFile(Path.Combine(v2.MountPoint, "cgroup.controllers")) ?? string.Empty)
                .Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            if (controllers.Length > 0)
            {
                return new HybridConflict(v2.MountPoint, controllers, Path.GetDirectoryName(v1.MountPoint) ?? "/sys/fs/cgroup");
            }
        }

        return null;
    }

    /// <summary>Throws the one-line error a crun run gets on a host where crun would refuse to start.</summary>
    public static void EnsureSupported()
    {
        if (FindConflict() is { } conflict)
        {
            throw Unsupported(conflict);
        }
    }

    internal static CorralException Unsupported(HybridConflict conflict) => CorralException.Host(
        $"crun cannot run on this host: it uses cgroup v1 and the cgroup v2 hierarchy at {conflict.V2MountPoint} has controllers attached ({string.Join(' ', conflict.Controllers)}), which crun refuses (\"cgroups in hybrid mode not supported\"); run `corral setup-crun` once as root (mounts a cgroup v1 hierarchy for them) or use --runtime runc");

    /// <summary>
    /// Mounts a cgroup v1 hierarchy at &lt;v1 parent&gt;/&lt;controller&gt; for each controller attached to a
    /// hybrid host's v2 hierarchy, which detaches it from there. Returns what it mounted (empty when
    /// nothing was needed). Fails, with one line, when a controller is in use on the v2 side.
    /// </summary>
    public static IReadOnlyList<string> Setup()
    {
        var conflict = FindConflict();
        if (conflict is null)
        {
            return [];
        }

        var mounted = new List<string>();
        foreach (var controller in conflict.Controllers)
        {
            if (controller.Contains('/', StringComparison.Ordinal) || controller.Contains(',', StringComparison.Ordinal) || controller is "." or "..")
            {
                throw CorralException.Host($"unexpected controller name '{controller}' in {conflict.V2MountPoint}/cgroup.controllers");
            }

            var target = Path.Combine(conflict.V1Parent, controller);
            try
            {
                Directory.CreateDirectory(target);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw CorralException.Host($"cannot create {target} for a cgroup v1 {controller} hierarchy: {ex.Message}", ex);
            }

            if (LibC.mount("cgroup", target, "cgroup", 0, controller) != 0)
            {
                var errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                var why = errno == EBUSY
                    ? $"the {controller} controller is in use on the cgroup v2 hierarchy (enabled in a cgroup.subtree_control there)"
                    : LibC.ErrorText(errno);
                throw CorralException.Host($"cannot mount a cgroup v1 {controller} hierarchy at {target}: {why}");
            }

            mounted.Add($"{controller} at {target}");
        }

        if (FindConflict() is { } left)
        {
            throw Unsupported(left);
        }

        return mounted;
    }

    private const int EBUSY = 16;
}
