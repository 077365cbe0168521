using System.Text;
using Corral.Common;

namespace Corral.Users;

/// <summary>
/// Resolves docker's <c>--user</c> (or an image's <c>User</c>) against a container's root filesystem:
/// its own /etc/passwd and /etc/group, read from inside the root, never the host's.
/// </summary>
public static class ContainerUsers
{
    /// <summary>The largest /etc/passwd or /etc/group read: 4 MiB.</summary>
    public const int MaxFileBytes = 4 << 20;

    /// <summary>
    /// The identity <paramref name="user"/> names in the root filesystem at <paramref name="rootDir"/>
    /// (null or empty: root). The files are opened with openat2 RESOLVE_IN_ROOT, so a symlinked
    /// /etc/passwd resolves inside the root; a missing file counts as empty. See <see cref="UserDatabase.Resolve"/>.
    /// </summary>
    public static ResolvedUser Resolve(string rootDir, string? user)
    {
        var spec = string.IsNullOrEmpty(user) ? null : UserSpec.Parse(user);
        using var root = Files.ContainerRoot.Open(rootDir);
        Exception Fail(string why) => CorralException.Invalid(spec is null ? $"cannot resolve the container's user: {why}" : $"invalid --user {InputRules.Quote(spec.Text)}: {why}");
        var passwd = root.ReadFile("/etc/passwd", MaxFileBytes, Fail);
        var group = root.ReadFile("/etc/group", MaxFileBytes, Fail);
        return UserDatabase.Parse(Decode(passwd), Decode(group)).Resolve(spec);
    }

    private static string? Decode(byte[]? bytes) => bytes is null ? null : Encoding.UTF8.GetString(bytes);
}
