using System.Globalization;
using Corral.Common;
using Microsoft.Extensions.Logging;

namespace Corral.Cgroups;

/// <summary>What v1 and v2 container cgroups share: walking, killing and removing a cgroup subtree.</summary>
internal static class CgroupTree
{
    private static readonly TimeSpan KillPause = TimeSpan.FromMilliseconds(20);
    private const int KillRounds = 100; // ~2 s of 20 ms pauses
    private static readonly TimeSpan RmdirPause = TimeSpan.FromMilliseconds(50);
    private const int RmdirAttempts = 20; // ~1 s: an exiting process can keep a cgroup busy briefly

    /// <summary>The directory and every descendant, deepest first.</summary>
    public static List<string> DescendantsBottomUp(ICgroupFileSystem fs, string dir)
    {
        var result = new List<string>();
        Walk(dir);
        return result;

        void Walk(string current)
        {
            if (!fs.DirectoryExists(current))
            {
                return;
            }

            List<string> children;
            try
            {
                children = fs.EnumerateDirectories(current).ToList();
            }
            catch (DirectoryNotFoundException)
            {
                // Removed since the look (the runtime removes its own leaf as it deletes its container).
                return;
            }

            foreach (var child in children)
            {
                Walk(child);
            }

            result.Add(current);
        }
    }

    /// <summary>
    /// Creates <paramref name="dir"/> (recorded in <paramref name="created"/> for rollback), or reuses an
    /// empty leftover of the same name; one that still holds processes belongs to someone: refused.
    /// </summary>
    /// <returns>True when an existing directory was reused.</returns>
    public static bool CreateOrReuse(ICgroupFileSystem fs, string dir, List<string> created)
    {
        if (!fs.DirectoryExists(dir))
        {
            fs.CreateDirectory(dir);
            created.Add(dir);
            return false;
        }

        var pids = new HashSet<int>();
        AddProcesses(fs, dir, pids);
        if (pids.Count > 0)
        {
            throw CorralException.Host($"cgroup {dir} already exists and holds {pids.Count} process(es)");
        }

        return true;
    }

    /// <summary>Removes what a failed create made, newest first; what cannot be removed is logged.</summary>
    public static void RollBack(ICgroupFileSystem fs, List<string> created, ILogger logger)
    {
        for (var i = created.Count - 1; i >= 0; i--)
        {
            try
            {
                fs.DeleteDirectory(created[i]);
            }
            catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException)
            {
                logger.CgroupRemoveFailed(created[i], cleanup.Message);
            }
        }
    }

    public static void AddProcesses(ICgroupFileSystem fs, string dir, ISet<int> into)
    {
        foreach (var cgroup in DescendantsBottomUp(fs, dir))
        {
            var procs = Path.Combine(cgroup, "cgroup.procs");
            string text;
            try
            {
                text = fs.ReadAllText(procs);
            }
            catch (IOException)
            {
                continue; // removed while walking
            }

            foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (int.TryParse(line, NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid))
                {
                    into.Add(pid);
                }
            }
        }
    }

    /// <summary>SIGKILLs every pid, again and again, until none is left or about 2 s passed.</summary>
    public static bool KillUntilEmpty(Func<IReadOnlyList<int>> list, IProcessSignaller signaller, Action? beforeRound = null)
    {
        for (var round = 0; round < KillRounds; round++)
        {
            var pids = list();
            if (pids.Count == 0)
            {
                return true;
            }

            beforeRound?.Invoke();
            foreach (var pid in pids)
            {
                signaller.Kill(pid);
            }

            signaller.Pause(KillPause);
        }

        return list().Count == 0;
    }

    /// <summary>rmdir every descendant bottom-up, then the directory itself, retrying while the kernel says busy.</summary>
    public static void RemoveTree(ICgroupFileSystem fs, string dir, IProcessSignaller signaller, ILogger logger, List<string> failures)
    {
        foreach (var cgroup in DescendantsBottomUp(fs, dir))
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    fs.DeleteDirectory(cgroup);
                    break;
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    if (!fs.DirectoryExists(cgroup))
                    {
                        break;
                    }

                    if (attempt >= RmdirAttempts)
                    {
                        logger.CgroupRemoveFailed(cgroup, ex.Message);
                        failures.Add($"{cgroup}: {ex.Message}");
                        break;
                    }

                    signaller.Pause(RmdirPause);
                }
            }
        }
    }

    public static void ThrowIfFailures(string containerId, List<string> failures)
    {
        if (failures.Count > 0)
        {
            throw CorralException.Host($"could not remove cgroup of container {containerId}: {string.Join("; ", failures)}");
        }
    }
}
