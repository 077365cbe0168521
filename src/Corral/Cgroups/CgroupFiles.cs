using System.Globalization;

namespace Corral.Cgroups;

/// <summary>Parsing of the small text formats cgroup files use.</summary>
internal static class CgroupFiles
{
    /// <summary>v1 reports "no limit" as LONG_MAX rounded down to a page; anything this large is unlimited.</summary>
    public const long UnlimitedThreshold = 1L << 62;

    public static long ParseLong(string text, string path) =>
        long.TryParse(text.AsSpan().Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new FormatException($"{path}: expected an integer, got '{text.Trim()}'");

    /// <summary>"max" (v2) or the kernel's huge v1 value means unlimited: null.</summary>
    public static long? ParseLimit(string text, string path)
    {
        var trimmed = text.Trim();
        if (trimmed == "max")
        {
            return null;
        }

        var value = ParseLong(trimmed, path);
        return value >= UnlimitedThreshold ? null : value;
    }

    /// <summary>"key value" lines (memory.events, memory.oom_control, cpu.stat).</summary>
    public static Dictionary<string, long> ParseKeyed(string text)
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space > 0 && long.TryParse(line.AsSpan(space + 1).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
            {
                result[line[..space]] = value;
            }
        }

        return result;
    }

    public static long ReadLong(ICgroupFileSystem fs, string path) => ParseLong(fs.ReadAllText(path), path);

    public static long? ReadLongIfExists(ICgroupFileSystem fs, string path) =>
        fs.FileExists(path) ? ParseLong(fs.ReadAllText(path), path) : null;

    public static long ReadKey(ICgroupFileSystem fs, string path, string key) =>
        ParseKeyed(fs.ReadAllText(path)).GetValueOrDefault(key);

    public static string Format(long value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>CFS quota for a cpu count: 0.5 cpus is 50 ms of every 100 ms period.</summary>
    public static long CpuQuotaMicros(double cpus, long periodMicros)
    {
        if (!(cpus > 0) || double.IsInfinity(cpus))
        {
            throw new Common.CorralException($"invalid cpus {cpus.ToString(CultureInfo.InvariantCulture)}: must be greater than 0");
        }

        return (long)Math.Round(cpus * periodMicros, MidpointRounding.AwayFromZero);
    }
}
