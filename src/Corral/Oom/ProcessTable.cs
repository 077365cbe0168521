using System.Globalization;

namespace Corral.Oom;

/// <summary>Seam over /proc for the process-tree watcher.</summary>
internal interface IProcessTable
{
    /// <summary>Direct children of <paramref name="pid"/>; empty when it is gone.</summary>
    IReadOnlyList<int> Children(int pid);

    /// <summary>Resident set size in bytes; null when the process is gone.</summary>
    long? RssBytes(int pid);
}

internal static class ProcessTree
{
    /// <summary>RSS of the root and all its descendants; null when the root is gone.</summary>
    public static long? SumRssBytes(IProcessTable table, int rootPid)
    {
        var rootRss = table.RssBytes(rootPid);
        if (rootRss is null)
        {
            return null;
        }

        var total = rootRss.Value;
        var seen = new HashSet<int> { rootPid };
        var queue = new Queue<int>(table.Children(rootPid));
        while (queue.TryDequeue(out var pid))
        {
            if (!seen.Add(pid))
            {
                continue;
            }

            total += table.RssBytes(pid) ?? 0;
            foreach (var child in table.Children(pid))
            {
                queue.Enqueue(child);
            }
        }

        return total;
    }
}

/// <summary>/proc: children from /proc/&lt;pid&gt;/task/&lt;tid&gt;/children, RSS from VmRSS of /proc/&lt;pid&gt;/status.</summary>
internal sealed class ProcProcessTable : IProcessTable
{
    public static ProcProcessTable Instance { get; } = new();

    public IReadOnlyList<int> Children(int pid)
    {
        var result = new List<int>();
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                var text = TryRead(Path.Combine(task, "children"));
                if (text is null)
                {
                    continue;
                }

                foreach (var field in text.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    if (int.TryParse(field, NumberStyles.Integer, CultureInfo.InvariantCulture, out var child))
                    {
                        result.Add(child);
                    }
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // the process exited while walking
        }

        return result;
    }

    public long? RssBytes(int pid)
    {
        var status = TryRead($"/proc/{pid}/status");
        if (status is null)
        {
            return null;
        }

        foreach (var line in status.Split('\n'))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return parts.Length >= 2 && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var kb) ? kb * 1024 : 0;
            }
        }

        return 0; // zombies and kernel threads have no VmRSS
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
