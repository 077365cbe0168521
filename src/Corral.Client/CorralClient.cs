using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Corral.Protocol.V1;

namespace Corral.Client;

/// <summary>
/// A connection to a Corral daemon on its Unix socket, or over TCP with a bearer token. Failures
/// surface as <see cref="RpcException"/> with the daemon's status: NotFound, InvalidArgument,
/// FailedPrecondition, AlreadyExists, ResourceExhausted, Unauthenticated, Unavailable.
/// </summary>
public sealed partial class CorralClient : IAsyncDisposable, IDisposable
{
    public const string DefaultSocketPath = "/run/corral/corral.sock";

    private readonly GrpcChannel _channel;

    private CorralClient(GrpcChannel channel, string address, string socketPath)
    {
        _channel = channel;
        Address = address;
        SocketPath = socketPath;
        Raw = new Sandboxes.SandboxesClient(channel);
        Health = new Health.HealthClient(channel);
    }

    /// <summary>unix://PATH or http://HOST:PORT.</summary>
    public string Address { get; }

    /// <summary>The Unix socket; empty over TCP.</summary>
    public string SocketPath { get; }

    /// <summary>The generated client, for calls this wrapper does not cover.</summary>
    public Sandboxes.SandboxesClient Raw { get; }

    public Health.HealthClient Health { get; }

    /// <summary>
    /// Connects lazily: the first call opens the connection. <paramref name="target"/> is a socket
    /// path, unix://PATH, or tcp://HOST:PORT (http:// too) where the daemon serves TCP with
    /// --listen; <paramref name="token"/> is its bearer token, sent with every call.
    /// </summary>
    public static CorralClient Connect(string target = DefaultSocketPath, string? token = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(target);
        if (target.StartsWith("tcp://", StringComparison.Ordinal) || target.StartsWith("http://", StringComparison.Ordinal))
        {
            return ConnectTcp(target, token);
        }

        var socketPath = target.StartsWith("unix://", StringComparison.Ordinal) ? target["unix://".Length..] : target;
        ArgumentException.ThrowIfNullOrEmpty(socketPath, nameof(target));
        var endpoint = new UnixDomainSocketEndPoint(socketPath);
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(endpoint, cancellationToken).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
            EnableMultipleHttp2Connections = true,
        };

