using System.Globalization;
using Corral.Common;
using Corral.Interop;
using Corral.Oci;

namespace Corral.Rootfs;

/// <summary>What a mount puts at its container path.</summary>
public enum MountKind
{
    /// <summary>A host directory or file (`-v HOST:CONTAINER[:ro|rw]`).</summary>
    Bind,

    /// <summary>An in-memory filesystem (`--tmpfs CONTAINER[:size=SIZE]`).</summary>
    Tmpfs,
}

/// <summary>One mount a caller asks for, as given; <see cref="MountInput.Validate"/> returns it canonical.</summary>
public sealed record MountRequest
{
    public required MountKind Kind { get; init; }

    /// <summary>The host path of a bind mount; after validation, the path its symlinks resolved to at create.</summary>
    public string? Source { get; init; }

    public required string Target { get; init; }

    public bool ReadOnly { get; init; }

    /// <summary>A tmpfs's size; null: <see cref="MountInput.DefaultTmpfsBytes"/>.</summary>
    public long? SizeBytes { get; init; }

    /// <summary>Create a missing host directory (`-v HOST:CONTAINER:create`) instead of refusing it.</summary>
    public bool CreateSource { get; init; }

    public override string ToString() => Kind == MountKind.Bind
        ? $"{Source}:{Target}:{(ReadOnly ? "ro" : "rw")}"
        : $"tmpfs {Target} size={ByteSize.Format(SizeBytes ?? MountInput.DefaultTmpfsBytes)}";
}

/// <summary>
/// Parses and checks mounts once, for the CLI, the API and the shim alike: container paths absolute,
/// without "..", never covering the root, /proc, /sys or /dev (nor under them); bind sources absolute
/// and existing (or created when asked), resolved once to what their symlinks pointed to then.
/// </summary>
public static class MountInput
{
    public const long DefaultTmpfsBytes = 64L << 20;

    public const int MaxMounts = 64;

    private const int MaxPath = 4096;

    private static readonly string[] Covered = ["/proc", "/sys", "/dev"];

    /// <summary>`HOST_PATH:CONTAINER_PATH[:ro|rw][,create]` (the options may also be `ro,create`).</summary>
    public static MountRequest ParseVolume(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(':');
        if (parts.Length is < 2 or > 3 || parts[0].Length == 0 || parts[1].Length == 0)
        {
            throw CorralException.Invalid($"invalid -v {InputRules.Quote(text)}: expected HOST_PATH:CONTAINER_PATH[:ro|rw]");
        }

        var readOnly = false;
        var create = false;
        if (parts.Length == 3)
        {
            foreach (var option in parts[2].Split(','))
            {
                switch (option)
                {
                    case "ro":
                        readOnly = true;
                        break;
                    case "rw":
                        readOnly = false;
                        break;
                    case "create":
                        create = true;
                        break;
                    default:
                        throw CorralException.Invalid($"invalid -v {InputRules.Quote(text)}: unknown option {InputRules.Quote(option)} (use ro, rw or create)");
                }
            }
        }

        return new MountRequest { Kind = MountKind.Bind, Source = parts[0], Target = parts[1], ReadOnly = readOnly, CreateSource = create };
    }

    /// <summary>`CONTAINER_PATH[:size=SIZE][,ro]`.</summary>
    public static MountRequest ParseTmpfs(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        var target = colon < 0 ? text : text[..colon];
        long? size = null;
        var readOnly = false;
        if (colon >= 0)
        {
            foreach (var option in text[(colon + 1)..].Split(','))
            {
                if (option.StartsWith("size=", StringComparison.Ordinal))
                {
                    if (!ByteSize.TryParse(option["size=".Length..], out var bytes, out _) || bytes <= 0)
                    {
                        throw CorralException.Invalid($"invalid --tmpfs {InputRules.Quote(text)}: size must be a positive size such as 64Mi");
                    }

                    size = bytes;
                }
                else if (option == "ro")
                {
                    readOnly = true;
                }
                else
                {
                    throw CorralException.Invalid($"invalid --tmpfs {InputRules.Quote(text)}: unknown option {InputRules.Quote(option)} (use size=SIZE)");
                }
            }
        }

        return new MountRequest { Kind = MountKind.Tmpfs, Target = target, SizeBytes = size, ReadOnly = readOnly };
    }

