using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace Corral.Common;

/// <summary>Container ids double as directory, cgroup and runtime names, so they are kept strictly safe.</summary>
public static partial class ContainerId
{
    public const int MaxLength = 64;

    // \z, not $: "$" also matches before a final newline ("abc\n" passed).
    [GeneratedRegex(@"\A[A-Za-z0-9][A-Za-z0-9_.-]*\z")]
    private static partial Regex Pattern();

    public static bool IsValid(string? id, out string error)
    {
        error = string.Empty;
        if (string.IsNullOrEmpty(id))
        {
            error = "invalid container name '': must not be empty";
        }
        else if (id.Length > MaxLength)
        {
            error = $"invalid container name: {id.Length} characters, at most {MaxLength} allowed";
        }
        else if (!Pattern().IsMatch(id) || id.Contains("..", StringComparison.Ordinal))
        {
            error = $"invalid container name '{id.ReplaceLineEndings("\\n")}': use letters, digits, '_', '.' and '-', starting with a letter or digit";
        }

        return error.Length == 0;
    }

    public static string Validate(string? id) =>
        IsValid(id, out var error) ? id! : throw CorralException.Invalid(error);

    public static string Generate() => "c-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
}
