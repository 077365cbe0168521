namespace Corral.Supervision;

/// <summary>
/// Resolves paths inside a root filesystem the way the container will see them: symlinks are
/// followed relative to the rootfs, never to the host (bookworm's /bin is a link to usr/bin).
/// </summary>
internal static class RootfsResolver
{
    private const int MaxLinks = 40;

    /// <summary>Host path of <paramref name="containerPath"/> inside <paramref name="rootfs"/>, or null if it does not exist.</summary>
    public static string? Resolve(string rootfs, string containerPath)
    {
        var pending = new Stack<string>(containerPath.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        var resolved = new List<string>();
        var links = 0;
        while (pending.Count > 0)
        {
            var part = pending.Pop();
            if (part == ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (resolved.Count > 0)
                {
                    resolved.RemoveAt(resolved.Count - 1);
                }

                continue;
            }

            var hostPath = Path.Combine(rootfs, string.Join('/', resolved), part);
            var info = new FileInfo(hostPath);
            if (info.LinkTarget is { } target)
            {
                if (++links > MaxLinks)
                {
                    return null;
                }

                if (target.StartsWith('/'))
                {
                    resolved.Clear();
                }

                foreach (var segment in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse())
                {
                    pending.Push(segment);
                }

                continue;
            }

            if (!info.Exists && !Directory.Exists(hostPath))
            {
                return null;
            }

            resolved.Add(part);
        }

        return Path.Combine(rootfs, string.Join('/', resolved));
    }

    /// <summary>Finds <paramref name="command"/> as the container's exec would, through PATH when it has no slash.</summary>
    public static string? FindExecutable(string rootfs, string command, string pathVariable)
    {
        var candidates = command.Contains('/')
            ? [command]
            : pathVariable.Split(':', StringSplitOptions.RemoveEmptyEntries).Select(dir => dir.TrimEnd('/') + "/" + command);
        foreach (var candidate in candidates)
        {
            if (Resolve(rootfs, candidate) is { } host && File.Exists(host) && IsExecutable(host))
            {
                return candidate;
            }
        }

        return null;
    }

    private static bool IsExecutable(string hostPath) =>
        (File.GetUnixFileMode(hostPath) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0;
}
