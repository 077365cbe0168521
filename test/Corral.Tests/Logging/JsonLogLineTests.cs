using System.Text.Json;
using Corral.Common;
using Corral.Logging;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Shouldly;
using Xunit;

namespace Corral.Tests.Logging;

public sealed partial class JsonLogLineTests
{
    [Fact]
    public void A_line_carries_the_key_value_fields_under_their_own_keys_with_json_types()
    {
        var (logger, output) = Logger();

        Exited(logger, "c-1", 137, "KILL", true, 12.345);

        var json = Single(output);
        json.GetProperty("time").GetString().ShouldBe("2026-12-02T07:00:00.250Z");
        json.GetProperty("level").GetString().ShouldBe("info");
        json.GetProperty("category").GetString().ShouldBe("test");
        json.GetProperty("event_id").GetInt32().ShouldBe(9001);
        json.GetProperty("message").GetString().ShouldBe("container exited");
        json.GetProperty("id").GetString().ShouldBe("c-1");
        json.GetProperty("exit_code").GetInt32().ShouldBe(137);
        json.GetProperty("signal").GetString().ShouldBe("KILL");
        json.GetProperty("oom_killed").GetBoolean().ShouldBeTrue();
        json.GetProperty("duration_ms").GetDouble().ShouldBe(12.345);
        json.GetProperty("auth").GetString().ShouldBe("none");
    }

    [Fact]
    public void Values_that_would_break_a_key_value_line_stay_one_json_line()
    {
        var (logger, output) = Logger();

        Failed(logger, "c-2", "line one\nline \"two\" = {x}", null);

        output.ToString().Count(c => c == '\n').ShouldBe(1);
        var json = Single(output);
        json.GetProperty("message").GetString().ShouldBe("sandbox failed");
        json.GetProperty("error").GetString().ShouldBe("line one\nline \"two\" = {x}");
        json.GetProperty("level").GetString().ShouldBe("warn");
        json.GetProperty("detail").ValueKind.ShouldBe(JsonValueKind.Null);
    }

    [Fact]
    public void A_message_without_pairs_is_kept_whole_and_an_exception_is_a_field()
    {
        var (logger, output) = Logger();

        Stopped(logger, new InvalidOperationException("boom"));

        var json = Single(output);
        json.GetProperty("message").GetString().ShouldBe("daemon stopped, every sandbox ended");
        json.GetProperty("exception").GetString()!.ShouldContain("boom");
    }

    [Fact]
    public void The_format_option_takes_text_or_json_only()
    {
        JsonLogLine.ParseFormat("json").ShouldBe(LogFormat.Json);
        JsonLogLine.ParseFormat("TEXT").ShouldBe(LogFormat.Text);
        Should.Throw<CorralException>(() => JsonLogLine.ParseFormat("xml")).Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    private static (ILogger Logger, StringWriter Output) Logger()
    {
        var output = new StringWriter();
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 2, 7, 0, 0, 250, TimeSpan.Zero));
        var provider = new JsonLineLoggerProvider(output, time);
        return (provider.CreateLogger("test"), output);
    }

    private static JsonElement Single(StringWriter output)
    {
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Length.ShouldBe(1);
        return JsonDocument.Parse(lines[0]).RootElement.Clone();
    }

    [LoggerMessage(9001, LogLevel.Information, "container exited id={Id} exit_code={ExitCode} signal={Signal} oom_killed={OomKilled} duration_ms={DurationMs:0.0} auth=none")]
    private static partial void Exited(ILogger logger, string id, int exitCode, string? signal, bool oomKilled, double durationMs);

    [LoggerMessage(9002, LogLevel.Warning, "sandbox failed id={Id} error={Error} detail={Detail}")]
    private static partial void Failed(ILogger logger, string id, string error, string? detail);

    [LoggerMessage(9003, LogLevel.Error, "daemon stopped, every sandbox ended")]
    private static partial void Stopped(ILogger logger, Exception error);
}
