using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace Corral.Logging;

/// <summary>How Corral's processes write their logs: `key=value` lines (the default) or JSON lines.</summary>
public enum LogFormat
{
    Text,
    Json,
}

/// <summary>
/// One JSON object per log line, with the fields of the `key=value` line: `time`, `level`,
/// `category`, `event_id`, `message` (the words before the first key), then every `key=value` pair
/// of the message template under its own key (numbers and booleans as JSON numbers and booleans),
/// and `exception` when there is one.
/// </summary>
public static partial class JsonLogLine
{
    public static LogFormat ParseFormat(string text) =>
        text?.ToLowerInvariant() switch
        {
            "json" => LogFormat.Json,
            "text" => LogFormat.Text,
            _ => throw Common.CorralException.Invalid($"invalid log format '{text}': use text or json"),
        };

    public static string Format(DateTimeOffset time, LogLevel level, string category, EventId eventId, IReadOnlyList<KeyValuePair<string, object?>>? state, string message, Exception? exception)
    {
        ArgumentNullException.ThrowIfNull(category);
        ArgumentNullException.ThrowIfNull(message);
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("time", time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
            json.WriteString("level", LevelName(level));
            json.WriteString("category", category);
            if (eventId.Id != 0)
            {
                json.WriteNumber("event_id", eventId.Id);
            }

            var template = state?.FirstOrDefault(kv => kv.Key == "{OriginalFormat}").Value as string;
            var keys = template is null ? [] : TemplateKeys(template);
            json.WriteString("message", keys.Count > 0 ? Prefix(template!) : message);
            var values = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (name, value) in state ?? [])
            {
                values[name] = value;
            }

            var written = new HashSet<string>(StringComparer.Ordinal) { "time", "level", "category", "event_id", "message", "exception" };
            foreach (var (key, placeholder, literal) in keys)
            {
                if (written.Add(key))
                {
                    WriteValue(json, key, placeholder.Length > 0 ? values.GetValueOrDefault(placeholder) : literal);
                }
            }

            if (exception is not null)
            {
                json.WriteString("exception", exception.ToString());
            }

            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private static string LevelName(LogLevel level) => level switch
    {
        LogLevel.Trace => "trace",
        LogLevel.Debug => "debug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "error",
        LogLevel.Critical => "critical",
        _ => "none",
    };

    /// <summary>The template's `key={Placeholder}` and `key=literal` pairs, in order: the JSON key, the state's name for its value or the literal.</summary>
    private static List<(string Key, string Placeholder, string Literal)> TemplateKeys(string template) =>
        [.. KeyValuePattern().Matches(template).Select(m => (m.Groups["key"].Value, m.Groups["name"].Value, m.Groups["literal"].Value))];

    private static string Prefix(string template)
    {
        var first = KeyValuePattern().Match(template);
        return first.Success ? template[..first.Index].TrimEnd(' ', ',', ':') : template;
    }

    private static void WriteValue(Utf8JsonWriter json, string key, object? value)
    {
        switch (value)
        {
            case null:
                json.WriteNull(key);
                break;
            case bool b:
                json.WriteBoolean(key, b);
                break;
            case int or long or short or byte or uint or ulong or ushort:
                json.WriteNumber(key, Convert.ToInt64(value, CultureInfo.InvariantCulture));
                break;
            case double d when double.IsFinite(d):
                json.WriteNumber(key, d);
                break;
            case float f when float.IsFinite(f):
                json.WriteNumber(key, f);
                break;
            case decimal m:
                json.WriteNumber(key, m);
                break;
            case System.Collections.IEnumerable items when value is not string:
                json.WriteString(key, string.Join(',', items.Cast<object?>().Select(i => Convert.ToString(i, CultureInfo.InvariantCulture))));
                break;
            default:
                json.WriteString(key, Convert.ToString(value, CultureInfo.InvariantCulture));
                break;
        }
    }

    [GeneratedRegex(@"(?<![^\s,(])(?<key>[A-Za-z_][A-Za-z0-9_.]*)=(?:\{(?<name>[A-Za-z_][A-Za-z0-9_]*)(?:[:,][^}]*)?\}|(?<literal>[^\s{}]+))")]
    private static partial Regex KeyValuePattern();
}

/// <summary>Writes every log line as one JSON object (<see cref="JsonLogLine"/>) to a writer (stdout or stderr).</summary>
public sealed class JsonLineLoggerProvider(TextWriter output, TimeProvider time) : ILoggerProvider
{
    private readonly Lock _gate = new();

    public ILogger CreateLogger(string categoryName) => new JsonLineLogger(this, categoryName);

    public void Dispose()
    {
    }

    private void Write(string line)
    {
        lock (_gate)
        {
            output.WriteLine(line);
            output.Flush();
        }
    }

    private sealed class JsonLineLogger(JsonLineLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            ArgumentNullException.ThrowIfNull(formatter);
            provider.Write(JsonLogLine.Format(provider.TimeNow(), logLevel, category, eventId, state as IReadOnlyList<KeyValuePair<string, object?>>, formatter(state, exception), exception));
        }
    }

    private DateTimeOffset TimeNow() => time.GetUtcNow();
}

/// <summary>Adds the JSON line logger.</summary>
public static class JsonLineLoggingExtensions
{
    public static ILoggingBuilder AddJsonLines(this ILoggingBuilder builder, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.AddProvider(new JsonLineLoggerProvider(output, TimeProvider.System));
        return builder;
    }
}
