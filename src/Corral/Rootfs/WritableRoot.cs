using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Images;
using Corral.Interop;
using Corral.Runtimes;

namespace Corral.Rootfs;

/// <summary>
/// A container's root filesystem as an overlay: the image's layers (or a root filesystem directory)
/// read-only below, the container's own copy-on-write layer above, nothing of the lower copied. All
/// of it lives in one directory the container owns:
/// <list type="bullet">
/// <item><c>rootfs/</c>: the merged view the runtime is given;</item>
/// <item><c>layer/</c>: <c>upper/</c> and <c>work/</c>, on the host's disk, or, with a disk cap, on an
/// ext4 filesystem of exactly that size in <c>disk.img</c> (a sparse file, loop-mounted), so writes
/// beyond the cap fail inside with ENOSPC and nothing else on the host notices.</item>
/// </list>
/// <see cref="Remove"/> takes all of it away again, and is safe to call on anything half made.
/// </summary>
public static class WritableRoot
{
    /// <summary>The smallest disk cap: ext4's own metadata needs a few MiB.</summary>
    public const long MinDiskBytes = 16L << 20;

    /// <summary>The kernel takes mount options up to one page.</summary>
    private const int MaxOptionsLength = 4000;

    public static string RootfsOf(string dir) => Path.Combine(dir, "rootfs");

    public static string UpperOf(string dir) => Path.Combine(LayerOf(dir), "upper");

    /// <summary>Where upper and work live: a plain directory, or the disk's mount point.</summary>
    private static string LayerOf(string dir) => Path.Combine(dir, "layer");

    private static string WorkOf(string dir) => Path.Combine(LayerOf(dir), "work");

    private static string DiskOf(string dir) => Path.Combine(dir, "disk.img");

    /// <summary>True when the directory holds a layer (on the host disk, or in its disk image) that can be mounted again.</summary>
    public static bool HasLayer(string dir) => Directory.Exists(UpperOf(dir)) || File.Exists(DiskOf(dir));

    /// <summary>Checks a --disk value: at least <see cref="MinDiskBytes"/>.</summary>
    public static long? ValidateDisk(long? bytes) => bytes switch
    {
        null => null,
        < MinDiskBytes => throw CorralException.Invalid($"invalid --disk {ByteSize.Format(bytes.Value)}: at least {ByteSize.Format(MinDiskBytes)}"),
        > InputRules.MaxBytes => throw CorralException.Invalid($"invalid --disk {bytes.Value}: at most 4 EiB"),
        _ => bytes,
    };

    /// <summary>Mounts the overlay of <paramref name="lowers"/> (bottom first) over a new, empty layer at &lt;dir&gt;/rootfs and returns that path.</summary>
    public static async Task<string> MountAsync(string dir, IReadOnlyList<string> lowers, long? diskBytes, TimeSpan deadline, CancellationToken cancellationToken = default)
    {
        CheckLowers(lowers);
        PrivateFiles.CreateOwnDirectory(dir);
        Directory.CreateDirectory(LayerOf(dir));
        if (diskBytes is { } size)
        {
            await MountDiskAsync(DiskOf(dir), LayerOf(dir), size, deadline, cancellationToken).ConfigureAwait(false);
        }

        // The upper directory is the container's "/" (a subdirectory: ext4's lost+found stays out of
        // sight): root's and world-readable, as in an image.
        var upper = UpperOf(dir);
        Directory.CreateDirectory(upper);
        Directory.CreateDirectory(WorkOf(dir));
        File.SetUnixFileMode(upper, (UnixFileMode)0b111_101_101);
        return MountOverlay(dir, lowers);
    }

    /// <summary>
    /// Mounts an existing layer again (a kept root whose container ended: its files are read or
    /// written from outside): its disk, when it has one, then the overlay. Returns &lt;dir&gt;/rootfs.
    /// </summary>
    public static async Task<string> RemountAsync(string dir, IReadOnlyList<string> lowers, TimeSpan deadline, CancellationToken cancellationToken = default)
    {
        CheckLowers(lowers);
        if (File.Exists(DiskOf(dir)) && !OverlayRootfs.IsMounted(LayerOf(dir)))
        {
            await RunAsync("mount -t ext4 -o loop,noatime \"$1\" \"$2\"", DiskOf(dir), LayerOf(dir), deadline, cancellationToken).ConfigureAwait(false);
        }

        if (!Directory.Exists(UpperOf(dir)))
        {
            throw CorralException.Precondition("the container's layer is gone");
        }

        return OverlayRootfs.IsMounted(RootfsOf(dir)) ? RootfsOf(dir) : MountOverlay(dir, lowers);
    }

