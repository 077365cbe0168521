using System.Globalization;
using System.Text.RegularExpressions;

namespace Corral.Common;

/// <summary>Parses durations such as <c>500ms</c>, <c>10s</c>, <c>2m</c>, <c>1h</c>, <c>1.5s</c>; a plain number is seconds.</summary>
public static partial class Duration
{
    [GeneratedRegex(@"\A(?<num>[0-9]{1,20}(\.[0-9]{1,20})?)(?<unit>ms|s|m|h|)\z")]
    private static partial Regex Pattern();

    public static bool TryParse(string? text, out TimeSpan value, out string error)
    {
        value = TimeSpan.Zero;
        error = string.Empty;
        var match = Pattern().Match(text?.Trim() ?? string.Empty);
        if (!match.Success)
        {
            error = $"invalid duration '{InputRules.Printable(text)}': expected e.g. 500ms, 10s, 2m, 1h";
            return false;
        }

        // Checked as a number of seconds first: TimeSpan.FromHours(3e8) throws instead of refusing.
        var number = double.Parse(match.Groups["num"].Value, CultureInfo.InvariantCulture);
        var seconds = match.Groups["unit"].Value switch
        {
            "ms" => number / 1000,
            "m" => number * 60,
            "h" => number * 3600,
            _ => number,
        };
        if (!(seconds > 0) || seconds > InputRules.MaxDuration.TotalSeconds)
        {
            error = $"invalid duration '{InputRules.Printable(text)}': must be greater than zero and at most {InputRules.MaxDuration.TotalDays:0} days";
            return false;
        }

        value = TimeSpan.FromSeconds(seconds);
        if (value <= TimeSpan.Zero)
        {
            error = $"invalid duration '{InputRules.Printable(text)}': must be greater than zero and at most {InputRules.MaxDuration.TotalDays:0} days";
            return false;
        }

        return true;
    }

    public static TimeSpan Parse(string text) =>
        TryParse(text, out var value, out var error) ? value : throw CorralException.Invalid(error);
}
