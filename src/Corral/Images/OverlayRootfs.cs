using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Interop;

namespace Corral.Images;

/// <summary>
/// A container's root filesystem as an overlayfs view of its image's layers: the layers are the
/// lower directories (top first), upper and work directories live in the bundle and go with it.
/// </summary>
public static class OverlayRootfs
{
    /// <summary>The kernel takes mount options up to one page.</summary>
    private const int MaxOptionsLength = 4000;

    /// <summary>Mounts the overlay at &lt;bundle&gt;/rootfs and returns that path.</summary>
    /// <param name="layers">Unpacked layer directories, bottom first.</param>
    public static string Mount(string bundleDir, IReadOnlyList<string> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count == 0)
        {
            throw new CorralException("the image has no layers");
        }

        foreach (var layer in layers)
        {
            if (layer.AsSpan().IndexOfAny(",:\\") >= 0 || !Directory.Exists(layer))
            {
                throw new CorralException($"image layer directory '{layer}' is missing or has a character overlayfs cannot take (, : \\)");
            }
        }

        var upper = Path.Combine(bundleDir, "upper");
        var work = Path.Combine(bundleDir, "work");
        var target = Path.Combine(bundleDir, "rootfs");
        Directory.CreateDirectory(upper);
        Directory.CreateDirectory(work);
        Directory.CreateDirectory(target);
        var options = $"lowerdir={string.Join(':', layers.Reverse())},upperdir={upper},workdir={work}";
        if (options.Length > MaxOptionsLength)
        {
            throw new CorralException($"the image has too many layers ({layers.Count}) for one overlay mount");
        }

        if (LibC.mount("overlay", target, "overlay", 0, options) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new CorralException($"cannot mount the image's overlay at {target}: {LibC.ErrorText(errno)} (overlayfs needs root and a kernel with overlay support)");
        }

        return target;
    }

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
    public static IReadOnlyList<string> LowerDirs(string target)
    {
        var full = Path.GetFullPath(target);
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4 && fields[4].Replace("\\040", " ", StringComparison.Ordinal) == full)
            {
                foreach (var option in fields[^1].Split(','))
                {
                    if (option.StartsWith("lowerdir=", StringComparison.Ordinal))
                    {
                        return option["lowerdir=".Length..].Split(':', StringSplitOptions.RemoveEmptyEntries);
                    }
                }
            }
        }

        return [];
    }

    public static bool IsMounted(string target)
    {
        var full = Path.GetFullPath(target);
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4 && fields[4].Replace("\\040", " ", StringComparison.Ordinal) == full)
            {
                return true;
            }
        }

        return false;
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

    public static string? Workdir(ContainerConfig? config, string? requested) =>
        requested ?? (string.IsNullOrEmpty(config?.WorkingDir) ? null : config.WorkingDir);
}
