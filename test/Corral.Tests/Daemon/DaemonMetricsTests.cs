using System.Text;
using Corral.Common;
using Corral.Daemon.Metrics;
using Corral.Supervision;
using Microsoft.Extensions.Time.Testing;
using Shouldly;
using Xunit;

namespace Corral.Tests.Daemon;

public sealed class DaemonMetricsTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 2, 7, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(0, null, false, null, false, "exit_zero")]
    [InlineData(3, null, false, null, false, "exit_nonzero")]
    [InlineData(143, "TERM", false, null, false, "signal")]
    [InlineData(137, "KILL", true, "kernel", false, "oom_kernel")]
    [InlineData(137, "KILL", true, "livelock", false, "oom_livelock")]
    [InlineData(137, "KILL", false, null, true, "timeout")]
    public void Each_exit_record_has_one_outcome(int exitCode, string? signal, bool oomKilled, string? oomReason, bool timedOut, string outcome) =>
        DaemonMetrics.Outcome(Exit("runc", exitCode, signal, oomKilled, oomReason, timedOut)).ShouldBe(outcome);

    [Fact]
    public async Task Ended_sandboxes_count_once_per_runtime_and_outcome_and_oom_kills_add_up()
    {
        var time = new FakeTimeProvider(Now);
        var metrics = new DaemonMetrics(time);
        time.Advance(TimeSpan.FromMilliseconds(8));

        metrics.SandboxCreated("runc");
        metrics.SandboxExited(Exit("runc", 3, null, false, null, false));
        metrics.SandboxExited(Exit("gvisor", 137, "KILL", true, "kernel", false) with { OomKills = 2 });
        metrics.SandboxFailed("gvisor");
        metrics.AdmissionRefused();

        var page = await ScrapeAsync(metrics);
        page.ShouldContain("corral_sandboxes_created_total{runtime=\"runc\"} 1");
        page.ShouldContain("corral_sandboxes_ended_total{runtime=\"runc\",outcome=\"exit_nonzero\"} 1");
        page.ShouldContain("corral_sandboxes_ended_total{runtime=\"gvisor\",outcome=\"oom_kernel\"} 1");
        page.ShouldContain("corral_sandboxes_ended_total{runtime=\"gvisor\",outcome=\"failed\"} 1");
        page.ShouldContain("corral_oom_kills_total{runtime=\"gvisor\"} 2");
        page.ShouldNotContain("corral_oom_kills_total{runtime=\"runc\"}");
        page.ShouldContain("corral_admission_refusals_total 1");

        // 8 ms from the runtime's exit to the event: in the 0.01 bucket, not the 0.005 one.
        page.ShouldContain("corral_exit_event_latency_seconds_bucket{runtime=\"runc\",le=\"0.005\"} 0");
        page.ShouldContain("corral_exit_event_latency_seconds_bucket{runtime=\"runc\",le=\"0.01\"} 1");
        page.ShouldContain("corral_sandboxes{state=\"running\",runtime=\"gvisor\"} 0");
        page.ShouldContain("corral_shims_alive 0");
    }

    [Theory]
    [InlineData("127.0.0.1:9464", false)]
    [InlineData("localhost:9464", false)]
    [InlineData("[::1]:9464", false)]
    [InlineData("0.0.0.0:9464", true)]
    public void Loopback_is_served_as_asked_and_anything_else_only_with_allow_remote(string listen, bool remote)
    {
        if (remote)
        {
            Should.Throw<CorralException>(() => MetricsEndpoint.From(listen, allowRemote: false)).Kind.ShouldBe(ErrorKind.InvalidArgument);
        }

        MetricsEndpoint.From(listen, allowRemote: remote)!.Port.ShouldBe(9464);
        MetricsEndpoint.From(null, allowRemote: false).ShouldBeNull();
    }

    [Fact]
    public void Bad_metrics_options_are_refused_as_invalid()
    {
        Should.Throw<CorralException>(() => MetricsEndpoint.From("nowhere", allowRemote: false)).Kind.ShouldBe(ErrorKind.InvalidArgument);
        Should.Throw<CorralException>(() => MetricsEndpoint.From(null, allowRemote: true)).Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    private static async Task<string> ScrapeAsync(DaemonMetrics metrics)
    {
        using var body = new MemoryStream();
        await metrics.WriteAsync(body, TestContext.Current.CancellationToken);
        return Encoding.UTF8.GetString(body.ToArray());
    }

    private static ExitRecord Exit(string runtime, int exitCode, string? signal, bool oomKilled, string? oomReason, bool timedOut) => new()
    {
        Id = "c-1",
        Runtime = runtime,
        Command = ["sh"],
        ExitCode = exitCode,
        Signal = signal,
        StartedAt = Now.AddSeconds(-1),
        ExitedAt = Now,
        DurationMs = 1000,
        OomKilled = oomKilled,
        OomReason = oomReason,
        TimedOut = timedOut,
    };
}
