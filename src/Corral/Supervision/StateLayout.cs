using System.Security.Cryptography;
using System.Text;
using Corral.Cgroups;

namespace Corral.Supervision;

/// <summary>
/// Everything a state dir's containers use outside it is named after the state dir, so two state dirs
/// never share a runtime container or a cgroup: the runtimes' roots are <c>&lt;state-dir&gt;/runc</c> and
/// <c>&lt;state-dir&gt;/runsc</c>, the cgroups live under <c>corral/&lt;id&gt;</c> for the default state dir
/// (/run/corral) and under <c>corral-&lt;ns&gt;/&lt;id&gt;</c> for any other, ns being the first 12 hex digits
/// of the SHA-256 of the state dir's full path.
/// </summary>
public static class StateLayout
{
    public const string DefaultStateDir = "/run/corral";

    public static string Canonical(string stateDir) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(stateDir));

    public static string RuncRoot(string stateDir) => Path.Combine(Canonical(stateDir), "runc");

    public static string RunscRoot(string stateDir) => Path.Combine(Canonical(stateDir), "runsc");

    public static string CrunRoot(string stateDir) => Path.Combine(Canonical(stateDir), "crun");

    /// <summary>The cgroup directory (in every hierarchy) that holds this state dir's container cgroups.</summary>
    public static string CgroupParent(string stateDir)
    {
        var canonical = Canonical(stateDir);
        return canonical == DefaultStateDir
            ? CgroupV1Driver.DefaultParent
            : $"{CgroupV1Driver.DefaultParent}-{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)))[..12]}";
    }
}
