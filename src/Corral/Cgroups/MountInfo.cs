using System.Text;

namespace Corral.Cgroups;

/// <summary>One line of /proc/self/mountinfo, reduced to what cgroup detection needs.</summary>
internal sealed record MountInfoEntry(string MountPoint, string FileSystemType, IReadOnlyList<string> SuperOptions);

internal static class MountInfo
{
    public const string SelfPath = "/proc/self/mountinfo";

    /// <summary>Parses mountinfo text (proc(5)): fields after the " - " separator are type, source, super options.</summary>
    public static IReadOnlyList<MountInfoEntry> Parse(string text)
    {
        var entries = new List<MountInfoEntry>();
        foreach (var rawLine in text.Split('\n'))
        {
            var line = rawLine.TrimEnd('\r');
            var separator = line.IndexOf(" - ", StringComparison.Ordinal);
            if (separator < 0)
            {
                continue;
            }

            var before = line[..separator].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var after = line[(separator + 3)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (before.Length < 5 || after.Length < 1)
            {
                continue;
            }

            var superOptions = after.Length >= 3 ? after[2].Split(',') : [];
            entries.Add(new MountInfoEntry(Unescape(before[4]), after[0], superOptions));
        }

        return entries;
    }

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo octal.</summary>
    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
        {
            return field;
        }

        var sb = new StringBuilder(field.Length);
        for (var i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && IsOctal(field, i + 1))
            {
                sb.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                sb.Append(field[i]);
            }
        }

        return sb.ToString();
    }

    private static bool IsOctal(string s, int start) =>
        start + 3 <= s.Length && s[start] is >= '0' and <= '7' && s[start + 1] is >= '0' and <= '7' && s[start + 2] is >= '0' and <= '7';
}
