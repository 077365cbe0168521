using System.Globalization;
using System.Text.RegularExpressions;

namespace Corral.Common;

/// <summary>Parses durations such as <c>500ms</c>, <c>10s</c>, <c>2m</c>, <c>1h</c>, <c>1.5s</c>; a plain number is seconds.</summary>
public static partial class Duration
{
    [GeneratedRegex(@"^(?<num>[0-9]+(\.[0-9]+)?)(?<unit>ms|s|m|h|)$")]
    private static partial Regex Pattern();

    public static bool TryParse(string? text, out TimeSpan value, out string error)
    {
        value = TimeSpan.Zero;
        error = string.Empty;
        var match = Pattern().Match(text?.Trim() ?? string.Empty);
        if (!match.Success)
        {
            error = $"invalid duration '{text}': expected e.g. 500ms, 10s, 2m, 1h";
            return false;
        }

        var number = double.Parse(match.Groups["num"].Value, CultureInfo.InvariantCulture);
        value = match.Groups["unit"].Value switch
        {
            "ms" => TimeSpan.FromMilliseconds(number),
            "m" => TimeSpan.FromMinutes(number),
            "h" => TimeSpan.FromHours(number),
            _ => TimeSpan.FromSeconds(number),
        };
        if (value <= TimeSpan.Zero || value > TimeSpan.FromDays(365))
        {
            error = $"invalid duration '{text}': must be greater than zero and at most 365 days";
            return false;
        }

        return true;
    }

    public static TimeSpan Parse(string text) =>
        TryParse(text, out var value, out var error) ? value : throw new CorralException(error);
}
