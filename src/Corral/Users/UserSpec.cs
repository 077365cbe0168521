using System.Globalization;
using Corral.Common;

namespace Corral.Users;

/// <summary>
/// A user as docker's <c>--user</c> and an image config's <c>User</c> give it: <c>user</c> or
/// <c>user:group</c>, each part a name or a number. A part made only of digits is a number.
/// </summary>
public sealed record UserSpec
{
    /// <summary>The longest user or group name (passwd's limit, a trailing '$' included).</summary>
    public const int MaxNameLength = 32;

    /// <summary>The largest id: 4294967295 is (uid_t)-1, "no change" to the kernel.</summary>
    public const uint MaxId = 4_294_967_294;

    private UserSpec(string text, string? userName, uint? uid, string? groupName, uint? gid)
    {
        Text = text;
        UserName = userName;
        Uid = uid;
        GroupName = groupName;
        Gid = gid;
    }

    /// <summary>The text as given.</summary>
    public string Text { get; }

    /// <summary>The user's name, when the user part is not a number.</summary>
    public string? UserName { get; }

    /// <summary>The user's id, when the user part is a number.</summary>
    public uint? Uid { get; }

    /// <summary>The group's name, when a group part is given and is not a number.</summary>
    public string? GroupName { get; }

    /// <summary>The group's id, when a group part is given and is a number.</summary>
    public uint? Gid { get; }

    /// <summary>Whether a group was given after ':'.</summary>
    public bool HasGroup => GroupName is not null || Gid is not null;

    /// <summary>
    /// Parses <c>name</c>, <c>uid</c>, <c>name:group</c>, <c>uid:gid</c>, <c>name:gid</c> or <c>uid:group</c>;
    /// anything else is <see cref="CorralException.Invalid"/>.
    /// </summary>
    public static UserSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
        {
            throw Bad(text, "is empty");
        }

        var colon = text.IndexOf(':', StringComparison.Ordinal);
        var userPart = colon < 0 ? text : text[..colon];
        var groupPart = colon < 0 ? null : text[(colon + 1)..];
        if (groupPart is not null && groupPart.Contains(':', StringComparison.Ordinal))
        {
            throw Bad(text, "use user or user:group (one ':' at most)");
        }

        var (userName, uid) = Part(text, "user", userPart);
        var (groupName, gid) = groupPart is null ? (null, null) : Part(text, "group", groupPart);
        return new UserSpec(text, userName, uid, groupName, gid);
    }

    /// <summary>Whether <paramref name="name"/> is a name passwd and group allow (digits only included).</summary>
    public static bool IsValidName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var body = name.EndsWith('$') ? name[..^1] : name;
        return body.Length > 0
            && name.Length <= MaxNameLength
            && body[0] != '-'
            && body.All(c => c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_' or '.' or '-');
    }

    /// <summary>An id as passwd and group hold it: ASCII digits only, 0 to <see cref="MaxId"/>; null otherwise.</summary>
    public static uint? ParseId(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0 || !text.All(char.IsAsciiDigit))
        {
            return null;
        }

        return ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value <= MaxId ? (uint)value : null;
    }

    /// <inheritdoc/>
    public override string ToString() => Text;

    private static (string? Name, uint? Id) Part(string text, string what, string part)
    {
        if (part.Length == 0)
        {
            throw Bad(text, $"the {what} is empty");
        }

        if (part.All(char.IsAsciiDigit))
        {
            return ParseId(part) is { } id ? (null, id) : throw Bad(text, $"{what} id {part} is out of range (0 to {MaxId})");
        }

        if (part.StartsWith('-') && part.Length > 1 && part[1..].All(char.IsAsciiDigit))
        {
            throw Bad(text, $"{what} id {part} is out of range (0 to {MaxId})");
        }

        if (!IsValidName(part))
        {
            throw Bad(text, $"{what} name {InputRules.Quote(part)} is not valid (letters, digits, '_', '.', '-', not starting with '-', at most {MaxNameLength} characters, an optional trailing '$')");
        }

        return (part, null);
    }

    private static CorralException Bad(string text, string why) =>
        CorralException.Invalid($"invalid --user {InputRules.Quote(text)}: {why}");
}
