using System.Globalization;
using System.Text.RegularExpressions;

namespace Corral.Common;

/// <summary>Parses sizes such as <c>64Mi</c>, <c>1Gi</c>, <c>512M</c>, <c>1.5G</c> or plain bytes.</summary>
public static partial class ByteSize
{
    [GeneratedRegex(@"\A(?<num>[0-9]{1,20}(\.[0-9]{1,20})?)[ ]*(?<unit>|b|B|k|K|Ki|KiB|KB|kb|m|M|Mi|MiB|MB|mb|g|G|Gi|GiB|GB|gb|t|T|Ti|TiB|TB|tb)\z")]
    private static partial Regex Pattern();

    public static bool TryParse(string? text, out long bytes, out string error)
    {
        bytes = 0;
        error = string.Empty;
        var match = Pattern().Match(text?.Trim() ?? string.Empty);
        if (!match.Success)
        {
            error = $"invalid size '{InputRules.Printable(text)}': expected a positive number with an optional unit (e.g. 64Mi, 1Gi, 512M, 1048576)";
            return false;
        }

        // At most 20 digits each side: always within decimal's range (no overflow exception).
        var number = decimal.Parse(match.Groups["num"].Value, CultureInfo.InvariantCulture);
        var unit = match.Groups["unit"].Value;
        decimal multiplier = unit.ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "K" or "KB" => 1000,
            "KI" or "KIB" => 1024,
            "M" or "MB" => 1000 * 1000,
            "MI" or "MIB" => 1024 * 1024,
            "G" or "GB" => 1000 * 1000 * 1000,
            "GI" or "GIB" => 1024L * 1024 * 1024,
            "T" or "TB" => 1000L * 1000 * 1000 * 1000,
            _ => 1024L * 1024 * 1024 * 1024,
        };
        if (number > InputRules.MaxBytes / multiplier)
        {
            error = $"invalid size '{InputRules.Printable(text)}': must be at least 1 byte and at most 4 EiB";
            return false;
        }

        var value = number * multiplier;
        if (value < 1)
        {
            error = $"invalid size '{InputRules.Printable(text)}': must be at least 1 byte and at most 4 EiB";
            return false;
        }

        if (value != decimal.Floor(value))
        {
            error = $"invalid size '{InputRules.Printable(text)}': not a whole number of bytes (use a unit, e.g. 1.5Gi)";
            return false;
        }

        bytes = (long)value;
        return true;
    }

    public static long Parse(string text) =>
        TryParse(text, out var bytes, out var error) ? bytes : throw CorralException.Invalid(error);

    /// <summary>A size given as <paramref name="option"/> (`--memory`, `--disk`): refused as "invalid OPTION ...".</summary>
    public static long Parse(string option, string text) =>
        TryParse(text, out var bytes, out var error) ? bytes : throw CorralException.Invalid(error.Replace("invalid size", "invalid " + option, StringComparison.Ordinal));

    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 when bytes % (1L << 30) == 0 => $"{bytes >> 30}Gi",
        >= 1L << 20 when bytes % (1L << 20) == 0 => $"{bytes >> 20}Mi",
        >= 1L << 10 when bytes % (1L << 10) == 0 => $"{bytes >> 10}Ki",
        _ => bytes.ToString(CultureInfo.InvariantCulture),
    };
}
