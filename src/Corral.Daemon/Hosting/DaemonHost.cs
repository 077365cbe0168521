using Corral.Cgroups;
using Corral.Common;
using Corral.Daemon.Admission;
using Corral.Daemon.Execs;
using Corral.Daemon.Api;
using Corral.Daemon.Images;
using Corral.Daemon.Logging;
using Corral.Daemon.Sandboxes;
using Corral.Daemon.Stats;
using Corral.Images;
using Corral.Oom;
using Corral.Runtimes;
using Corral.Supervision;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Corral.Daemon.Hosting;

/// <summary>`corral serve`: the gRPC API on a Unix socket (and TCP with a token), one supervisor run per sandbox.</summary>
public static class DaemonHost
{
    public const string Usage =
        "usage: corral serve [--socket PATH] [--state-dir DIR] [--data-dir DIR] [--shim PATH] [--log-level LEVEL] [--runsc-platform P] [--runc-path P] [--runsc-path P]\n"
        + "                    [--listen HOST:PORT --token-file F] [--capacity-cpus N] [--capacity-memory SIZE] [--memory-reserve SIZE]";

    public static async Task<int> RunAsync(string[] args)
    {
        var daemon = new DaemonOptions();
        var runtime = new RuntimeOptions();
        var admission = new AdmissionOptions();
        var logLevel = LogLevel.Information;
        string? listen = null;
        string? tokenFile = null;
        var dataDir = Environment.GetEnvironmentVariable("CORRAL_DATA_DIR") ?? "/var/lib/corral";
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (arg is "-h" or "--help")
            {
                Console.WriteLine(Usage);
                return 0;
            }

            if (i + 1 >= args.Length)
            {
                throw new CorralException($"{arg}: a value is needed\n{Usage}");
            }

            var value = args[++i];
            switch (arg)
            {
                case "--socket":
                    daemon.SocketPath = Path.GetFullPath(value);
                    break;
                case "--state-dir":
                    daemon.StateDir = Path.GetFullPath(value);
                    break;
                case "--shim":
                    daemon.ShimPath = Path.GetFullPath(value);
                    break;
                case "--log-level":
                    logLevel = Enum.TryParse<LogLevel>(value, ignoreCase: true, out var level) ? level : throw new CorralException($"invalid log level '{value}'");
                    break;
                case "--runsc-platform":
                    runtime.RunscPlatform = value;
                    break;
                case "--runc-path":
                    runtime.RuncPath = value;
                    break;
                case "--runsc-path":
                    runtime.RunscPath = value;
                    break;
                case "--data-dir":
                    dataDir = Path.GetFullPath(value);
                    break;
                case "--listen":
                    listen = value;
                    break;
                case "--token-file":
                    tokenFile = Path.GetFullPath(value);
                    break;
                case "--capacity-cpus":
                    admission.CapacityCpus = double.TryParse(value, System.Globalization.NumberStyles.AllowDecimalPoint, System.Globalization.CultureInfo.InvariantCulture, out var cpus) && cpus > 0
                        ? cpus
                        : throw new CorralException($"invalid --capacity-cpus '{value}': expected a positive number of cores");
                    break;
                case "--capacity-memory":
                    admission.CapacityMemoryBytes = ByteSize.Parse(value);
                    break;
                case "--memory-reserve":
                    admission.MemoryReserveBytes = value == "0" ? 0 : ByteSize.Parse(value);
                    break;
                default:
                    throw new CorralException($"unknown option '{arg}'\n{Usage}");
            }
        }

        var tcp = TcpEndpointOptions.From(listen, tokenFile);
        if (!File.Exists(daemon.ShimPath))
        {
            throw new CorralException($"the sandbox shim '{daemon.ShimPath}' does not exist: build the CLI (./corral prepare) or pass --shim PATH");
        }

        daemon.Runtime = runtime;
        daemon.ShimLogLevel = logLevel;
        var app = Build(daemon, runtime, logLevel, new DaemonFeatures(tcp, admission, dataDir));
        PrepareSocket(daemon.SocketPath);
        var lifetime = app.Services.GetRequiredService<IHostApplicationLifetime>();
        lifetime.ApplicationStarted.Register(() =>
        {
            // Only root (the daemon's user) may drive containers through the socket.
            File.SetUnixFileMode(daemon.SocketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Corral.Daemon");
            DaemonLog.Listening(log, daemon.SocketPath, daemon.StateDir, Environment.ProcessId);
            if (tcp is not null)
            {
                DaemonLog.ListeningTcp(log, tcp.Endpoint.ToString());
            }

            var capacity = app.Services.GetRequiredService<SandboxAdmission>().Capacity;
            DaemonLog.Capacity(log, capacity.Cpus, capacity.MemoryBytes);
        });
        try
        {
            try
            {
                await app.StartAsync().ConfigureAwait(false);
            }
            catch (IOException ex)
            {
                // Kestrel could not bind (a TCP port in use, a socket directory it cannot write): one line, not a trace.
                await app.DisposeAsync().ConfigureAwait(false);
                throw new CorralException($"cannot listen: {ex.Message}");
            }

            await app.WaitForShutdownAsync().ConfigureAwait(false);
            await app.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            TryDelete(daemon.SocketPath);
        }

        return 0;
    }

