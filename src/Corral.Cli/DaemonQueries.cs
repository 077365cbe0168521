using System.CommandLine;
using System.Globalization;
using Corral.Common;
using Corral.Protocol.V1;
using Google.Protobuf;
using Spectre.Console;

namespace Corral.Cli;

/// <summary>`corral ps` and `corral stats` answered by a daemon (--host) instead of this host's CLI state.</summary>
internal static class DaemonQueries
{
    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithIndentation().WithFormatDefaultValues(false));

    public static async Task<int> PsAsync(ParseResult parse, string[] labels, string[] states, bool json, CancellationToken cancellationToken)
    {
        var selector = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var label in labels)
        {
            var eq = label.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw new CorralException($"invalid --label '{label}': expected KEY=VALUE");
            }

            selector[label[..eq]] = label[(eq + 1)..];
        }

        var wanted = states.Select(ParseState).ToList();
        using var client = DaemonCommands.Connect(parse);
        var sandboxes = await client.ListAsync(selector, wanted, cancellationToken).ConfigureAwait(false);
        if (json)
        {
            var response = new ListResponse();
            response.Sandboxes.AddRange(sandboxes);
            Console.WriteLine(Json.Format(response));
            return 0;
        }

        var table = new Table().Border(TableBorder.Simple);
        foreach (var header in new[] { "ID", "RUNTIME", "STATE", "PID", "EXIT", "LABELS", "CREATED", "COMMAND" })
        {
            table.AddColumn(header);
        }

        foreach (var s in sandboxes)
        {
            table.AddRow(
                Markup.Escape(s.Id),
                s.Runtime,
                StateName(s.State),
                s.Pid > 0 ? s.Pid.ToString(CultureInfo.InvariantCulture) : "-",
                s.Exit is { } exit ? exit.ExitCode.ToString(CultureInfo.InvariantCulture) : "-",
                Markup.Escape(s.Labels.Count == 0 ? "-" : string.Join(',', s.Labels.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"))),
                Markup.Escape(CorralCli.Ago(s.CreatedAt.ToDateTimeOffset())),
                Markup.Escape(CorralCli.Truncate(string.Join(' ', s.Command).ReplaceLineEndings(" "), 40)));
        }

        CorralCli.Table(table);
        return 0;
    }

    public static async Task<int> StatsAsync(ParseResult parse, string id, bool json, CancellationToken cancellationToken)
    {
        using var client = DaemonCommands.Connect(parse);
        var stats = await client.StatsAsync(id, cancellationToken).ConfigureAwait(false);
        if (json)
        {
            Console.WriteLine(Json.Format(stats));
            return 0;
        }

        var table = new Table().Border(TableBorder.Simple).AddColumn("METRIC").AddColumn("VALUE");
        table.AddRow("memory current", ByteSize.Format(stats.MemoryCurrentBytes));
        table.AddRow("memory peak", stats.HasMemoryPeakBytes ? ByteSize.Format(stats.MemoryPeakBytes) : "-");
        table.AddRow("memory limit", stats.HasMemoryLimitBytes ? ByteSize.Format(stats.MemoryLimitBytes) : "unlimited");
        table.AddRow("cpu time", string.Create(CultureInfo.InvariantCulture, $"{stats.CpuUsageNs / 1e6:0.0} ms"));
        table.AddRow("pids", stats.HasPidsLimit ? $"{stats.PidsCurrent} / {stats.PidsLimit}" : stats.PidsCurrent.ToString(CultureInfo.InvariantCulture));
        table.AddRow("oom kills", stats.OomKills.ToString(CultureInfo.InvariantCulture));
        CorralCli.Table(table);
        return 0;
    }

    private static SandboxState ParseState(string text) => text.ToLowerInvariant() switch
    {
        "created" => SandboxState.Created,
        "running" => SandboxState.Running,
        "exited" => SandboxState.Exited,
        "failed" => SandboxState.Failed,
        _ => throw new CorralException($"invalid --state '{text}': use created, running, exited or failed"),
    };

    private static string StateName(SandboxState state) => state switch
    {
        SandboxState.Created => "created",
        SandboxState.Running => "running",
        SandboxState.Exited => "exited",
        SandboxState.Failed => "failed",
        _ => "unknown",
    };
}
