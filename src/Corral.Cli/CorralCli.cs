using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Corral.Cgroups;
using Corral.Common;
using Corral.Images;
using Corral.Runtimes;
using Corral.Supervision;
using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace Corral.Cli;

/// <summary>The `corral` command line: a thin layer over the library.</summary>
internal static class CorralCli
{
    private static readonly Option<string> StateDir = new("--state-dir") { Description = "Live container state (default /run/corral, or $CORRAL_STATE_DIR)", Recursive = true };
    private static readonly Option<string> DataDir = new("--data-dir") { Description = "Images and other kept data (default /var/lib/corral, or $CORRAL_DATA_DIR)", Recursive = true };
    private static readonly Option<string> LogLevelOption = new("--log-level") { Description = "trace|debug|information|warning|error (default warning, or $CORRAL_LOG_LEVEL)", Recursive = true };
    private static readonly Option<string> RuncPath = new("--runc-path") { Description = "runc binary", Recursive = true };
    private static readonly Option<string> RunscPath = new("--runsc-path") { Description = "runsc binary", Recursive = true };
    private static readonly Option<string> CrunPath = new("--crun-path") { Description = "crun binary", Recursive = true };
    private static readonly Option<string> RunscPlatform = new("--runsc-platform") { Description = "gVisor platform (default ptrace)", Recursive = true };

    public static async Task<int> RunAsync(string[] args)
    {
        var root = new RootCommand("Corral: run commands in runc or gVisor containers and know exactly how they ended.")
        {
            StateDir, DataDir, LogLevelOption, RuncPath, RunscPath, CrunPath, RunscPlatform, DaemonCommands.Host, DaemonCommands.TokenFile,
        };

        // Help and usage lines name the command people type, not the assembly (Corral.Cli).
        root.HelpName = "corral";
        root.Add(RunCommand.Create());
        root.Add(KillCommand());
        root.Add(PsCommand());
        root.Add(GcCommand.Create());
        root.Add(StatsCommand());
        root.Add(PrepareCommand());
        root.Add(SetupCrunCommand());
        root.Add(SpecCommand());
        root.Add(ImageCommands.Pull());
        root.Add(ImageCommands.Images());
        root.Add(ImageCommands.Rmi());
        root.Add(ImageCommands.Import());
        root.Add(ExecCommands.Exec());
        root.Add(ExecCommands.Execs());
        root.Add(CopyCommand.Create());
        root.Add(ShimCommand.Create());
        root.Add(CompletionCommand.Create());
        foreach (var command in DaemonCommands.Create())
        {
            root.Add(command);
        }

        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            return Fail(new CorralException(parse.Errors[0].Message));
        }

