using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using Corral.IntegrationTests.Daemon;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Ecosystem;

/// <summary>
/// `corral serve --metrics-listen --log-format json` end to end: a daemon of its own, real sandboxes
/// on both runtimes, the /metrics page scraped over loopback before and after, exact deltas; then
/// every line the daemon (and a shim) logged must be a JSON object.
/// </summary>
public sealed partial class DaemonMetricsTests
{
    private const string Allocate300Mb = "b = b'\\x01' * (300 << 20); print('survived')";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Counters_move_exactly_with_real_sandboxes_and_logs_are_json_lines()
    {
        var port = FreePort();
        var rootfs = await TestHost.RootfsAsync();
        await using var daemon = await DaemonProcess.StartAsync("--metrics-listen", $"127.0.0.1:{port}", "--log-format", "json", "--log-level", "information");
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };
        var before = Parse(await http.GetStringAsync("/metrics", Ct));

        var ids = new List<string>();
        var oomKills = new Dictionary<string, long>();
        var shimLogs = new List<string>();
        foreach (var runtime in new[] { "runc", "gvisor" })
        {
            var exit3 = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, ["sh", "-c", "exit 3"], rootfs: rootfs), Ct);
            ids.Add(exit3);
            (await daemon.Client.WaitAsync(exit3, Ct)).ExitCode.ShouldBe(3);

            var oom = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, ["python3", "-c", Allocate300Mb], r => r.MemoryBytes = 64L << 20, rootfs), Ct);
            ids.Add(oom);
            var oomExit = await daemon.Client.WaitAsync(oom, Ct);
            oomExit.OomKilled.ShouldBeTrue();
            oomExit.OomReason.ShouldBe("kernel");
            oomKills[runtime] = oomExit.OomKills;
            shimLogs.Add(await File.ReadAllTextAsync(Path.Combine(daemon.StateDir, "sandboxes", oom, "shim.log"), Ct));
        }

        var page = await http.GetStringAsync("/metrics", Ct);
        var after = Parse(page);
        double Delta(string series) => after.GetValueOrDefault(series) - before.GetValueOrDefault(series);

        foreach (var runtime in new[] { "runc", "gvisor" })
        {
            Delta($"corral_sandboxes_created_total{{runtime=\"{runtime}\"}}").ShouldBe(2, runtime);
            Delta($"corral_sandboxes_ended_total{{runtime=\"{runtime}\",outcome=\"exit_nonzero\"}}").ShouldBe(1, runtime);
            Delta($"corral_sandboxes_ended_total{{runtime=\"{runtime}\",outcome=\"oom_kernel\"}}").ShouldBe(1, runtime);
            Delta($"corral_sandboxes_ended_total{{runtime=\"{runtime}\",outcome=\"exit_zero\"}}").ShouldBe(0, runtime);
            Delta($"corral_oom_kills_total{{runtime=\"{runtime}\"}}").ShouldBe(oomKills[runtime], runtime);
            oomKills[runtime].ShouldBeGreaterThanOrEqualTo(1, runtime);
            Delta($"corral_sandbox_start_seconds_count{{runtime=\"{runtime}\"}}").ShouldBe(2, runtime);
            Delta($"corral_exit_event_latency_seconds_count{{runtime=\"{runtime}\"}}").ShouldBe(2, runtime);
            after[$"corral_sandboxes{{state=\"exited\",runtime=\"{runtime}\"}}"].ShouldBe(2, runtime);
            after[$"corral_sandboxes{{state=\"running\",runtime=\"{runtime}\"}}"].ShouldBe(0, runtime);
        }

        after["corral_shims_alive"].ShouldBe(0);
        page.ShouldContain("# TYPE corral_sandboxes_ended_total counter");
        page.ShouldContain("# TYPE corral_oom_event_latency_seconds histogram");
        page.ShouldContain("process_cpu_seconds_total");
        page.ShouldContain("process_working_set_bytes");
        IdLabels().IsMatch(page).ShouldBeFalse("no sandbox id is ever a label");
        foreach (var id in ids)
        {
            page.ShouldNotContain(id);
        }

        // Only /metrics is served there, and only to GET/HEAD; the gRPC API is not.
        (await http.GetAsync("/", Ct)).StatusCode.ShouldBe(HttpStatusCode.NotFound);
        (await http.PostAsync("/metrics", new StringContent(""), Ct)).StatusCode.ShouldBe(HttpStatusCode.MethodNotAllowed);
        (await http.PostAsync("/corral.v1.Sandboxes/List", new StringContent(""), Ct)).StatusCode.ShouldBe(HttpStatusCode.NotFound);

        foreach (var id in ids)
        {
            await daemon.Client.RemoveAsync(id, Ct);
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }

        (await daemon.StopAsync(TimeSpan.FromSeconds(60))).ShouldBe(0);
        var lines = (await daemon.Output).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Length.ShouldBeGreaterThan(4);
        foreach (var line in lines.Concat(shimLogs.SelectMany(l => l.Split('\n', StringSplitOptions.RemoveEmptyEntries))))
        {
            using var json = JsonDocument.Parse(line);
            json.RootElement.GetProperty("time").GetString().ShouldNotBeNullOrEmpty();
            json.RootElement.GetProperty("level").GetString().ShouldNotBeNullOrEmpty();
            json.RootElement.GetProperty("message").GetString().ShouldNotBeNullOrEmpty();
        }

        var exited = lines.Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.GetProperty("message").GetString() == "sandbox exited").ToList();
        exited.Count.ShouldBe(4);
        exited.Count(e => e.GetProperty("exit_code").GetInt32() == 137 && e.GetProperty("oom_killed").GetBoolean()).ShouldBe(2);
        lines.ShouldContain(l => l.Contains("\"message\":\"daemon serving metrics\"", StringComparison.Ordinal) && l.Contains($"127.0.0.1:{port}/metrics", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_non_loopback_metrics_address_is_refused_without_allow_remote()
    {
        var (result, _) = await DaemonProcess.RefuseAsync("--metrics-listen", "0.0.0.0:9464");
        result.ExitCode.ShouldBe(125);
        result.Stderr.ShouldContain("--metrics-allow-remote");
        result.Stderr.Trim().Split('\n').Length.ShouldBe(1);
    }

    /// <summary>`name{labels} value` lines of the text format, by series.</summary>
    private static Dictionary<string, double> Parse(string page)
    {
        var series = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in page.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            var space = line.LastIndexOf(' ');
            series[line[..space]] = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
        }

        return series;
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    [GeneratedRegex(@"\b(id|sandbox|sandbox_id|exec_id)=""")]
    private static partial Regex IdLabels();
}
