using System.Diagnostics;
using Corral.Images;

namespace Corral.IntegrationTests.Infrastructure;

/// <summary>What the tests need from the host: the default image, runtimes, and leak checks.</summary>
public static class TestHost
{
    public const string StateDir = "/run/corral";
    public const string RuncRoot = "/run/corral/runc";
    public const string RunscRoot = "/run/corral/runsc";
    public const string CrunRoot = "/run/corral/crun";

    private static readonly Lazy<Task<string>> Image = new(() => new DefaultImage("/var/lib/corral").EnsureAsync());

    public static Task<string> RootfsAsync() => Image.Value;

    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// How much slower than this machine the host is: CORRAL_TEST_TIME_SCALE (the cgroup v2 guest, under
    /// software emulation, sets 4); hang deadlines and promptness bounds are multiplied by it.
    /// </summary>
    public static double TimeScale { get; } =
        double.TryParse(Environment.GetEnvironmentVariable("CORRAL_TEST_TIME_SCALE"), System.Globalization.CultureInfo.InvariantCulture, out var scale) && scale >= 1 ? scale : 1;

    public static TimeSpan Scaled(TimeSpan span) => span * TimeScale;

    public static string NewId(string prefix) => $"t-{prefix}-{Guid.NewGuid().ToString("N")[..8]}";

    /// <summary>Everything that would show a container was left behind, as readable lines (empty when clean).</summary>
    public static Task<IReadOnlyList<string>> LeaksAsync(string id) => LeaksAsync(id, StateDir);