        // The authority is not used on a Unix socket; HTTP/2 without TLS needs an http:// address.
        var channel = GrpcChannel.ForAddress("http://corral", new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = 16 << 20,
        });
        return new CorralClient(channel, "unix://" + socketPath, socketPath);
    }

    private static CorralClient ConnectTcp(string target, string? token)
    {
        // h2c: HTTP/2 without TLS, as the daemon's --listen serves it.
        var address = "http://" + target[(target.IndexOf("://", StringComparison.Ordinal) + 3)..].TrimEnd('/');
        if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || uri.Port <= 0 || uri.AbsolutePath != "/")
        {
            throw new ArgumentException($"invalid daemon address '{target}': use tcp://HOST:PORT", nameof(target));
        }

        HttpMessageHandler handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true };
        if (!string.IsNullOrEmpty(token))
        {
            handler = new BearerTokenHandler(token, handler);
        }

        var channel = GrpcChannel.ForAddress(uri, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = 16 << 20,
        });
        return new CorralClient(channel, address, string.Empty);
    }

    /// <summary>True when the daemon answers and reports SERVING.</summary>
    public async Task<bool> IsServingAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            var response = await Health.CheckAsync(new HealthCheckRequest(), cancellationToken: cancellationToken).ConfigureAwait(false);
            return response.Status == HealthCheckResponse.Types.ServingStatus.Serving;
        }
        catch (RpcException ex) when (ex.StatusCode is StatusCode.Unavailable or StatusCode.Internal)
        {
            return false;
        }
    }

    public async Task<string> CreateAsync(CreateRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var response = await Raw.CreateAsync(request, cancellationToken: cancellationToken).ConfigureAwait(false);
        return response.Id;
    }

    /// <summary>Creates a sandbox and returns a handle that kills and removes it when disposed.</summary>
    public async Task<Sandbox> StartAsync(CreateRequest request, CancellationToken cancellationToken = default) =>
        new(this, await CreateAsync(request, cancellationToken).ConfigureAwait(false));

    public async Task<ExitRecord> WaitAsync(string id, CancellationToken cancellationToken = default) =>
        await Raw.WaitAsync(new WaitRequest { Id = id }, cancellationToken: cancellationToken).ConfigureAwait(false);

    /// <summary>Sends <paramref name="signal"/>, then SIGKILL if the sandbox still lives after <paramref name="grace"/>; returns when it is dead or the grace passed.</summary>
    public async Task KillAsync(string id, string signal = "TERM", TimeSpan? grace = null, CancellationToken cancellationToken = default)
    {
        var request = new KillRequest { Id = id, Signal = signal };
        if (grace is { } g)
        {
            request.Grace = Duration.FromTimeSpan(g);
        }

        await Raw.KillAsync(request, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Forgets an ended sandbox; with <paramref name="force"/>, kills a running one first and returns once nothing of it is left.</summary>
    public async Task RemoveAsync(string id, CancellationToken cancellationToken = default, bool force = false) =>
        await Raw.RemoveAsync(new RemoveRequest { Id = id, Force = force }, cancellationToken: cancellationToken).ConfigureAwait(false);

    public async Task<SandboxInfo> InspectAsync(string id, CancellationToken cancellationToken = default) =>
        await Raw.InspectAsync(new InspectRequest { Id = id }, cancellationToken: cancellationToken).ConfigureAwait(false);

    public async Task<IReadOnlyList<SandboxInfo>> ListAsync(
        IReadOnlyDictionary<string, string>? labelSelector = null,
        IEnumerable<SandboxState>? states = null,
        CancellationToken cancellationToken = default)
    {
        var request = new ListRequest();
        foreach (var (key, value) in labelSelector ?? new Dictionary<string, string>())
        {
            request.LabelSelector[key] = value;
        }

        request.States.AddRange(states ?? []);
        var response = await Raw.ListAsync(request, cancellationToken: cancellationToken).ConfigureAwait(false);
        return response.Sandboxes;
    }

    /// <summary>A running sandbox's cgroup counters; FailedPrecondition once it ended.</summary>
    public async Task<SandboxStats> StatsAsync(string id, CancellationToken cancellationToken = default) =>
        await Raw.StatsAsync(new StatsRequest { Id = id }, cancellationToken: cancellationToken).ConfigureAwait(false);

    /// <summary>The sandbox's output in write order; with <paramref name="follow"/>, until it ended.</summary>
    public async IAsyncEnumerable<LogChunk> LogsAsync(string id, bool follow = false, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var call = Raw.Logs(new LogsRequest { Id = id, Follow = follow }, cancellationToken: cancellationToken);
        await foreach (var chunk in call.ResponseStream.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return chunk;
        }
    }

    /// <summary>Every event the daemon kept, then live ones with <paramref name="follow"/> until cancelled.</summary>
    public async IAsyncEnumerable<Event> EventsAsync(bool follow = false, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var call = Raw.Events(new EventsRequest { Follow = follow }, cancellationToken: cancellationToken);
        await foreach (var e in call.ResponseStream.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return e;
        }
    }

    /// <summary>
    /// Runs a process in a running sandbox: <paramref name="stdin"/> is copied to it (then closed; null
    /// closes it at once), its output is written to <paramref name="stdout"/> and <paramref name="stderr"/>
    /// as it comes, and how it ended is returned. Cancelling kills the process.
    /// </summary>
    public async Task<ExecExit> ExecAsync(
        ExecStart start,
        Stream? stdin = null,
        Stream? stdout = null,
        Stream? stderr = null,
        Action<ExecStarted>? started = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(start);
        using var call = Raw.Exec(cancellationToken: cancellationToken);
        await call.RequestStream.WriteAsync(new ExecRequest { Start = start }, cancellationToken).ConfigureAwait(false);
        using var inputDone = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var input = SendStdinAsync(call.RequestStream, stdin, inputDone.Token);
        ExecExit? exit = null;
        try
        {
            await foreach (var response in call.ResponseStream.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                switch (response.MessageCase)
                {
                    case ExecResponse.MessageOneofCase.Started:
                        started?.Invoke(response.Started);
                        break;
                    case ExecResponse.MessageOneofCase.Output:
                        var sink = response.Output.Stream == LogStream.Stderr ? stderr : stdout;
                        if (sink is not null)
                        {
                            await sink.WriteAsync(response.Output.Data.Memory, cancellationToken).ConfigureAwait(false);
                            await sink.FlushAsync(cancellationToken).ConfigureAwait(false);
                        }

                        break;
                    case ExecResponse.MessageOneofCase.Exit:
                        exit = response.Exit;
                        break;
                }
            }
        }
        finally
        {
            // Stdin that nobody reads any more (the process ended) is dropped.
            await inputDone.CancelAsync().ConfigureAwait(false);
            _ = input.ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        }

        return exit ?? throw new RpcException(new Status(StatusCode.Internal, "the daemon ended the exec without its exit status"));
    }

    /// <summary>Runs <paramref name="command"/> in a running sandbox and collects its output as text.</summary>
    public async Task<ExecOutput> ExecAsync(string sandboxId, IReadOnlyList<string> command, string? stdin = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        var start = new ExecStart { SandboxId = sandboxId };
        start.Command.AddRange(command);
        using var input = stdin is null ? null : new MemoryStream(System.Text.Encoding.UTF8.GetBytes(stdin));
        using var stdout = new MemoryStream();
        using var stderr = new MemoryStream();
        var exit = await ExecAsync(start, input, stdout, stderr, cancellationToken: cancellationToken).ConfigureAwait(false);
        return new ExecOutput(exit, System.Text.Encoding.UTF8.GetString(stdout.ToArray()), System.Text.Encoding.UTF8.GetString(stderr.ToArray()));
    }

    /// <summary>The sandbox's running execs and its last ended ones.</summary>
    public async Task<IReadOnlyList<ExecInfo>> ListExecsAsync(string sandboxId, CancellationToken cancellationToken = default) =>
        (await Raw.ListExecsAsync(new ListExecsRequest { SandboxId = sandboxId }, cancellationToken: cancellationToken).ConfigureAwait(false)).Execs;

    /// <summary>Signals a running exec (KILL by default); FailedPrecondition once it ended.</summary>
    public async Task KillExecAsync(string sandboxId, string execId, string signal = "KILL", CancellationToken cancellationToken = default) =>
        await Raw.KillExecAsync(new KillExecRequest { SandboxId = sandboxId, ExecId = execId, Signal = signal }, cancellationToken: cancellationToken).ConfigureAwait(false);

    private static async Task SendStdinAsync(IClientStreamWriter<ExecRequest> requests, Stream? stdin, CancellationToken cancellationToken)
    {
        if (stdin is not null)
        {
            var buffer = new byte[32 * 1024];
            int read;
            while ((read = await stdin.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                await requests.WriteAsync(new ExecRequest { Stdin = Google.Protobuf.ByteString.CopyFrom(buffer, 0, read) }, cancellationToken).ConfigureAwait(false);
            }
        }

        await requests.CompleteAsync().ConfigureAwait(false);
    }

    public void Dispose() => _channel.Dispose();

    public ValueTask DisposeAsync()
    {
        _channel.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Adds `authorization: Bearer TOKEN` to every request.</summary>
internal sealed class BearerTokenHandler(string token, HttpMessageHandler inner) : DelegatingHandler(inner)
{
    private readonly System.Net.Http.Headers.AuthenticationHeaderValue _header = new("Bearer", token);

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        request.Headers.Authorization = _header;
        return base.SendAsync(request, cancellationToken);
    }
}

/// <summary>An exec's exit status with its whole output.</summary>
public sealed record ExecOutput(ExecExit Exit, string Stdout, string Stderr)
{
    public int ExitCode => Exit.ExitCode;
}