    /// <summary>
    /// The one check of a request's mounts; returns them canonical (targets normalised, bind sources
    /// resolved). A missing source is created only when asked, and only once the rest checked out.
    /// </summary>
    public static IReadOnlyList<MountRequest> Validate(IReadOnlyList<MountRequest> mounts)
    {
        ArgumentNullException.ThrowIfNull(mounts);
        if (mounts.Count > MaxMounts)
        {
            throw CorralException.Invalid($"too many mounts ({mounts.Count}): at most {MaxMounts}");
        }

        var result = new List<MountRequest>(mounts.Count);
        var targets = new HashSet<string>(StringComparer.Ordinal);
        foreach (var mount in mounts)
        {
            var target = Target(mount.Target);
            if (!targets.Add(target))
            {
                throw CorralException.Invalid($"invalid mount {InputRules.Quote(mount.Target)}: two mounts at the same container path");
            }

            if (mount.Kind == MountKind.Tmpfs)
            {
                if (mount.Source is { Length: > 0 })
                {
                    throw CorralException.Invalid($"invalid --tmpfs {InputRules.Quote(target)}: a tmpfs has no host path");
                }

                var size = mount.SizeBytes ?? DefaultTmpfsBytes;
                if (size <= 0 || size > InputRules.MaxBytes)
                {
                    throw CorralException.Invalid($"invalid --tmpfs {InputRules.Quote(target)}: size must be between 1 byte and 4 EiB");
                }

                result.Add(mount with { Target = target, SizeBytes = size, CreateSource = false });
                continue;
            }

            result.Add(mount with { Target = target, Source = CheckSource(mount) });
        }

        // Created last: a request refused for any other reason creates nothing.
        for (var i = 0; i < result.Count; i++)
        {
            if (result[i] is { Kind: MountKind.Bind, CreateSource: true } bind && !Path.Exists(bind.Source))
            {
                Directory.CreateDirectory(bind.Source!);
                result[i] = bind with { Source = LibC.RealPath(bind.Source!) ?? bind.Source };
            }
        }

        return result;
    }

    /// <summary>A directory bind sources may come from (`corral serve --allow-mounts-under`), its symlinks resolved.</summary>
    public static string AllowedRoot(string dir) =>
        LibC.RealPath(dir) is { } real && Directory.Exists(real) && real != "/"
            ? real
            : throw CorralException.Invalid($"invalid --allow-mounts-under {InputRules.Quote(dir)}: an existing directory other than / is needed");

    /// <summary>
    /// Refuses (FAILED_PRECONDITION) a bind source that does not lie under one of <paramref name="roots"/>
    /// (the daemon's --allow-mounts-under), judged by what its symlinks resolve to (a path still to be
    /// created: as written, which may then hold no "..").
    /// </summary>
    public static void CheckAllowed(IReadOnlyList<MountRequest> mounts, IReadOnlyList<string> roots)
    {
        ArgumentNullException.ThrowIfNull(mounts);
        ArgumentNullException.ThrowIfNull(roots);
        foreach (var mount in mounts.Where(m => m.Kind == MountKind.Bind))
        {
            var given = mount.Source ?? string.Empty;
            InputRules.NoControl("mount host path", given);
            if (!given.StartsWith('/') || given.Split('/').Any(p => p == ".."))
            {
                throw CorralException.Invalid($"invalid -v {InputRules.Quote(given)}: the host path must be absolute, without '..'");
            }

            var source = LibC.RealPath(given) ?? given.TrimEnd('/');
            var allowed = roots.Select(r => LibC.RealPath(r)).OfType<string>()
                .Any(root => source == root || source.StartsWith(root.TrimEnd('/') + "/", StringComparison.Ordinal));
            if (!allowed)
            {
                throw new CorralException(ErrorKind.FailedPrecondition, roots.Count == 0
                    ? $"bind mount of {InputRules.Quote(source)} refused: this daemon allows none (start it with `corral serve --allow-mounts-under DIR`)"
                    : $"bind mount of {InputRules.Quote(source)} refused: it is not under {string.Join(" or ", roots)} (`corral serve --allow-mounts-under`)");
            }
        }
    }

