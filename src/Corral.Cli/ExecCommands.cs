using System.CommandLine;
using System.Globalization;
using Corral.Common;
using Corral.Protocol.V1;
using Corral.Supervision;
using Microsoft.Extensions.Logging;
using Spectre.Console;
using ExecRequest = Corral.Supervision.ExecRequest;

namespace Corral.Cli;

/// <summary>`corral exec` and `corral execs`: processes inside a running container or daemon sandbox.</summary>
internal static class ExecCommands
{
    public static Command Exec()
    {
        var id = new Argument<string>("ID") { Description = "Running container or sandbox" };
        var cmd = new Argument<string[]>("CMD") { Description = "Command and arguments (after --)", Arity = ArgumentArity.OneOrMore };
        var env = new Option<string[]>("--env", "-e") { Description = "K=V added to the container's environment (repeatable)", AllowMultipleArgumentsPerToken = false };
        var workdir = new Option<string>("--workdir", "-w") { Description = "Working directory inside the container (default: the container's)" };
        var interactive = new Option<bool>("--interactive", "-i") { Description = "Pass this stdin to the process (otherwise it reads an empty stdin)" };
        var timeout = new Option<string>("--timeout") { Description = "SIGKILL the process after this long (30s, 5m, ...)" };
        var command = new Command("exec", "Run a process inside a running container, with its user, capabilities and limits; exits with the process's exit code. Through the daemon with --host (or $CORRAL_HOST), here otherwise") { id, env, workdir, interactive, timeout, cmd };
        command.SetAction(async (parse, ct) =>
        {
            var args = parse.GetValue(cmd) ?? [];
            if (args.Length > 0 && args[0].StartsWith('-'))
            {
                throw new CorralException($"unrecognized option '{args[0]}' (the command goes after --)");
            }

            var request = new ExecRequest
            {
                ContainerId = ContainerId.Validate(parse.GetValue(id)),
                Command = args,
                Env = (parse.GetValue(env) ?? []).Select(RunCommand.ParseEnv).ToList(),
                Workdir = parse.GetValue(workdir),
                Timeout = parse.GetValue(timeout) is { } text ? Common.Duration.Parse(text) : null,
            };
            await using var stdin = parse.GetValue(interactive) ? Console.OpenStandardInput() : null;
            await using var stdout = Console.OpenStandardOutput();
            await using var stderr = Console.OpenStandardError();
            return DaemonCommands.HostGiven(parse)
                ? await ThroughDaemonAsync(parse, request, stdin, stdout, stderr, ct).ConfigureAwait(false)
                : await HereAsync(parse, request, stdin, stdout, stderr, ct).ConfigureAwait(false);
        });
        return command;
    }

    public static Command Execs()
    {
        var id = new Argument<string>("ID") { Description = "Daemon sandbox" };
        var json = new Option<bool>("--json") { Description = "Print JSON instead of a table" };
        var command = new Command("execs", "A daemon sandbox's execs: running ones and the last ended ones, as a table") { id, json };
        command.SetAction(async (parse, ct) =>
        {
            using var client = DaemonCommands.Connect(parse);
            var execs = await client.ListExecsAsync(parse.GetValue(id)!, ct).ConfigureAwait(false);
            if (parse.GetValue(json))
            {
                var response = new ListExecsResponse();
                response.Execs.AddRange(execs);
                Console.WriteLine(new Google.Protobuf.JsonFormatter(Google.Protobuf.JsonFormatter.Settings.Default.WithIndentation()).Format(response));
                return 0;
            }

            var table = new Table().Border(TableBorder.Simple);
            foreach (var header in new[] { "EXEC", "STATE", "PID", "EXIT", "STARTED", "COMMAND" })
            {
                table.AddColumn(header);
            }

            foreach (var e in execs)
            {
                table.AddRow(
                    Markup.Escape(e.ExecId),
                    e.State == ExecState.Running ? "running" : "exited",
                    e.Pid.ToString(CultureInfo.InvariantCulture),
                    e.Exit is { } exit ? exit.ExitCode.ToString(CultureInfo.InvariantCulture) : "-",
                    Markup.Escape(CorralCli.Ago(e.StartedAt.ToDateTimeOffset())),
                    Markup.Escape(CorralCli.Truncate(string.Join(' ', e.Command).ReplaceLineEndings(" "), 50)));
            }

            CorralCli.Table(table);
            return 0;
        });
        return command;
    }

    private static async Task<int> ThroughDaemonAsync(ParseResult parse, ExecRequest request, Stream? stdin, Stream stdout, Stream stderr, CancellationToken cancellationToken)
    {
        var start = new ExecStart { SandboxId = request.ContainerId, Workdir = request.Workdir ?? string.Empty };
        start.Command.AddRange(request.Command);
        foreach (var (key, value) in request.Env)
        {
            start.Env[key] = value;
        }

        if (request.Timeout is { } timeout)
        {
            start.Timeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(timeout);
        }

        using var client = DaemonCommands.Connect(parse);
        var exit = await client.ExecAsync(start, stdin, stdout, stderr, cancellationToken: cancellationToken).ConfigureAwait(false);
        return exit.ExitCode;
    }

    private static async Task<int> HereAsync(ParseResult parse, ExecRequest request, Stream? stdin, Stream stdout, Stream stderr, CancellationToken cancellationToken)
    {
        var ctx = CorralCli.Context(parse);
        var executor = new ContainerExecutor(ctx.SupervisorOptions(), ctx.RuntimeOptions, TimeProvider.System, ctx.Loggers.CreateLogger<ContainerExecutor>());
        var exec = await executor.StartAsync(request, new ExecIo(stdin, stdout, stderr), cancellationToken).ConfigureAwait(false);
        var result = await exec.Completion.ConfigureAwait(false);
        return result.ExitCode;
    }
}
