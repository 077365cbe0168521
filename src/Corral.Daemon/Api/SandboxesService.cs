using Corral.Cgroups;
using Corral.Common;
using Corral.Networking;
using Corral.Rootfs;
using System.IO.Pipelines;
using System.Threading.Channels;
using Corral.Daemon.Admission;
using Corral.Daemon.Execs;
using Corral.Daemon.Images;
using Corral.Daemon.Sandboxes;
using Corral.Daemon.Stats;
using Corral.Runtimes;
using Corral.Shim;
using Corral.Supervision;
using Grpc.Core;
using Proto = Corral.Protocol.V1;

namespace Corral.Daemon.Api;

/// <summary>The gRPC face of <see cref="SandboxRegistry"/>: turns its refusals into statuses a caller can act on.</summary>
internal sealed class SandboxesService(
    SandboxRegistry registry,
    EventHub events,
    SandboxAdmission admission,
    SandboxImages images,
    SandboxStatsReader stats,
    SandboxExecs execs,
    Corral.Daemon.Files.SandboxFiles files,
    Microsoft.Extensions.Options.IOptions<Corral.Daemon.Hosting.DaemonOptions> daemonOptions) : Proto.Sandboxes.SandboxesBase
{
    /// <summary>Trailer with the exit code `corral` would give the same refusal when run here.</summary>
    public const string ExitCodeTrailer = "corral-exit-code";

    private static readonly TimeSpan DefaultGrace = TimeSpan.FromSeconds(10);

    /// <summary>
    /// PID 1 of a sandbox created without a command: it idles and takes execs, and ends at once on
    /// SIGTERM or SIGINT (with 128+S, as if the signal had killed it) rather than ignoring them as an init would.
    /// </summary>
    public static readonly IReadOnlyList<string> IdleCommand =
        ["sh", "-c", "command -v sleep >/dev/null || { echo 'corral: an idle sandbox needs sleep in its root filesystem' >&2; exit 127; }; trap 'exit 143' TERM; trap 'exit 130' INT; while :; do sleep 86400 & wait $! || exit; done"];

    public override Task<Proto.CreateResponse> Create(Proto.CreateRequest request, ServerCallContext context) => Guard(async () =>
    {
        if (request.Idle && request.Command.Count > 0)
        {
            throw CorralException.Invalid("idle and a command given: an idle sandbox runs its own PID 1, choose one");
        }

        var containerRequest = await images.ApplyAsync(ToRequest(request, daemonOptions.Value), request.Image, context.CancellationToken).ConfigureAwait(false);
        if (containerRequest.Command.Count == 0 || request.Idle)
        {
            containerRequest = containerRequest with { Command = IdleCommand };
        }

        var sandbox = await admission.CreateAsync(containerRequest, request.Labels.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal));
        return new Proto.CreateResponse { Id = sandbox.Id };
    });

    /// <summary>The first message names the sandbox and path; the tar arrives in pieces and is unpacked as it comes.</summary>
    public override Task<Proto.CopyInResponse> CopyIn(IAsyncStreamReader<Proto.CopyInRequest> requestStream, ServerCallContext context) => Guard(async () =>
    {
        if (!await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
        {
            throw CorralException.Invalid("CopyIn: no request (the first message names the sandbox and path)");
        }

        var first = requestStream.Current;
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 4 << 20, resumeWriterThreshold: 2 << 20));
        var unpack = Task.Run(async () =>
        {
            await using var reader = pipe.Reader.AsStream();
            try
            {
                return await files.CopyInAsync(first.Id, first.Path, reader, context.CancellationToken).ConfigureAwait(false);
            }
            finally
            {
                // A refusal stops the upload: the sender's next write fails.
                await pipe.Reader.CompleteAsync().ConfigureAwait(false);
            }
        });
        try
        {
            var message = first;
            while (true)
            {
                if (message.Data.Length > 0)
                {
                    var flush = await pipe.Writer.WriteAsync(message.Data.Memory, context.CancellationToken).ConfigureAwait(false);
                    if (flush.IsCompleted)
                    {
                        break;
                    }
                }

                if (unpack.IsCompleted || !await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
                {
                    break;
                }

                message = requestStream.Current;
            }
        }
        finally
        {
            await pipe.Writer.CompleteAsync().ConfigureAwait(false);
        }

        var result = await unpack.ConfigureAwait(false);
        return new Proto.CopyInResponse { Bytes = result.Bytes, Entries = result.Entries };
    });

    /// <summary>The tar is written as it is read, in pieces of up to 1 MiB.</summary>
    public override Task CopyOut(Proto.CopyOutRequest request, IServerStreamWriter<Proto.CopyOutChunk> responseStream, ServerCallContext context) => Guard(async () =>
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 4 << 20, resumeWriterThreshold: 2 << 20));
        var pack = Task.Run(async () =>
        {
            await using var writer = pipe.Writer.AsStream();
            try
            {
                await files.CopyOutAsync(request.Id, request.Path, writer, context.CancellationToken).ConfigureAwait(false);
            }
            finally
            {
                await pipe.Writer.CompleteAsync().ConfigureAwait(false);
            }
        });
        try
        {
            while (true)
            {
                var read = await pipe.Reader.ReadAsync(context.CancellationToken).ConfigureAwait(false);
                var buffer = read.Buffer;
                while (buffer.Length > 0)
                {
                    var piece = buffer.Slice(0, Math.Min(buffer.Length, 1 << 20));
                    await responseStream.WriteAsync(new Proto.CopyOutChunk { Data = Google.Protobuf.UnsafeByteOperations.UnsafeWrap(System.Buffers.BuffersExtensions.ToArray(piece)) }, context.CancellationToken).ConfigureAwait(false);
                    buffer = buffer.Slice(piece.End);
                }

                pipe.Reader.AdvanceTo(buffer.End);
                if (read.IsCompleted)
                {
                    break;
                }
            }
        }
        finally
        {
            await pipe.Reader.CompleteAsync().ConfigureAwait(false);
        }

        // A refusal (a missing path, a cap) surfaces here, as the call's status.
        await pack.ConfigureAwait(false);
        return true;
    });

    public override Task<Proto.SandboxStats> Stats(Proto.StatsRequest request, ServerCallContext context) =>
        Guard(() =>
        {
            var message = stats.Read(request.Id).ToProto(request.Id);
            if (registry.Get(request.Id).Network is { } network && BridgeNetwork.Counters(network.HostInterface) is { } counters)
            {
                message.NetworkRxBytes = counters.Rx;
                message.NetworkTxBytes = counters.Tx;
            }

            return Task.FromResult(message);
        });

    public override Task<Proto.ExitRecord> Wait(Proto.WaitRequest request, ServerCallContext context) => Guard(async () =>
    {
        var exit = await registry.WaitAsync(request.Id, context.CancellationToken).ConfigureAwait(false);
        return exit.ToProto();
    });

    public override Task<Proto.KillResponse> Kill(Proto.KillRequest request, ServerCallContext context) => Guard(async () =>
    {
        var signal = ParseSignal(request.Signal, Signals.SIGTERM);
        var grace = request.Grace is null ? DefaultGrace : InputRules.Duration("grace", ToTimeSpan("grace", request.Grace), zeroAllowed: true);

        await registry.KillAsync(request.Id, signal, grace, context.CancellationToken).ConfigureAwait(false);
        return new Proto.KillResponse();
    });

    public override Task<Proto.RemoveResponse> Remove(Proto.RemoveRequest request, ServerCallContext context) => Guard(async () =>
    {
        var sandbox = registry.Get(request.Id);
        if (request.Force && !sandbox.HasEnded)
        {
            try
            {
                await registry.KillAsync(request.Id, Signals.SIGKILL, TimeSpan.Zero, context.CancellationToken).ConfigureAwait(false);
            }
            catch (CorralException ex) when (ex.Kind == ErrorKind.FailedPrecondition)
            {
                // It ended meanwhile.
            }

            // Removed only once its container, cgroup and bundle are gone (the shim's exit record says so).
            await sandbox.Completion.ContinueWith(_ => { }, context.CancellationToken, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
        }

        registry.Remove(request.Id);
        execs.Forget(request.Id);
        return new Proto.RemoveResponse();
    });

    public override Task<Proto.SandboxInfo> Inspect(Proto.InspectRequest request, ServerCallContext context) =>
        Guard(() => Task.FromResult(registry.Get(request.Id).ToProto()));

    public override Task<Proto.ListResponse> List(Proto.ListRequest request, ServerCallContext context) => Guard(() =>
    {
        var response = new Proto.ListResponse();
        var states = request.States.ToHashSet();
        foreach (var sandbox in registry.List())
        {
            var info = sandbox.ToProto();
            if (states.Count > 0 && !states.Contains(info.State))
            {
                continue;
            }

            if (request.LabelSelector.All(kv => info.Labels.TryGetValue(kv.Key, out var value) && value == kv.Value))
            {
                response.Sandboxes.Add(info);
            }
        }

        return Task.FromResult(response);
    });

    public override Task Logs(Proto.LogsRequest request, IServerStreamWriter<Proto.LogChunk> responseStream, ServerCallContext context) => Guard(async () =>
    {
        var sandbox = registry.Get(request.Id);
        try
        {
            // A followed log ends when the sandbox does; at shutdown the daemon ends every sandbox first.
            var frames = SandboxLog.ReadAsync(sandbox.Files.LogFile, request.Follow, () => sandbox.HasEnded, sandbox.ChangedAsync, context.CancellationToken);
            await foreach (var (stream, data) in frames.ConfigureAwait(false))
            {
                await responseStream.WriteAsync(ProtoMapping.ToProto(stream, data), context.CancellationToken).ConfigureAwait(false);
            }
        }
        catch (FileNotFoundException)
        {
            throw CorralException.NotFound($"no such sandbox: {request.Id}");
        }

        return true;
    });

    public override Task Events(Proto.EventsRequest request, IServerStreamWriter<Proto.Event> responseStream, ServerCallContext context) => Guard(async () =>
    {
        // Followed events end when the daemon stops, after the exits of the sandboxes it stopped.
        await foreach (var e in events.ReadAsync(request.Follow, context.CancellationToken).ConfigureAwait(false))
        {
            await responseStream.WriteAsync(e.ToProto(), context.CancellationToken).ConfigureAwait(false);
        }

        return true;
    });

    public override Task Exec(IAsyncStreamReader<Proto.ExecRequest> requestStream, IServerStreamWriter<Proto.ExecResponse> responseStream, ServerCallContext context) => Guard(async () =>
    {
        var callEnded = context.CancellationToken;
        if (!await requestStream.MoveNext(callEnded).ConfigureAwait(false) || requestStream.Current.MessageCase != Proto.ExecRequest.MessageOneofCase.Start)
        {
            throw CorralException.Invalid("the first Exec message must be ExecStart (sandbox_id, command)");
        }

        var start = requestStream.Current.Start;
        var stdin = new Pipe();
        var output = Channel.CreateBounded<Proto.ExecResponse>(new BoundedChannelOptions(64) { SingleReader = true });
        var io = new ExecIo(
            stdin.Reader.AsStream(),
            new ExecOutputStream(Proto.LogStream.Stdout, output.Writer, callEnded),
            new ExecOutputStream(Proto.LogStream.Stderr, output.Writer, callEnded));
        var exec = await execs.StartAsync(ToExecRequest(start), io, callEnded).ConfigureAwait(false);

        await responseStream.WriteAsync(new Proto.ExecResponse { Started = new Proto.ExecStarted { ExecId = exec.ExecId, Pid = exec.Pid ?? 0 } }, callEnded).ConfigureAwait(false);

        // No reader or writer may touch this call's streams once the handler returns: Kestrel reuses
        // an HTTP/2 stream's objects, so a read left pending lands on a later, unrelated call
        // ("Reading is already in progress"). Both tasks end with the handler, and are awaited.
        using var handlerEnded = CancellationTokenSource.CreateLinkedTokenSource(callEnded);
        var forwarder = ForwardStdinAsync(requestStream, stdin.Writer, handlerEnded.Token);
        var writer = Task.Run(
            async () =>
            {
                await foreach (var message in output.Reader.ReadAllAsync(handlerEnded.Token).ConfigureAwait(false))
                {
                    await responseStream.WriteAsync(message, handlerEnded.Token).ConfigureAwait(false);
                }
            },
            CancellationToken.None);
        try
        {
            // Ends after the output was drained (bounded grace): the exit is the last message.
            var result = await exec.Completion.ConfigureAwait(false);
            output.Writer.TryComplete();
            await writer.ConfigureAwait(false);
            await responseStream.WriteAsync(new Proto.ExecResponse { Exit = result.ToProto() }, callEnded).ConfigureAwait(false);
            return true;
        }
        finally
        {
            output.Writer.TryComplete();
            await handlerEnded.CancelAsync().ConfigureAwait(false);
            await EndQuietlyAsync(writer).ConfigureAwait(false);
            await EndQuietlyAsync(forwarder).ConfigureAwait(false);
        }
    });

    /// <summary>Awaits a task that serves a call's streams, which may end by the call's cancellation.</summary>
    private static async Task EndQuietlyAsync(Task task)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or RpcException or ChannelClosedException)
        {
            // The call ended: what it was doing ends with it.
        }
    }

    public override Task<Proto.ListExecsResponse> ListExecs(Proto.ListExecsRequest request, ServerCallContext context) => Guard(() =>
    {
        var response = new Proto.ListExecsResponse();
        response.Execs.AddRange(execs.List(request.SandboxId).Select(e => e.ToProto()));
        return Task.FromResult(response);
    });

    public override Task<Proto.KillExecResponse> KillExec(Proto.KillExecRequest request, ServerCallContext context) => Guard(async () =>
    {
        var signal = ParseSignal(request.Signal, Signals.SIGKILL);
        await execs.KillAsync(request.SandboxId, request.ExecId, signal, context.CancellationToken).ConfigureAwait(false);
        return new Proto.KillExecResponse();
    });

    /// <summary>The caller's stdin messages into the process's stdin, until close_stdin or the request stream's end.</summary>
    private static async Task ForwardStdinAsync(IAsyncStreamReader<Proto.ExecRequest> requestStream, PipeWriter stdin, CancellationToken callEnded)
    {
        try
        {
            while (await requestStream.MoveNext(callEnded).ConfigureAwait(false))
            {
                var message = requestStream.Current;
                if (message.MessageCase == Proto.ExecRequest.MessageOneofCase.CloseStdin)
                {
                    break;
                }

                if (message.MessageCase == Proto.ExecRequest.MessageOneofCase.Stdin && !message.Stdin.IsEmpty)
                {
                    var flushed = await stdin.WriteAsync(message.Stdin.Memory, callEnded).ConfigureAwait(false);
                    if (flushed.IsCompleted)
                    {
                        break;
                    }
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or RpcException)
        {
            // The call ended (the process exited, or the caller went away): stdin ends with it.
        }
        finally
        {
            await stdin.CompleteAsync().ConfigureAwait(false);
        }
    }

    private static ExecRequest ToExecRequest(Proto.ExecStart start)
    {
        InputRules.Process(start.Command, start.Env, string.IsNullOrEmpty(start.Workdir) ? null : start.Workdir);
        return new ExecRequest
        {
            ContainerId = start.SandboxId,
            Command = [.. start.Command],
            Env = [.. start.Env],
            Workdir = string.IsNullOrEmpty(start.Workdir) ? null : start.Workdir,
            Timeout = PositiveTimeout(start.Timeout),
        };
    }

    private static ContainerRequest ToRequest(Proto.CreateRequest request, Corral.Daemon.Hosting.DaemonOptions options)
    {
        // Text first: a NUL or control character never reaches a path call or the shim.
        InputRules.Process(request.Command, request.Env, string.IsNullOrEmpty(request.Workdir) ? null : request.Workdir);
        InputRules.NoControl("rootfs", request.Rootfs);
        InputRules.NoControl("image", request.Image);
        if (request.Name.Length > 0)
        {
            ContainerId.Validate(request.Name);
        }

        foreach (var (key, value) in request.Labels)
        {
            InputRules.NoControl("label", key);
            InputRules.NoNul($"value of label {key}", value);
        }

        if (request.Pids > InputRules.MaxPids || request.MemoryBytes > InputRules.MaxBytes || double.IsInfinity(request.Cpus))
        {
            throw CorralException.Invalid($"invalid limits: memory_bytes {request.MemoryBytes}, cpus {request.Cpus}, pids {request.Pids} (pids at most {InputRules.MaxPids}, memory at most 4 EiB)");
        }

        // Empty: an image, or the default image (SandboxImages decides).
        if (request.Rootfs.Length > 0 && (string.IsNullOrWhiteSpace(request.Rootfs) || !Path.IsPathRooted(request.Rootfs)))
        {
            throw CorralException.Invalid($"invalid rootfs '{request.Rootfs}': an absolute path on the daemon's host is needed");
        }

        if (request.MemoryBytes < 0 || request.Pids < 0 || request.Cpus < 0 || double.IsNaN(request.Cpus))
        {
            throw CorralException.Invalid($"invalid limits: memory_bytes {request.MemoryBytes}, cpus {request.Cpus}, pids {request.Pids} (0 means no limit; none may be negative)");
        }

        var timeout = PositiveTimeout(request.Timeout);
        var runtime = request.Runtime switch
        {
            Proto.Runtime.Runc => RuntimeKind.Runc,
            Proto.Runtime.Crun => RuntimeKind.Crun,
            Proto.Runtime.Gvisor or Proto.Runtime.Unspecified => RuntimeKind.Gvisor,
            _ => throw CorralException.Invalid($"invalid runtime {request.Runtime}"),
        };

        return new ContainerRequest
        {
            Id = string.IsNullOrEmpty(request.Name) ? null : request.Name,
            Runtime = runtime,
            Rootfs = request.Rootfs,
            Command = [.. request.Command],
            Env = [.. request.Env],
            Workdir = string.IsNullOrEmpty(request.Workdir) ? null : request.Workdir,
            Timeout = timeout,
            Limits = new ResourceLimits(
                request.MemoryBytes > 0 ? request.MemoryBytes : null,
                request.Cpus > 0 ? request.Cpus : null,
                request.Pids > 0 ? request.Pids : null),
            Network = ToNetwork(request.Network, options.DefaultNetwork),
            ReadOnlyRoot = request.ReadOnly,
            DiskBytes = request.DiskBytes switch
            {
                < 0 => throw CorralException.Invalid($"invalid disk_bytes {request.DiskBytes}: 0 (the daemon's default) or a size"),
                0 => request.ReadOnly ? null : options.DefaultDiskBytes,
                _ => request.DiskBytes,
            },
            Mounts = ToMounts(request.Mounts, options.AllowMountsUnder),
            User = string.IsNullOrEmpty(request.User) ? null : request.User,
        };
    }

    /// <summary>The API's mounts; a bind source must lie under the daemon's --allow-mounts-under (checked before anything is created).</summary>
    private static List<MountRequest> ToMounts(IEnumerable<Proto.Mount> mounts, IReadOnlyList<string> allowedRoots)
    {
        var result = mounts.Select(m => new MountRequest
        {
            Kind = m.Type switch
            {
                Proto.Mount.Types.Type.Bind => MountKind.Bind,
                Proto.Mount.Types.Type.Tmpfs => MountKind.Tmpfs,
                _ => throw CorralException.Invalid($"invalid mount type {(int)m.Type}: use BIND or TMPFS"),
            },
            Source = m.Source.Length == 0 ? null : m.Source,
            Target = m.Target,
            ReadOnly = m.ReadOnly,
            SizeBytes = m.SizeBytes switch
            {
                < 0 => throw CorralException.Invalid($"invalid mount size_bytes {m.SizeBytes}"),
                0 => null,
                _ => m.SizeBytes,
            },
            CreateSource = m.CreateSource,
        }).ToList();
        MountInput.CheckAllowed(result, allowedRoots);
        return result;
    }

    /// <summary>The API's network fields, checked by the one network check (INVALID_ARGUMENT on anything off).</summary>
    private static NetworkRequest ToNetwork(Proto.NetworkSpec? spec, NetworkMode defaultNetwork)
    {
        if (spec is null)
        {
            return NetworkInput.Validate(new NetworkRequest { Mode = defaultNetwork });
        }

        var mode = spec.Mode switch
        {
            Proto.NetworkMode.Unspecified => defaultNetwork,
            Proto.NetworkMode.None => NetworkMode.None,
            Proto.NetworkMode.Bridge => NetworkMode.Bridge,
            _ => throw CorralException.Invalid($"invalid network mode {(int)spec.Mode}: use NONE or BRIDGE"),
        };
        var ports = spec.Ports.Select(p => new PortMapping(
            p.HostIp.Length == 0 ? "127.0.0.1" : p.HostIp,
            p.HostPort > 65535 ? -1 : (int)p.HostPort,
            p.ContainerPort > 65535 ? -1 : (int)p.ContainerPort,
            p.Protocol switch
            {
                "" or "tcp" => PortProtocol.Tcp,
                "udp" => PortProtocol.Udp,
                _ => throw CorralException.Invalid($"invalid port protocol {InputRules.Quote(p.Protocol)}: use tcp or udp"),
            })).ToList();
        return NetworkInput.Validate(new NetworkRequest
        {
            Mode = mode,
            Ports = ports,
            Egress = new EgressPolicy { None = spec.EgressNone, AllowCidrs = [.. spec.EgressAllowCidrs], DenyCidrs = [.. spec.EgressDenyCidrs] },
            Dns = [.. spec.Dns],
        });
    }

    /// <summary>A name (TERM, SIGKILL) or number; <paramref name="unset"/> when empty.</summary>
    private static int ParseSignal(string text, int unset) =>
        string.IsNullOrEmpty(text) ? unset
        : Signals.TryParse(text, out var signal) ? signal
        : throw CorralException.Invalid($"invalid signal '{text}': use a name (TERM, KILL, SIGINT) or a number");

    private static TimeSpan? PositiveTimeout(Google.Protobuf.WellKnownTypes.Duration? duration) =>
        duration is null ? null : InputRules.Duration("timeout", ToTimeSpan("timeout", duration));

    /// <summary>A wire duration as a TimeSpan; one out of protobuf's range (or with bad nanos) is bad input, not a crash.</summary>
    private static TimeSpan ToTimeSpan(string what, Google.Protobuf.WellKnownTypes.Duration duration)
    {
        try
        {
            return duration.ToTimeSpan();
        }
        catch (InvalidOperationException)
        {
            throw CorralException.Invalid($"invalid {what} {{seconds: {duration.Seconds}, nanos: {duration.Nanos}}}: out of range");
        }
    }

    private static async Task<T> Guard<T>(Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (CorralException ex)
        {
            // A CLI exit code other than the default travels along (127: the command does not exist in
            // the sandbox); otherwise the CLI derives it from the status (NOT_FOUND: 1, the rest 125).
            var trailers = ex.ExitCode == CorralExitCodes.CorralError
                ? Metadata.Empty
                : new Metadata { { ExitCodeTrailer, ex.ExitCode.ToString(System.Globalization.CultureInfo.InvariantCulture) } };
            throw new RpcException(new Status(ErrorMapping.ToStatusCode(ex.Kind), ex.Message), trailers);
        }
        catch (AdmissionRefusedException ex)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, ex.Message));
        }
    }
}