    /// <summary>The mounts as the OCI spec has them: binds private, without set-id programs or devices.</summary>
    public static IEnumerable<MountSpec> ToSpec(IReadOnlyList<MountRequest> mounts)
    {
        ArgumentNullException.ThrowIfNull(mounts);
        foreach (var mount in mounts)
        {
            var access = mount.ReadOnly ? "ro" : "rw";
            yield return mount.Kind == MountKind.Bind
                ? new MountSpec(mount.Target, "bind", mount.Source!, ["rbind", "rprivate", "nosuid", "nodev", access])
                : new MountSpec(mount.Target, "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777", $"size={mount.SizeBytes!.Value.ToString(CultureInfo.InvariantCulture)}", access]);
        }
    }

    /// <summary>A container path: absolute, no "..", not the root nor /proc, /sys, /dev or below them. Returns it normalised.</summary>
    public static string Target(string target)
    {
        ArgumentNullException.ThrowIfNull(target);
        InputRules.NoControl("mount path", target);
        if (!target.StartsWith('/'))
        {
            throw CorralException.Invalid($"invalid mount path {InputRules.Quote(target)}: must be an absolute path in the container");
        }

        var parts = target.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Any(p => p == ".."))
        {
            throw CorralException.Invalid($"invalid mount path {InputRules.Quote(target)}: '..' is not allowed");
        }

        var normal = "/" + string.Join('/', parts.Where(p => p != "."));
        if (normal == "/" || normal.Length > MaxPath)
        {
            throw CorralException.Invalid($"invalid mount path {InputRules.Quote(target)}: {(normal == "/" ? "a mount cannot cover the container's root" : "too long")}");
        }

        foreach (var covered in Covered)
        {
            if (normal == covered || normal.StartsWith(covered + "/", StringComparison.Ordinal))
            {
                throw CorralException.Invalid($"invalid mount path {InputRules.Quote(target)}: {covered} belongs to the runtime and cannot be mounted over");
            }
        }

        return normal;
    }

    private static string CheckSource(MountRequest mount)
    {
        var source = mount.Source ?? string.Empty;
        InputRules.NoControl("mount host path", source);
        if (!source.StartsWith('/') || source.Length > MaxPath)
        {
            throw CorralException.Invalid($"invalid -v {InputRules.Quote(source)}: the host path must be absolute");
        }

        if (source.Contains(',', StringComparison.Ordinal))
        {
            throw CorralException.Invalid($"invalid -v {InputRules.Quote(source)}: the host path cannot contain ','");
        }

        // Resolved once, now: the mount is of what the path's symlinks named at create.
        if (LibC.RealPath(source) is { } real)
        {
            if (real == "/")
            {
                throw CorralException.Invalid($"invalid -v {InputRules.Quote(source)}: the host's root filesystem is never mounted into a container");
            }

            if (Files.FileStatus.Of(AtCalls.AT_FDCWD, real) is not { } st || !(st.IsDirectory || st.IsRegular))
            {
                throw CorralException.Invalid($"invalid -v {InputRules.Quote(source)}: not a directory or a regular file");
            }

            return real;
        }

        if (!mount.CreateSource)
        {
            throw CorralException.Invalid($"invalid -v {InputRules.Quote(source)}: no such file or directory on the host (add :create to make it)");
        }

        // Only plain, ".."-free paths are created (the directory's parent must resolve).
        if (source.Split('/').Any(p => p is ".." or "."))
        {
            throw CorralException.Invalid($"invalid -v {InputRules.Quote(source)}: a path to create cannot hold '.' or '..'");
        }

        return source.TrimEnd('/');
    }
}