    public static WebApplication Build(DaemonOptions daemon, RuntimeOptions runtime, LogLevel logLevel, DaemonFeatures? features = null)
    {
        features ??= new DaemonFeatures(null, new AdmissionOptions(), "/var/lib/corral");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(logLevel);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
            o.UseUtcTimestamp = true;
        });
        builder.Host.ConfigureHostOptions(o => o.ShutdownTimeout = daemon.ShutdownGrace + TimeSpan.FromSeconds(30));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.ListenUnixSocket(daemon.SocketPath, listen => listen.Protocols = HttpProtocols.Http2);
            if (features.Tcp is { } tcp)
            {
                // h2c (HTTP/2 with prior knowledge): what gRPC clients speak without TLS.
                k.Listen(tcp.Endpoint, listen => listen.Protocols = HttpProtocols.Http2);
            }
        });

        builder.Services.AddSingleton(Options.Create(daemon));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(sp => new EventHub(daemon.EventHistory, sp.GetRequiredService<TimeProvider>()));
        builder.Services.AddSingleton(sp =>
        {
            var loggers = sp.GetRequiredService<ILoggerFactory>();
            var time = sp.GetRequiredService<TimeProvider>();
            return new ContainerSupervisor(
                new SupervisorOptions { StateDir = daemon.SupervisorStateDir, CancelGrace = daemon.ShutdownGrace },
                runtime,
                CgroupDetector.DetectHost(loggers),
                new OomWatcherFactory(RealCgroupFileSystem.Instance, Options.Create(new OomOptions()), time, loggers),
                time,
                loggers.CreateLogger<ContainerSupervisor>());
        });
        builder.Services.AddSingleton(sp => new ContainerExecutor(
            new SupervisorOptions { StateDir = daemon.SupervisorStateDir },
            runtime,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger<ContainerExecutor>()));
        builder.Services.AddSingleton<SandboxExecs>();
        builder.Services.AddSingleton<SandboxRegistry>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<SandboxRegistry>());
        var capacity = HostCapacity.Detect(features.Admission);
        builder.Services.AddSingleton(sp => new SandboxAdmission(sp.GetRequiredService<SandboxRegistry>(), capacity));
        builder.Services.AddSingleton(sp => new SandboxImages(
            new ImageStore(features.DataDir, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger<ImageStore>()),
            new DefaultImage(features.DataDir)));
        builder.Services.AddSingleton<SandboxStatsReader>();
        builder.Services.AddGrpc();
        builder.Services.AddGrpcHealthChecks().AddCheck<SandboxRegistryHealthCheck>("sandboxes");

        // Answer health checks from a fresh check, not from the periodic publisher's first (late) run.
        builder.Services.Configure<Grpc.AspNetCore.HealthChecks.GrpcHealthChecksOptions>(o => o.UseHealthChecksCache = false);

        var app = builder.Build();
        if (features.Tcp is { } tcpEndpoint)
        {
            app.UseMiddleware<BearerTokenMiddleware>(tcpEndpoint);
        }

        app.MapGrpcService<SandboxesService>();
        app.MapGrpcHealthChecksService();
        return app;
    }

    private static void PrepareSocket(string socketPath)
    {
        var dir = Path.GetDirectoryName(socketPath)!;
        if (!Directory.Exists(dir))
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        if (File.Exists(socketPath))
        {
            // A socket nobody answers on is what an earlier daemon left; a live one is refused.
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
            try
            {
                probe.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(socketPath));
                throw new CorralException($"a daemon already listens on {socketPath}");
            }
            catch (System.Net.Sockets.SocketException)
            {
                File.Delete(socketPath);
            }
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>The daemon's optional parts: the TCP endpoint, admission's capacity, the image store's data dir.</summary>
public sealed record DaemonFeatures(TcpEndpointOptions? Tcp, AdmissionOptions Admission, string DataDir);