        try
        {
            // Corral prints its own one-line errors and handles SIGINT/SIGTERM itself (run forwards them).
            var invocation = new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
            return await parse.InvokeAsync(invocation).ConfigureAwait(false);
        }
        catch (CorralException ex)
        {
            CorralContext.FlushLogs();
            return Fail(ex);
        }
        catch (Grpc.Core.RpcException ex)
        {
            CorralContext.FlushLogs();
            return DaemonCommands.Fail(ex);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception or AggregateException)
        {
            CorralContext.FlushLogs();
            // Still one line and a code a script can test, never a stack trace.
            Console.Error.WriteLine($"corral: {ex.GetType().Name}: {ex.Message.ReplaceLineEndings(" ")}");
            return CorralExitCodes.CorralError;
        }
    }

    public static int Fail(CorralException ex)
    {
        Console.Error.WriteLine($"corral: {ex.Message}");
        return ex.ExitCode;
    }

    public static CorralContext Context(ParseResult parse)
    {
        var stateDir = StateLayout.Canonical(InputRules.DirectoryOption("--state-dir", parse.GetValue(StateDir) ?? Environment.GetEnvironmentVariable("CORRAL_STATE_DIR") ?? StateLayout.DefaultStateDir));
        return new(
            stateDir,
            InputRules.DirectoryOption("--data-dir", parse.GetValue(DataDir) ?? Environment.GetEnvironmentVariable("CORRAL_DATA_DIR") ?? "/var/lib/corral"),
            ParseLogLevel(parse.GetValue(LogLevelOption) ?? Environment.GetEnvironmentVariable("CORRAL_LOG_LEVEL")),
            new RuntimeOptions
            {
                RuncPath = parse.GetValue(RuncPath) ?? Environment.GetEnvironmentVariable("CORRAL_RUNC") ?? "runc",
                RunscPath = parse.GetValue(RunscPath) ?? Environment.GetEnvironmentVariable("CORRAL_RUNSC") ?? "runsc",
                CrunPath = parse.GetValue(CrunPath) ?? Environment.GetEnvironmentVariable("CORRAL_CRUN") ?? "crun",
                RunscPlatform = parse.GetValue(RunscPlatform) ?? Environment.GetEnvironmentVariable("CORRAL_RUNSC_PLATFORM") ?? "ptrace",

                // A state dir's runtime containers live under it: two state dirs never share one.
                RuncRoot = StateLayout.RuncRoot(stateDir),
                RunscRoot = StateLayout.RunscRoot(stateDir),
                CrunRoot = StateLayout.CrunRoot(stateDir),
            });
    }

    private static LogLevel ParseLogLevel(string? text) =>
        text is null ? LogLevel.Warning
        : Enum.TryParse<LogLevel>(text, ignoreCase: true, out var level) ? level
        : text.ToLowerInvariant() switch
        {
            "info" => LogLevel.Information,
            "warn" => LogLevel.Warning,
            _ => throw new CorralException($"invalid log level '{text}': use trace, debug, information, warning or error"),
        };

    private static Command KillCommand()
    {
        var id = new Argument<string>("ID") { Description = "Container to signal" };
        var signal = new Option<string>("--signal", "-s") { Description = "Signal to send first (default TERM)", DefaultValueFactory = _ => "TERM" };
        var grace = new Option<string>("--grace") { Description = "Then SIGKILL if still alive after this long (default 10s)", DefaultValueFactory = _ => "10s" };
        var exec = new Option<string>("--exec") { Description = "Signal this exec of a daemon sandbox instead (KILL unless --signal; no grace)" };
        var command = new Command("kill", "Signal a running container: SIGTERM, then SIGKILL after the grace period; with --host (or $CORRAL_HOST), a daemon sandbox") { id, signal, grace, exec };
        command.SetAction(async (parse, ct) =>
        {
            var ctx = Context(parse);
            if (!Signals.TryParse(parse.GetValue(signal), out var sig))
            {
                throw new CorralException($"invalid signal '{parse.GetValue(signal)}'");
            }

            var graceTime = Duration.Parse(parse.GetValue(grace)!);
            if (parse.GetValue(exec) is { } execId)
            {
                using var client = DaemonCommands.Connect(parse);
                var execSignal = parse.GetResult(signal) is { Implicit: false } ? parse.GetValue(signal)! : "KILL";
                await client.KillExecAsync(parse.GetValue(id)!, execId, execSignal, ct).ConfigureAwait(false);
                return 0;
            }

            if (DaemonCommands.HostGiven(parse))
            {
                using var client = DaemonCommands.Connect(parse);
                await client.KillAsync(parse.GetValue(id)!, parse.GetValue(signal)!, graceTime, ct).ConfigureAwait(false);
                return 0;
            }

            await ctx.CreateSupervisor().KillAsync(parse.GetValue(id)!, sig, graceTime, ct).ConfigureAwait(false);
            return 0;
        });
        return command;
    }

    private static Command PsCommand()
    {
        var json = new Option<bool>("--json") { Description = "Print JSON instead of a table" };
        var labels = new Option<string[]>("--label", "-l") { Description = "Only daemon sandboxes with this label K=V (repeatable; all must match)", AllowMultipleArgumentsPerToken = false };
        var states = new Option<string[]>("--state") { Description = "Only daemon sandboxes in this state: created, running, exited, failed (repeatable)", AllowMultipleArgumentsPerToken = false };
        var command = new Command("ps", "List running containers; with --host (or $CORRAL_HOST), --label or --state, the daemon's sandboxes") { json, labels, states };
        command.SetAction(async (parse, ct) =>
        {
            if (DaemonCommands.HostGiven(parse) || parse.GetValue(labels) is { Length: > 0 } || parse.GetValue(states) is { Length: > 0 })
            {
                return await DaemonQueries.PsAsync(parse, parse.GetValue(labels) ?? [], parse.GetValue(states) ?? [], parse.GetValue(json), ct).ConfigureAwait(false);
            }

            var ctx = Context(parse);
            var containers = new ContainerStateStore(ctx.StateDir).List();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(containers.ToList(), CliJsonContext.Default.ListContainerState));
                return 0;
            }

            var table = new Table().Border(TableBorder.Simple);
            foreach (var header in new[] { "ID", "RUNTIME", "PID", "STATUS", "MEMORY LIMIT", "CREATED", "COMMAND" })
            {
                table.AddColumn(header);
            }

            foreach (var c in containers)
            {
                table.AddRow(
                    Markup.Escape(c.Id),
                    c.Runtime,
                    c.Pid?.ToString(CultureInfo.InvariantCulture) ?? "-",
                    c.Status,
                    c.MemoryLimitBytes is { } m ? ByteSize.Format(m) : "-",
                    Markup.Escape(Ago(c.CreatedAt)),
                    Markup.Escape(Truncate(string.Join(' ', c.Command).ReplaceLineEndings(" "), 40)));
            }

            Table(table);
            return 0;
        });
        return command;
    }

    /// <summary>Tables are never wrapped to 80 columns when piped: scripts and tests read them whole.</summary>
    public static void Table(Table table)
    {
        if (Console.IsOutputRedirected)
        {
            AnsiConsole.Profile.Width = 1000;
        }

        AnsiConsole.Write(table);
    }

    private static Command StatsCommand()
    {
        var id = new Argument<string>("ID") { Description = "Container to read" };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var command = new Command("stats", "Memory, CPU and pids of a running container, from its cgroup; with --host (or $CORRAL_HOST), a daemon sandbox's") { id, json };
        command.SetAction(async (parse, ct) =>
        {
            var ctx = Context(parse);
            var containerId = parse.GetValue(id)!;
            if (DaemonCommands.HostGiven(parse))
            {
                return await DaemonQueries.StatsAsync(parse, containerId, parse.GetValue(json), ct).ConfigureAwait(false);
            }

            var state = new ContainerStateStore(ctx.StateDir).Get(ContainerId.Validate(containerId));
            if (state is null)
            {
                // Not a container of this host's CLI: a sandbox of the local daemon, when one serves.
                return File.Exists(Client.CorralClient.DefaultSocketPath)
                    ? await DaemonQueries.StatsAsync(parse, containerId, parse.GetValue(json), ct).ConfigureAwait(false)
                    : throw new CorralException($"no such container: {containerId}", 1);
            }

            var stats = ctx.CreateSupervisor().ReadStats(containerId)
                ?? throw new CorralException($"no cgroup stats for {containerId}: no cgroup available on this host");
            string? sandboxView = null;
            if (state.Runtime == "gvisor")
            {
                var result = await RuntimeCommandRunner.RunAsync(
                    new RuntimeInvocation(ctx.RuntimeOptions.RunscPath, ["--root", state.RuntimeRoot, "events", "--stats", containerId]),
                    TimeSpan.FromSeconds(10),
                    ct).ConfigureAwait(false);
                sandboxView = result.Succeeded ? result.Stdout.Trim() : null;
            }

            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new StatsView(containerId, state.Runtime, stats, sandboxView), CliJsonContext.Default.StatsView));
                return 0;
            }

            var table = new Table().Border(TableBorder.Simple).AddColumn("METRIC").AddColumn("VALUE");
            table.AddRow("memory current", ByteSize.Format(stats.MemoryCurrentBytes));
            table.AddRow("memory peak", stats.MemoryPeakBytes is { } p ? ByteSize.Format(p) : "-");
            table.AddRow("memory limit", stats.MemoryLimitBytes is { } l ? ByteSize.Format(l) : "unlimited");
            table.AddRow("cpu time", $"{stats.CpuUsageNs / 1e6:0.0} ms");
            table.AddRow("pids", stats.PidsLimit is { } pl ? $"{stats.PidsCurrent} / {pl}" : stats.PidsCurrent.ToString(CultureInfo.InvariantCulture));
            table.AddRow("oom kills", stats.OomKills.ToString(CultureInfo.InvariantCulture));
            Table(table);
            if (sandboxView is not null)
            {
                Console.WriteLine("gVisor sandbox view (runsc events --stats):");
                Console.WriteLine(sandboxView);
            }

            return 0;
        });
        return command;
    }

    private static Command SetupCrunCommand()
    {
        var command = new Command("setup-crun", "On a hybrid cgroup host, mount a cgroup v1 hierarchy for each controller attached to cgroup v2, so crun can run (idempotent)");
        command.SetAction(_ =>
        {
            var mounted = CrunHost.Setup();
            Console.Error.WriteLine(mounted.Count == 0
                ? "corral: crun can run on this host; nothing to do"
                : $"corral: mounted cgroup v1 hierarchies for crun: {string.Join(", ", mounted)}");
            return 0;
        });
        return command;
    }

    private static Command PrepareCommand()
    {
        var command = new Command("prepare", "Build the default image (Debian with python3) if it is missing");
        command.SetAction(async (parse, ct) =>
        {
            var ctx = Context(parse);
            var path = await ctx.EnsureDefaultImageAsync(ct).ConfigureAwait(false);
            Console.WriteLine(path);
            return 0;
        });
        return command;
    }

    private static Command SpecCommand()
    {
        var rootfs = new Option<string>("--rootfs") { Description = "Root filesystem directory", Required = true };
        var cmd = new Argument<string[]>("CMD") { Description = "Command and arguments, after --", Arity = ArgumentArity.OneOrMore };
        var command = new Command("spec", "Print the OCI config.json Corral would run CMD with (for comparing with the bare runtime)") { rootfs, cmd };
        command.SetAction(parse =>
        {
            // The same rules as run: an existing directory, never the host's root.
            var args = parse.GetValue(cmd)!;
            InputRules.Process(args, [], null);
            Console.WriteLine(Oci.SpecBuilder.ToJson(Oci.SpecBuilder.Build(new Oci.SpecInput
            {
                RootfsPath = InputRules.Rootfs(parse.GetValue(rootfs)!),
                Args = args,
            })));
            return 0;
        });
        return command;
    }

    public static string Ago(DateTimeOffset at)
    {
        var age = DateTimeOffset.UtcNow - at;
        return age.TotalSeconds < 60 ? $"{age.TotalSeconds:0}s ago" : age.TotalMinutes < 60 ? $"{age.TotalMinutes:0}m ago" : $"{age.TotalHours:0}h ago";
    }

    public static string Truncate(string text, int max) => text.Length <= max ? text : text[..(max - 1)] + "…";
}

internal sealed record StatsView(string Id, string Runtime, CgroupStats Cgroup, string? SandboxStats);

[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[System.Text.Json.Serialization.JsonSerializable(typeof(List<ContainerState>))]
[System.Text.Json.Serialization.JsonSerializable(typeof(StatsView))]
internal sealed partial class CliJsonContext : System.Text.Json.Serialization.JsonSerializerContext;
