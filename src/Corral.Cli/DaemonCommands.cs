using System.CommandLine;
using System.Globalization;
using Corral.Client;
using Corral.Common;
using Corral.Protocol.V1;
using Google.Protobuf;
using Grpc.Core;

namespace Corral.Cli;

/// <summary>Commands that go through a running daemon (`corral serve`) instead of supervising here.</summary>
internal static class DaemonCommands
{
    public static readonly Option<string> Host = new("--host", "-H") { Description = "Daemon address, unix://PATH or tcp://HOST:PORT (default unix:///run/corral/corral.sock, or $CORRAL_HOST)", Recursive = true };

    public static readonly Option<string> TokenFile = new("--token-file") { Description = "File with the bearer token for a tcp:// --host (or $CORRAL_TOKEN)", Recursive = true };

    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithIndentation().WithFormatDefaultValues(false));

    /// <summary>True when the user named a daemon (--host or $CORRAL_HOST): commands that can also work locally then use it.</summary>
    public static bool HostGiven(ParseResult parse) =>
        parse.GetValue(Host) is not null || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CORRAL_HOST"));

    public static CorralClient Connect(ParseResult parse)
    {
        var host = parse.GetValue(Host) ?? NonEmpty(Environment.GetEnvironmentVariable("CORRAL_HOST")) ?? "unix://" + CorralClient.DefaultSocketPath;
        if (host.StartsWith("tcp://", StringComparison.Ordinal) || host.StartsWith("http://", StringComparison.Ordinal))
        {
            var token = Token(parse) ?? throw new CorralException($"--host {host} needs the daemon's token: --token-file F, or $CORRAL_TOKEN");
            try
            {
                return CorralClient.Connect(host, token);
            }
            catch (ArgumentException)
            {
                throw new CorralException($"invalid --host '{host}': use tcp://HOST:PORT");
            }
        }

        if (!host.StartsWith("unix://", StringComparison.Ordinal) || host.Length <= "unix://".Length)
        {
            throw new CorralException($"invalid --host '{host}': use unix:///path/to/corral.sock or tcp://HOST:PORT");
        }

        var socketPath = host["unix://".Length..];
        InputRules.NoControl("--host", socketPath);
        if (!Answers(socketPath))
        {
            throw new CorralException(ErrorKind.Unavailable, $"no daemon is running at {socketPath}; start one with `corral serve`{(socketPath == CorralClient.DefaultSocketPath ? string.Empty : $" --socket {socketPath}")}");
        }

        return CorralClient.Connect(socketPath);
    }

    /// <summary>True when something accepts connections on the Unix socket (gRPC's own error for a missing one names no path).</summary>
    private static bool Answers(string socketPath)
    {
        using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        try
        {
            probe.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(socketPath));
            return true;
        }
        catch (Exception ex) when (ex is System.Net.Sockets.SocketException or ArgumentException)
        {
            return false;
        }
    }

    private static string? Token(ParseResult parse)
    {
        if (parse.GetValue(TokenFile) is { } path)
        {
            string text;
            try
            {
                text = File.ReadAllText(path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new CorralException($"cannot read --token-file {path}: {ex.Message}");
            }

            return NonEmpty(text.Split('\n', 2)[0].Trim()) ?? throw new CorralException($"--token-file {path} is empty");
        }

        return NonEmpty(Environment.GetEnvironmentVariable("CORRAL_TOKEN")?.Trim());
    }

    private static string? NonEmpty(string? text) => string.IsNullOrEmpty(text) ? null : text;

    /// <summary>A daemon's refusal as one line and the exit code a script can test.</summary>
    public static int Fail(RpcException ex)
    {
        var message = ex.StatusCode switch
        {
            StatusCode.Unavailable when ex.Status.Detail.Contains("Error connecting", StringComparison.OrdinalIgnoreCase) || ex.Status.Detail.Contains("Error starting gRPC call", StringComparison.OrdinalIgnoreCase)
                => $"no daemon is answering at the --host address; start one with `corral serve` (and --listen for TCP): {ex.Status.Detail.ReplaceLineEndings(" ")}",
            StatusCode.Unavailable => $"cannot reach the daemon: {ex.Status.Detail} (is `corral serve` running? see --host)",
            StatusCode.Unauthenticated => $"the daemon refused the call: {ex.Status.Detail}",
            _ => ex.Status.Detail,
        };
        Console.Error.WriteLine($"corral: {message}");
        if (ex.Trailers.GetValue("corral-exit-code") is { } text && int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var code) && code > 0)
        {
            return code;
        }

        return ex.StatusCode == StatusCode.NotFound ? 1 : CorralExitCodes.CorralError;
    }

    public static async Task<int> RunDetachedAsync(ParseResult parse, CreateRequest request, CancellationToken cancellationToken)
    {
        using var client = Connect(parse);
        Console.WriteLine(await client.CreateAsync(request, cancellationToken).ConfigureAwait(false));
        return 0;
    }

    public static IEnumerable<Command> Create()
    {
        yield return Inspect();
        yield return Logs();
        yield return Wait();
        yield return Remove();
        yield return Events();
    }

    private static Command Inspect()
    {
        var id = new Argument<string>("ID") { Description = "Sandbox id" };
        var command = new Command("inspect", "A daemon sandbox's state and, once it ended, its exit record (JSON)") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var client = Connect(parse);
            Console.WriteLine(Json.Format(await client.InspectAsync(parse.GetValue(id)!, ct).ConfigureAwait(false)));
            return 0;
        });
        return command;
    }

    private static Command Logs()
    {
        var id = new Argument<string>("ID") { Description = "Sandbox id" };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing until the sandbox ended" };
        var command = new Command("logs", "A daemon sandbox's stdout and stderr, to this stdout and stderr") { id, follow };
        command.SetAction(async (parse, ct) =>
        {
            using var client = Connect(parse);
            await using var stdout = Console.OpenStandardOutput();
            await using var stderr = Console.OpenStandardError();
            await foreach (var chunk in client.LogsAsync(parse.GetValue(id)!, parse.GetValue(follow), ct).ConfigureAwait(false))
            {
                var sink = chunk.Stream == LogStream.Stderr ? stderr : stdout;
                await sink.WriteAsync(chunk.Data.Memory, ct).ConfigureAwait(false);
                await sink.FlushAsync(ct).ConfigureAwait(false);
            }

            return 0;
        });
        return command;
    }

    private static Command Wait()
    {
        var id = new Argument<string>("ID") { Description = "Sandbox id" };
        var command = new Command("wait", "Wait until a daemon sandbox ended; print its exit record and exit with its exit code") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var client = Connect(parse);
            var exit = await client.WaitAsync(parse.GetValue(id)!, ct).ConfigureAwait(false);

            // The same record, in the same shape, as `corral run --result-file` writes.
            Console.WriteLine(FromProto(exit).ToJson());
            return exit.ExitCode;
        });
        return command;
    }

    /// <summary>The daemon's exit record as the library's <see cref="Corral.Supervision.ExitRecord"/>, for its one JSON shape.</summary>
    internal static Corral.Supervision.ExitRecord FromProto(ExitRecord exit) => new()
    {
        Id = exit.Id,
        Runtime = exit.Runtime,
        Command = [.. exit.Command],
        ExitCode = exit.ExitCode,
        Signal = exit.HasSignal ? exit.Signal : null,
        Pid = exit.HasPid ? exit.Pid : null,
        StartedAt = exit.StartedAt?.ToDateTimeOffset() ?? default,
        ExitedAt = exit.ExitedAt?.ToDateTimeOffset() ?? default,
        DurationMs = exit.DurationMs,
        TimedOut = exit.TimedOut,
        OomKilled = exit.OomKilled,
        OomReason = exit.HasOomReason ? exit.OomReason : null,
        OomKills = exit.OomKills,
        OomLikely = exit.OomLikely,
        OomStrategy = exit.HasOomStrategy ? exit.OomStrategy : null,
        OomEvents = [.. exit.OomEvents.Select(e => new Corral.Supervision.OomEventRecord(e.Kind, e.At?.ToDateTimeOffset() ?? default, e.OomKills, e.Detail))],
        MemoryLimitBytes = exit.HasMemoryLimitBytes ? exit.MemoryLimitBytes : null,
        PeakMemoryBytes = exit.HasPeakMemoryBytes ? exit.PeakMemoryBytes : null,
        CpuUsageNs = exit.HasCpuUsageNs ? exit.CpuUsageNs : null,
        StdoutTail = exit.StdoutTail,
        StderrTail = exit.StderrTail,
    };

    private static Command Remove()
    {
        var id = new Argument<string>("ID") { Description = "Sandbox id" };
        var force = new Option<bool>("--force", "-f") { Description = "Kill it first (SIGKILL) if it still runs" };
        var command = new Command("rm", "Remove an ended daemon sandbox: its record, logs and root filesystem") { id, force };
        command.SetAction(async (parse, ct) =>
        {
            using var client = Connect(parse);
            await client.RemoveAsync(parse.GetValue(id)!, ct, parse.GetValue(force)).ConfigureAwait(false);
            return 0;
        });
        return command;
    }

    private static Command Events()
    {
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing live events until interrupted" };
        var command = new Command("events", "The daemon's sandbox events, one line each: time, type, id, detail") { follow };
        command.SetAction(async (parse, ct) =>
        {
            using var client = Connect(parse);
            try
            {
                await foreach (var e in client.EventsAsync(parse.GetValue(follow), ct).ConfigureAwait(false))
                {
                    var detail = e.Type switch
                    {
                        EventType.Started => $"pid={e.Pid}",
                        EventType.Exited => $"exit_code={e.Exit.ExitCode}" + (e.Exit.OomKilled ? " oom_killed=true" : string.Empty),
                        _ => e.Detail,
                    };
                    var type = e.Type.ToString().ToLowerInvariant();
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{e.At.ToDateTimeOffset():yyyy-MM-ddTHH:mm:ss.fffZ} {type} {e.Id} {detail}").TrimEnd());
                }
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
                // Interrupted while following.
            }

            return 0;
        });
        return command;
    }
}