    /// <summary>
    /// Unmounts the overlay and the disk; the layer's files (and the disk image) stay, for a kept root
    /// to be mounted again. Returns the overlay's lower directories (top first; empty when none was mounted).
    /// </summary>
    public static IReadOnlyList<string> Unmount(string dir)
    {
        var target = RootfsOf(dir);
        var lowers = Directory.Exists(dir) ? OverlayRootfs.LowerDirs(target) : [];
        if (Directory.Exists(dir))
        {
            OverlayRootfs.Unmount(target);
            OverlayRootfs.Unmount(LayerOf(dir));
        }

        return lowers;
    }

    /// <summary>
    /// Unmounts the overlay and the disk and deletes the disk image; the directory itself stays for its
    /// owner to delete. Returns the overlay's lower directories (top first; empty when none was mounted).
    /// </summary>
    public static IReadOnlyList<string> Remove(string dir)
    {
        var lowers = Unmount(dir);
        if (Directory.Exists(dir))
        {
            File.Delete(DiskOf(dir));
        }

        return lowers;
    }

    private static void CheckLowers(IReadOnlyList<string> lowers)
    {
        ArgumentNullException.ThrowIfNull(lowers);
        if (lowers.Count == 0)
        {
            throw new CorralException("the image has no layers");
        }

        foreach (var lower in lowers)
        {
            if (lower.AsSpan().IndexOfAny(",:\\") >= 0 || !Directory.Exists(lower))
            {
                throw new CorralException($"root filesystem directory '{lower}' is missing or has a character overlayfs cannot take (, : \\)");
            }
        }
    }

    private static string MountOverlay(string dir, IReadOnlyList<string> lowers)
    {
        var target = RootfsOf(dir);
        Directory.CreateDirectory(target);
        var options = $"lowerdir={string.Join(':', lowers.Reverse())},upperdir={UpperOf(dir)},workdir={WorkOf(dir)}";
        if (options.Length > MaxOptionsLength)
        {
            throw new CorralException($"the image has too many layers ({lowers.Count}) for one overlay mount");
        }

        if (LibC.mount("overlay", target, "overlay", 0, options) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new CorralException($"cannot mount the container's overlay at {target}: {LibC.ErrorText(errno)} (overlayfs needs root and a kernel with overlay support)");
        }

        return target;
    }

    /// <summary>
    /// A sparse file of exactly <paramref name="bytes"/>, an ext4 filesystem on it (no journal: the layer
    /// dies with the container; no reserved blocks: the cap is the container's), loop-mounted at
    /// <paramref name="mountPoint"/>; the loop device goes with the unmount (autoclear).
    /// </summary>
    private static async Task MountDiskAsync(string image, string mountPoint, long bytes, TimeSpan deadline, CancellationToken cancellationToken)
    {
        try
        {
            using (var file = new FileStream(image, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                file.SetLength(bytes);
            }
        }
        catch (IOException ex)
        {
            throw CorralException.Host($"cannot create the container's disk image {image}: {ex.Message}", ex);
        }

        await RunAsync("mkfs.ext4 -q -F -m 0 -O ^has_journal -E lazy_itable_init=1,nodiscard \"$1\" && mount -t ext4 -o loop,noatime \"$1\" \"$2\"", image, mountPoint, deadline, cancellationToken).ConfigureAwait(false);
    }

    private static async Task RunAsync(string script, string image, string mountPoint, TimeSpan deadline, CancellationToken cancellationToken)
    {
        var result = await RuntimeCommandRunner.RunAsync(new RuntimeInvocation("/bin/sh", ["-c", script, "corral-disk", image, mountPoint]), deadline, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw CorralException.Host($"cannot mount the container's disk {image}: {result.Message.ReplaceLineEndings(" ")} (needs e2fsprogs and loop devices)");
        }
    }
}
