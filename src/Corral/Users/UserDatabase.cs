using Corral.Common;

namespace Corral.Users;

/// <summary>One line of an /etc/passwd: name, uid, primary gid, home directory.</summary>
public sealed record PasswdEntry(string Name, uint Uid, uint Gid, string Home);

/// <summary>One line of an /etc/group: name, gid, and the user names listed as members.</summary>
public sealed record GroupEntry(string Name, uint Gid, IReadOnlyList<string> Members);

/// <summary>The process identity a container runs with.</summary>
/// <param name="Uid">The user id.</param>
/// <param name="Gid">The primary group id.</param>
/// <param name="AdditionalGids">Supplementary group ids, in /etc/group's order, without duplicates or <paramref name="Gid"/>.</param>
/// <param name="Home">HOME: the passwd entry's home directory, else "/" ("/root" for the default root user).</param>
/// <param name="Name">The user's name in the container's /etc/passwd; null when the uid has no entry.</param>
public sealed record ResolvedUser(uint Uid, uint Gid, IReadOnlyList<uint> AdditionalGids, string Home, string? Name)
{
    /// <summary>Equal when every field is, <see cref="AdditionalGids"/> compared element by element.</summary>
    public bool Equals(ResolvedUser? other) =>
        other is not null
        && Uid == other.Uid
        && Gid == other.Gid
        && AdditionalGids.SequenceEqual(other.AdditionalGids)
        && string.Equals(Home, other.Home, StringComparison.Ordinal)
        && string.Equals(Name, other.Name, StringComparison.Ordinal);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Uid, Gid, AdditionalGids.Count, Home, Name);
}

/// <summary>
/// The text of a root filesystem's /etc/passwd and /etc/group, parsed, and docker's (runc libuser's)
/// rules to turn a <see cref="UserSpec"/> into a <see cref="ResolvedUser"/>. Pure: no file is read here.
/// </summary>
public sealed class UserDatabase
{
    /// <summary>A database with no entries (both files missing).</summary>
    public static readonly UserDatabase Empty = new([], []);

    public UserDatabase(IReadOnlyList<PasswdEntry> users, IReadOnlyList<GroupEntry> groups)
    {
        Users = users;
        Groups = groups;
    }

    /// <summary>The passwd entries, in file order.</summary>
    public IReadOnlyList<PasswdEntry> Users { get; }

    /// <summary>The group entries, in file order.</summary>
    public IReadOnlyList<GroupEntry> Groups { get; }

    /// <summary>Parses both files' text (null: the file is missing).</summary>
    public static UserDatabase Parse(string? passwd, string? group) => new(ParsePasswd(passwd), ParseGroup(group));

    /// <summary>
    /// <c>name:password:uid:gid[:gecos[:home[:shell]]]</c> lines; empty lines, comments, NIS "+"/"-"
    /// lines, lines holding NUL and lines with an invalid name or id are skipped.
    /// </summary>
    public static IReadOnlyList<PasswdEntry> ParsePasswd(string? text)
    {
        var entries = new List<PasswdEntry>();
        foreach (var fields in Lines(text))
        {
            if (fields.Length < 4 || !UserSpec.IsValidName(fields[0]) || UserSpec.ParseId(fields[2]) is not { } uid || UserSpec.ParseId(fields[3]) is not { } gid)
            {
                continue;
            }

            entries.Add(new PasswdEntry(fields[0], uid, gid, fields.Length > 5 ? fields[5] : string.Empty));
        }

        return entries;
    }

    /// <summary>
    /// <c>name:password:gid[:member,member...]</c> lines; malformed lines are skipped, and so are
    /// member names that are not valid.
    /// </summary>
    public static IReadOnlyList<GroupEntry> ParseGroup(string? text)
    {
        var entries = new List<GroupEntry>();
        foreach (var fields in Lines(text))
        {
            if (fields.Length < 3 || !UserSpec.IsValidName(fields[0]) || UserSpec.ParseId(fields[2]) is not { } gid)
            {
                continue;
            }

            var members = fields.Length > 3
                ? fields[3].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Where(UserSpec.IsValidName).ToArray()
                : [];
            entries.Add(new GroupEntry(fields[0], gid, members));
        }

        return entries;
    }

    /// <summary>
    /// docker's rules (runc libuser's GetExecUser): no spec is uid 0; a name must have a passwd entry;
    /// a number takes its entry's gid and home if it has one, else gid 0 and HOME "/". An explicit
    /// group (a name must be in /etc/group, a number is taken as is) replaces the primary gid and,
    /// as in docker, then no supplementary groups are added; without one, every group listing the
    /// user's passwd name as a member is supplementary.
    /// </summary>
    public ResolvedUser Resolve(UserSpec? spec)
    {
        PasswdEntry? entry;
        uint uid;
        if (spec is null)
        {
            entry = Users.FirstOrDefault(u => u.Uid == 0);
            uid = 0;
        }
        else if (spec.UserName is { } name)
        {
            entry = Users.FirstOrDefault(u => u.Name == name)
                ?? throw CorralException.Invalid($"unable to find user {name}: no matching entries in the container's /etc/passwd");
            uid = entry.Uid;
        }
        else
        {
            uid = spec.Uid!.Value;
            entry = Users.FirstOrDefault(u => u.Uid == uid);
        }

        var gid = entry?.Gid ?? 0;
        var home = entry is { Home.Length: > 0 } ? entry.Home : (spec is null ? "/root" : "/");
        IReadOnlyList<uint> additional = [];
        if (spec is { GroupName: { } groupName })
        {
            gid = Groups.FirstOrDefault(g => g.Name == groupName)?.Gid
                ?? throw CorralException.Invalid($"unable to find group {groupName}: no matching entries in the container's /etc/group");
        }
        else if (spec is { Gid: { } explicitGid })
        {
            gid = explicitGid;
        }
        else if (entry is not null)
        {
            additional = Groups
                .Where(g => g.Gid != gid && g.Members.Contains(entry.Name, StringComparer.Ordinal))
                .Select(g => g.Gid)
                .Distinct()
                .ToArray();
        }

        return new ResolvedUser(uid, gid, additional, home, entry?.Name);
    }

    private static IEnumerable<string[]> Lines(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            yield break;
        }

        foreach (var raw in text.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.Length == 0 || line[0] is '#' or '+' or '-' || line.Contains('\0', StringComparison.Ordinal))
            {
                continue;
            }

            yield return line.Split(':');
        }
    }
}
