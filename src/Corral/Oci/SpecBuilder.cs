using System.Text.Json;
using Corral.Interop;

namespace Corral.Oci;

/// <summary>What a container's config.json is built from.</summary>
public sealed record SpecInput
{
    public required string RootfsPath { get; init; }

    public required IReadOnlyList<string> Args { get; init; }

    public IReadOnlyList<KeyValuePair<string, string>> Env { get; init; } = [];

    public string Workdir { get; init; } = "/";

    public string Hostname { get; init; } = "corral";

    /// <summary>runc's cgroupsPath; null leaves the runtime's default.</summary>
    public string? CgroupsPath { get; init; }

    public IReadOnlyList<DeviceSpec> Devices { get; init; } = [];

    /// <summary>Size of a /tmp tmpfs; null: none (a writable root keeps /tmp in its own layer).</summary>
    public string? TmpSize { get; init; } = "256m";

    /// <summary>The root is mounted read-only (`--read-only`); otherwise the container writes to its own layer.</summary>
    public bool ReadonlyRoot { get; init; } = true;

    /// <summary>The process's uid, gid and supplementary groups; null: root.</summary>
    public UserSpec? User { get; init; }

    /// <summary>A network namespace to join (`--network bridge`); null: a new one with loopback only.</summary>
    public string? NetworkNamespacePath { get; init; }

    /// <summary>Mounts after the defaults (a bridged sandbox's read-only /etc/resolv.conf and /etc/hosts).</summary>
    public IReadOnlyList<MountSpec> ExtraMounts { get; init; } = [];
}

/// <summary>
/// Builds the OCI spec Corral runs every container with: the defaults `runc spec` gives
/// (namespaces, capabilities, masked and read-only paths), a writable root (or a read-only one with a tmpfs /tmp),
/// and rlimits clamped to the host's hard limits (CI machines lack CAP_SYS_RESOURCE).
/// </summary>
public static class SpecBuilder
{
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private static readonly string[] DefaultCapabilities = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

    private static readonly string[] MaskedPaths =
    [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
    ];

    private static readonly string[] ReadonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

    public static RuntimeSpec Build(SpecInput input, Func<int, ulong?>? hostHardLimit = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.Args.Count == 0)
        {
            throw new ArgumentException("a container needs a command", nameof(input));
        }

        hostHardLimit ??= HostHardLimit;
        var capabilities = new CapabilitiesSpec
        {
            Bounding = DefaultCapabilities,
            Effective = DefaultCapabilities,
            Permitted = DefaultCapabilities,
            Ambient = DefaultCapabilities,
        };

        var devices = input.Devices;
        return new RuntimeSpec
        {
            Hostname = input.Hostname,
            Process = new ProcessSpec
            {
                Args = input.Args,
                Env = BuildEnv(input.Env),
                Cwd = input.Workdir,
                User = input.User ?? new(),
                Capabilities = capabilities,
                Rlimits =
                [
                    Clamp("RLIMIT_NOFILE", LibC.RLIMIT_NOFILE, 1024, hostHardLimit),
                    Clamp("RLIMIT_NPROC", LibC.RLIMIT_NPROC, 4096, hostHardLimit),
                ],
            },
            Root = new RootSpec(input.RootfsPath, Readonly: input.ReadonlyRoot),
            Mounts =
            [
                new("/proc", "proc", "proc"),
                new("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
                new("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
                new("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
                new("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
                new("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
                new("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]),
                .. (input.TmpSize is { } tmp ? [new MountSpec("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777", $"size={tmp}"])] : Array.Empty<MountSpec>()),
                .. input.ExtraMounts,
            ],
            Linux = new LinuxSpec
            {
                Namespaces = [new("pid"), new("network", input.NetworkNamespacePath), new("ipc"), new("uts"), new("mount")],
                CgroupsPath = input.CgroupsPath,
                Resources = new ResourcesSpec
                {
                    Devices =
                    [
                        new(Allow: false, Access: "rwm"),
                        .. devices.Select(d => new DeviceCgroupSpec(true, "rwm", d.Type, d.Major, d.Minor)),
                    ],
                },
                Devices = devices.Count == 0 ? null : devices,
                MaskedPaths = MaskedPaths,
                ReadonlyPaths = ReadonlyPaths,
            },
        };
    }

    public static string ToJson(RuntimeSpec spec) => JsonSerializer.Serialize(spec, OciJsonContext.Default.RuntimeSpec);

    /// <summary>A process.json for `runc exec --process` / `runsc exec --process`.</summary>
    public static string ToJson(ProcessSpec process) => JsonSerializer.Serialize(process, OciJsonContext.Default.ProcessSpec);

    public static RuntimeSpec FromJson(string json) =>
        JsonSerializer.Deserialize(json, OciJsonContext.Default.RuntimeSpec) ?? throw new JsonException("empty spec");

    /// <summary>PATH and TERM defaults, then the caller's variables, later ones winning.</summary>
    internal static IReadOnlyList<string> BuildEnv(IReadOnlyList<KeyValuePair<string, string>> env)
    {
        var merged = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["PATH"] = DefaultPath,
            ["HOME"] = "/root",
        };
        var order = new List<string>(merged.Keys);
        foreach (var (key, value) in env)
        {
            if (!merged.ContainsKey(key))
            {
                order.Add(key);
            }

            merged[key] = value;
        }

        return order.Select(k => $"{k}={merged[k]}").ToArray();
    }

    private static RlimitSpec Clamp(string name, int resource, ulong wanted, Func<int, ulong?> hostHardLimit)
    {
        var value = hostHardLimit(resource) is { } hard && hard < wanted ? hard : wanted;
        return new RlimitSpec(name, value, value);
    }

    private static ulong? HostHardLimit(int resource) =>
        LibC.getrlimit(resource, out var limit) == 0 ? limit.Maximum : null;
}
