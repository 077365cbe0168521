using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Interop;

namespace Corral.Images;

/// <summary>What mountinfo says about an overlay (or any mount point): mounted, and its lower directories.</summary>
public static class OverlayRootfs
{
    /// <summary>Unmounts the overlay; lazily if it is still busy. No error when it is not mounted.</summary>
    public static void Unmount(string target)
    {
        if (!IsMounted(target))
        {
            return;
        }

        if (LibC.umount2(target, 0) != 0 && LibC.umount2(target, LibC.MNT_DETACH) != 0)
        {
            throw new IOException($"cannot unmount {target}: {LibC.ErrorText(Marshal.GetLastPInvokeError())}");
        }
    }

    /// <summary>The lower directories of the overlay mounted at <paramref name="target"/> (top first), from mountinfo; empty when none is.</summary>
    public static IReadOnlyList<string> LowerDirs(string target) =>
        SuperOptions(target)?.Split(',').FirstOrDefault(o => o.StartsWith("lowerdir=", StringComparison.Ordinal)) is { } lower
            ? lower["lowerdir=".Length..].Split(':', StringSplitOptions.RemoveEmptyEntries)
            : [];

    public static bool IsMounted(string target) => SuperOptions(target) is not null;

    /// <summary>The superblock options of what is mounted at <paramref name="target"/> (mountinfo's last field); null when nothing is.</summary>
    private static string? SuperOptions(string target)
    {
        var full = Path.GetFullPath(target);
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4 && fields[4].Replace("\\040", " ", StringComparison.Ordinal) == full)
            {
                return fields[^1];
            }
        }

        return null;
    }
}

/// <summary>Docker's rules for what an image's config contributes to a run.</summary>
public static class ImageRunDefaults
{
    /// <summary>
    /// The command: the image's Entrypoint, then the caller's arguments when given, else the image's Cmd.
    /// </summary>
    public static IReadOnlyList<string> Command(ContainerConfig? config, IReadOnlyList<string> requested)
    {
        ArgumentNullException.ThrowIfNull(requested);
        var entrypoint = config?.Entrypoint ?? [];
        var args = requested.Count > 0 ? requested : (IReadOnlyList<string>)(config?.Cmd ?? []);
        return [.. entrypoint, .. args];
    }

    /// <summary>The image's environment first, then the caller's, later ones winning.</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> Env(ContainerConfig? config, IReadOnlyList<KeyValuePair<string, string>> requested)
    {
        ArgumentNullException.ThrowIfNull(requested);
        var env = new List<KeyValuePair<string, string>>();
        foreach (var entry in config?.Env ?? [])
        {
            var eq = entry.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                env.Add(new(entry[..eq], entry[(eq + 1)..]));
            }
        }

        env.AddRange(requested);
        return env;
    }

    /// <summary>The caller's user, else the image's User (empty: root).</summary>
    public static string? User(ContainerConfig? config, string? requested) =>
        requested ?? (string.IsNullOrEmpty(config?.User) ? null : config.User);

    public static string? Workdir(ContainerConfig? config, string? requested) =>
        requested ?? (string.IsNullOrEmpty(config?.WorkingDir) ? null : config.WorkingDir);
}