    /// <summary>
    /// The same for a container of <paramref name="stateDir"/>: its runtime roots are
    /// <c>&lt;state-dir&gt;/runc</c> and <c>&lt;state-dir&gt;/runsc</c>; a cgroup named <paramref name="id"/> under
    /// any <c>corral</c> or <c>corral-&lt;ns&gt;</c> parent of any hierarchy counts.
    /// </summary>
    public static async Task<IReadOnlyList<string>> LeaksAsync(string id, string stateDir)
    {
        var leaks = new List<string>();
        var runcRoot = Path.Combine(stateDir, "runc");
        var runscRoot = Path.Combine(stateDir, "runsc");
        if (await ListAsync("runc", runcRoot) is { } runc && runc.Contains(id, StringComparison.Ordinal))
        {
            leaks.Add($"runc list shows {id}");
        }

        if (await ListAsync("runsc", runscRoot) is { } runsc && runsc.Contains(id, StringComparison.Ordinal))
        {
            leaks.Add($"runsc list shows {id}");
        }

        var crunRoot = Path.Combine(stateDir, "crun");
        if (await ListAsync("crun", crunRoot) is { } crun && crun.Contains(id, StringComparison.Ordinal))
        {
            leaks.Add($"crun list shows {id}");
        }

        foreach (var path in new[] { Path.Combine(stateDir, "bundles", id), Path.Combine(stateDir, "containers", id + ".json"), Path.Combine(stateDir, "containers", id + ".lock") })
        {
            if (Path.Exists(path))
            {
                leaks.Add($"{path} exists");
            }
        }

        // runsc keeps <id>_sandbox:<id>.state and .lock; a `runsc list` running while a container
        // is deleted (anyone's, e.g. a benchmark next door) re-creates an empty .lock of it, which
        // no runsc command shows or uses: the state files and runc's directory are what count.
        if (Directory.Exists(runscRoot) && Directory.EnumerateFiles(runscRoot, id + "_sandbox:*.state").Any())
        {
            leaks.Add($"runsc state for {id} under {runscRoot}");
        }

        if (Directory.Exists(Path.Combine(runcRoot, id)))
        {
            leaks.Add($"runc state for {id} under {runcRoot}");
        }

        if (Directory.Exists(Path.Combine(crunRoot, id)))
        {
            leaks.Add($"crun state for {id} under {crunRoot}");
        }

        foreach (var cgroup in CgroupDirs(id).Concat(NamespacedCgroupDirs(id)).Distinct().Where(Directory.Exists))
        {
            leaks.Add($"cgroup {cgroup} exists");
        }

        if (File.ReadAllText("/proc/self/mountinfo").Contains(id, StringComparison.Ordinal))
        {
            leaks.Add($"a mount mentions {id}");
        }

        // A --disk's loop device (its backing file lives in the container's directory).
        foreach (var backing in Directory.Exists("/sys/block") ? Directory.EnumerateDirectories("/sys/block", "loop*").Select(d => Path.Combine(d, "loop", "backing_file")) : [])
        {
            try
            {
                if (File.Exists(backing) && File.ReadAllText(backing).Contains(id, StringComparison.Ordinal))
                {
                    leaks.Add($"loop device {backing.Split('/')[3]} is backed by {File.ReadAllText(backing).Trim()}");
                }
            }
            catch (IOException)
            {
                // Detached while we looked.
            }
        }

        leaks.AddRange(await NetworkLeaksAsync(Corral.Networking.BridgeNetwork.KeyOf(stateDir, id)));

        foreach (var proc in Directory.EnumerateDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)))
        {
            try
            {
                var cmdline = File.ReadAllText(Path.Combine(proc, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains(id, StringComparison.Ordinal) && !cmdline.Contains("Corral.IntegrationTests", StringComparison.Ordinal))
                {
                    leaks.Add($"process {Path.GetFileName(proc)} still runs: {cmdline.Trim()}");
                }
                else if (WorkingDirectory(proc) is { } cwd && cwd.Contains("/" + id, StringComparison.Ordinal))
                {
                    // A daemon sandbox's shim: its command line names only the sandboxes directory.
                    leaks.Add($"process {Path.GetFileName(proc)} still runs in {cwd}: {cmdline.Trim()}");
                }
            }
            catch (IOException)
            {
                // The process ended while we looked.
            }
        }

        return leaks;
    }

    /// <summary>
    /// What a bridged sandbox's network would leave (its key: <see cref="Corral.Networking.BridgeNetwork.KeyOf"/>):
    /// its namespace, its veth, its record and lock, and any firewall rule tagged with it.
    /// </summary>
    public static async Task<IReadOnlyList<string>> NetworkLeaksAsync(string key)
    {
        var leaks = new List<string>();
        var ns = Corral.Networking.BridgeNetwork.NamespaceOf(key);
        var veth = Corral.Networking.BridgeNetwork.VethOf(key);
        foreach (var path in new[] { "/run/netns/" + ns, "/sys/class/net/" + veth, $"/run/corral-net/{key}.json", $"/run/corral-net/{key}.lock" })
        {
            if (Path.Exists(path))
            {
                leaks.Add($"{path} exists");
            }
        }

        if (File.ReadAllText("/proc/self/mountinfo").Contains(ns, StringComparison.Ordinal))
        {
            leaks.Add($"a mount mentions {ns}");
        }

        if (await NftRulesAsync() is { } rules && rules.Contains("corral:" + key, StringComparison.Ordinal))
        {
            leaks.Add($"an nftables rule is tagged corral:{key}");
        }

        return leaks;
    }

    /// <summary>Corral's nftables table as `nft` lists it; null when it does not exist (or nft is missing).</summary>
    public static async Task<string?> NftRulesAsync()
    {
        var nft = new[] { "/usr/sbin/nft", "/sbin/nft" }.FirstOrDefault(File.Exists);
        if (nft is null)
        {
            return null;
        }

        using var process = Process.Start(new ProcessStartInfo(nft, ["list", "table", "inet", "corral"]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        return process.ExitCode == 0 ? output : null;
    }

    /// <summary>
    /// The shims of the daemon whose sandboxes live in <paramref name="sandboxesDir"/> (`Corral.Cli shim
    /// SANDBOXES_DIR`), each with its working directory: a sandbox's directory once it serves one.
    /// </summary>
    public static List<(int Pid, string Cwd)> ShimProcesses(string sandboxesDir)
    {
        var shims = new List<(int, string)>();
        foreach (var proc in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(proc), out var pid))
            {
                continue;
            }

            try
            {
                var args = File.ReadAllText(Path.Combine(proc, "cmdline")).Split('\0');
                if (args.Length >= 3 && args[1] == "shim" && args[2] == sandboxesDir && WorkingDirectory(proc) is { } cwd)
                {
                    shims.Add((pid, cwd));
                }
            }
            catch (IOException)
            {
                // Gone meanwhile.
            }
        }

        return shims;
    }

    /// <summary>Where the process runs (its cwd link), or null when it is gone or not ours to read.</summary>
    public static string? WorkingDirectory(string procDir)
    {
        try
        {
            return new FileInfo(Path.Combine(procDir, "cwd")).LinkTarget;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>corral/&lt;id&gt; in every cgroup hierarchy mounted (v2, or each v1 one and a hybrid's unified).</summary>
    public static IEnumerable<string> CgroupDirs(string id)
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // "<id> <parent> <dev> <root> <mount point> <options> [optional...] - <fs type> <source> <super options>"
            var fields = line.Split(' ');
            var separator = Array.IndexOf(fields, "-");
            if (separator > 4 && separator + 1 < fields.Length && fields[separator + 1] is "cgroup" or "cgroup2")
            {
                yield return Path.Combine(fields[4], "corral", id);
            }
        }
    }

    /// <summary>corral-&lt;ns&gt;/&lt;id&gt; (a non-default state dir's cgroups) in every cgroup hierarchy mounted.</summary>
    public static IEnumerable<string> NamespacedCgroupDirs(string id)
    {
        foreach (var parent in CgroupDirs(id).Select(d => Path.GetDirectoryName(Path.GetDirectoryName(d)!)!).Distinct())
        {
            if (!Directory.Exists(parent))
            {
                continue;
            }

            foreach (var ns in Directory.EnumerateDirectories(parent, "corral-*"))
            {
                yield return Path.Combine(ns, id);
            }
        }
    }

    private static async Task<string?> ListAsync(string binary, string root)
    {
        try
        {
            var info = new ProcessStartInfo(binary) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { "--root", root, "list" })
            {
                info.ArgumentList.Add(a);
            }

            using var process = Process.Start(info)!;
            var output = await process.StandardOutput.ReadToEndAsync();
            await process.WaitForExitAsync();
            return output;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }
}
