using Corral.Cgroups;
using Corral.Common;
using Corral.Daemon.Admission;
using Corral.Daemon.Execs;
using Corral.Daemon.Api;
using Corral.Daemon.Images;
using Corral.Daemon.Logging;
using Corral.Daemon.Metrics;
using Corral.Daemon.Sandboxes;
using Corral.Daemon.Stats;
using Corral.Images;
using Corral.Logging;
using Corral.Oom;
using Corral.Runtimes;
using Corral.Supervision;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
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
        "usage: corral serve [--socket PATH] [--state-dir DIR] [--data-dir DIR] [--shim PATH] [--shim-pool N] [--network none|bridge] [--disk SIZE] [--allow-mounts-under DIR]... [--log-level LEVEL] [--runsc-platform P] [--runc-path P] [--runsc-path P] [--crun-path P]\n"
        + "                    [--listen HOST:PORT --token-file F] [--capacity-cpus N] [--capacity-memory SIZE] [--memory-reserve SIZE]\n"
        + "                    [--metrics-listen HOST:PORT [--metrics-allow-remote]] [--log-format text|json] [--start-timeout DURATION]";

    /// <summary>A name is looked up on PATH; a path is made absolute (the shims run in their sandboxes' directories).</summary>
    private static string BinaryPath(string value) => value.Contains('/', StringComparison.Ordinal) ? Path.GetFullPath(value) : value;

    public static async Task<int> RunAsync(string[] args)
    {
        var daemon = new DaemonOptions();
        var runtime = new RuntimeOptions();
        var admission = new AdmissionOptions();
        var logLevel = LogLevel.Information;
        string? listen = null;
        string? tokenFile = null;
        string? metricsListen = null;
        var metricsAllowRemote = false;
        var logFormat = LogFormat.Text;
        var dataDir = Environment.GetEnvironmentVariable("CORRAL_DATA_DIR") ?? "/var/lib/corral";
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (arg is "-h" or "--help")
            {
                Console.WriteLine(Usage);
                return 0;
            }

            if (arg == "--metrics-allow-remote")
            {
                metricsAllowRemote = true;
                continue;
            }

            if (i + 1 >= args.Length)
            {
                throw new CorralException($"{arg}: a value is needed\n{Usage}");
            }

            var value = args[++i];
            switch (arg)
            {
                case "--socket":
                    daemon.SocketPath = Path.GetFullPath(InputRules.DirectoryOption("--socket", value));
                    break;
                case "--state-dir":
                    daemon.StateDir = Path.GetFullPath(InputRules.DirectoryOption("--state-dir", value));
                    break;
                case "--shim":
                    daemon.ShimPath = Path.GetFullPath(InputRules.DirectoryOption("--shim", value));
                    break;
                case "--shim-pool":
                    daemon.ShimPool = int.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var pool) && pool <= 64
                        ? pool
                        : throw new CorralException($"invalid --shim-pool '{value}': expected a number of shims from 0 to 64");
                    break;
                case "--network":
                    daemon.DefaultNetwork = Corral.Networking.NetworkInput.ParseMode(value);
                    break;
                case "--disk":
                    daemon.DefaultDiskBytes = Corral.Rootfs.WritableRoot.ValidateDisk(ByteSize.Parse("--disk", value));
                    break;
                case "--allow-mounts-under":
                    daemon.AllowMountsUnder.Add(Corral.Rootfs.MountInput.AllowedRoot(value));
                    break;
                case "--log-level":
                    logLevel = Enum.TryParse<LogLevel>(value, ignoreCase: true, out var level) ? level : throw new CorralException($"invalid log level '{value}'");
                    break;
                case "--runsc-platform":
                    runtime.RunscPlatform = value;
                    break;
                case "--runc-path":
                    runtime.RuncPath = BinaryPath(value);
                    break;
                case "--runsc-path":
                    runtime.RunscPath = BinaryPath(value);
                    break;
                case "--crun-path":
                    runtime.CrunPath = BinaryPath(value);
                    break;
                case "--data-dir":
                    dataDir = Path.GetFullPath(InputRules.DirectoryOption("--data-dir", value));
                    break;
                case "--listen":
                    listen = value;
                    break;
                case "--token-file":
                    tokenFile = Path.GetFullPath(value);
                    break;
                case "--metrics-listen":
                    metricsListen = value;
                    break;
                case "--log-format":
                    logFormat = JsonLogLine.ParseFormat(value);
                    break;
                case "--capacity-cpus":
                    admission.CapacityCpus = double.TryParse(value, System.Globalization.NumberStyles.AllowDecimalPoint, System.Globalization.CultureInfo.InvariantCulture, out var cpus) && cpus > 0
                        ? cpus
                        : throw new CorralException($"invalid --capacity-cpus '{value}': expected a positive number of cores");
                    break;
                case "--capacity-memory":
                    admission.CapacityMemoryBytes = ByteSize.Parse(value);
                    break;
                case "--start-timeout":
                    daemon.StartTimeout = Corral.Common.Duration.Parse(value);
                    break;
                case "--memory-reserve":
                    admission.MemoryReserveBytes = value == "0" ? 0 : ByteSize.Parse(value);
                    break;
                default:
                    throw new CorralException($"unknown option '{arg}'\n{Usage}");
            }
        }

        var tcp = TcpEndpointOptions.From(listen, tokenFile);
        var metricsEndpoint = MetricsEndpoint.From(metricsListen, metricsAllowRemote);
        if (!File.Exists(daemon.ShimPath))
        {
            throw CorralException.Host($"the sandbox shim '{daemon.ShimPath}' does not exist: build the CLI (./corral prepare) or pass --shim PATH");
        }

        // One daemon per state dir: a second one would adopt the first one's sandboxes and stop them on its SIGTERM.
        using var stateDirLock = LockStateDir(daemon.StateDir);
        daemon.Runtime = runtime;
        daemon.ShimLogLevel = logLevel;
        daemon.ShimLogFormat = logFormat;
        var app = Build(daemon, runtime, logLevel, new DaemonFeatures(tcp, admission, dataDir) { Metrics = metricsEndpoint, LogFormat = logFormat });
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

            if (metricsEndpoint is not null)
            {
                DaemonLog.ListeningMetrics(log, $"http://{metricsEndpoint}/metrics");
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
                throw CorralException.Host($"cannot listen: {ex.Message}");
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
        if (features.LogFormat == LogFormat.Json)
        {
            builder.Logging.AddJsonLines(Console.Out);
        }
        else
        {
            builder.Logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
                o.UseUtcTimestamp = true;
            });
        }

        builder.Host.ConfigureHostOptions(o => o.ShutdownTimeout = daemon.ShutdownGrace + TimeSpan.FromSeconds(30));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.ListenUnixSocket(daemon.SocketPath, listen => listen.Protocols = HttpProtocols.Http2);
            if (features.Tcp is { } tcp)
            {
                // h2c (HTTP/2 with prior knowledge): what gRPC clients speak without TLS.
                k.Listen(tcp.Endpoint, listen => listen.Protocols = HttpProtocols.Http2);
            }

            if (features.Metrics is { } metricsAt)
            {
                // Plain HTTP/1.1 for Prometheus' scraper; only /metrics is answered there (no gRPC, no token).
                k.Listen(metricsAt, listen => listen.Protocols = HttpProtocols.Http1);
            }
        });

        builder.Services.AddSingleton(Options.Create(daemon));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(sp => new DaemonMetrics(sp.GetRequiredService<TimeProvider>()));
        builder.Services.AddSingleton(sp => new EventHub(daemon.EventHistory, sp.GetRequiredService<TimeProvider>()));
        builder.Services.AddSingleton(sp =>
        {
            var loggers = sp.GetRequiredService<ILoggerFactory>();
            var time = sp.GetRequiredService<TimeProvider>();
            return new ContainerSupervisor(
                new SupervisorOptions { StateDir = daemon.SupervisorStateDir, CancelGrace = daemon.ShutdownGrace },
                runtime,
                CgroupDetector.DetectHost(loggers, StateLayout.CgroupParent(daemon.SupervisorStateDir)),
                new OomWatcherFactory(RealCgroupFileSystem.Instance, Options.Create(new OomOptions()), time, loggers),
                time,
                loggers.CreateLogger<ContainerSupervisor>());
        });
        builder.Services.AddSingleton(sp => new ContainerExecutor(
            new SupervisorOptions { StateDir = daemon.SupervisorStateDir, ExecReaper = [daemon.ShimPath] },
            runtime,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger<ContainerExecutor>()));
        builder.Services.AddSingleton<SandboxExecs>();
        builder.Services.AddSingleton<Corral.Daemon.Files.SandboxFiles>();
        builder.Services.AddSingleton<SandboxRegistry>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<SandboxRegistry>());
        var capacity = HostCapacity.Detect(features.Admission);
        builder.Services.AddSingleton(sp => new SandboxAdmission(sp.GetRequiredService<SandboxRegistry>(), capacity, sp.GetRequiredService<DaemonMetrics>()));
        builder.Services.AddSingleton(sp => new SandboxImages(
            new ImageStore(features.DataDir, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger<ImageStore>()),
            new DefaultImage(features.DataDir),
            sp.GetRequiredService<DaemonMetrics>()));
        builder.Services.AddSingleton<SandboxStatsReader>();
        builder.Services.AddGrpc();
        builder.Services.AddGrpcHealthChecks().AddCheck<SandboxRegistryHealthCheck>("sandboxes");

        // Answer health checks from a fresh check, not from the periodic publisher's first (late) run.
        builder.Services.Configure<Grpc.AspNetCore.HealthChecks.GrpcHealthChecksOptions>(o => o.UseHealthChecksCache = false);

        var app = builder.Build();
        app.Services.GetRequiredService<DaemonMetrics>().Attach(app.Services.GetRequiredService<SandboxRegistry>());
        if (features.Metrics is { } metricsEndpoint)
        {
            // Before the token check: the metrics port serves only /metrics, and without a token.
            var metrics = app.Services.GetRequiredService<DaemonMetrics>();
            app.MapWhen(c => MetricsEndpoint.IsMetricsConnection(c, metricsEndpoint), branch => branch.Run(c => MetricsEndpoint.AnswerAsync(c, metrics)));
        }

        if (features.Tcp is { } tcpEndpoint)
        {
            app.UseMiddleware<BearerTokenMiddleware>(tcpEndpoint);
        }

        app.MapGrpcService<SandboxesService>();
        app.MapGrpcHealthChecksService();
        return app;
    }

    /// <summary>Takes <c>&lt;state-dir&gt;/daemon.lock</c> for the daemon's life (an flock the kernel drops when it dies).</summary>
    public static OwnerLock LockStateDir(string stateDir)
    {
        Directory.CreateDirectory(stateDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = Path.Combine(stateDir, "daemon.lock");
        return OwnerLock.TryAcquire(path, busyRetries: 0)
            ?? throw new CorralException(ErrorKind.Unavailable, $"another corral daemon{(OwnerLock.OwnerPid(path) is { } pid ? $" (pid {pid})" : string.Empty)} serves {stateDir}");
    }

    private static void PrepareSocket(string socketPath)
    {
        var dir = Path.GetDirectoryName(socketPath)!;
        if (!Directory.Exists(dir))
        {
            PrivateFiles.CreateDirectory(dir);
        }

        if (PrivateFiles.Exists(socketPath))
        {
            // Only a socket is ours to replace: a regular file (or anything else) there is someone's data.
            if (!PrivateFiles.IsSocket(socketPath))
            {
                throw CorralException.Invalid($"invalid --socket {socketPath}: it exists and is not a socket; refusing to replace it");
            }

            // A socket nobody answers on is what an earlier daemon left; a live one is refused.
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
            try
            {
                probe.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(socketPath));
                throw new CorralException(ErrorKind.Unavailable, $"a daemon already listens on {socketPath}");
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
            if (PrivateFiles.IsSocket(path))
            {
                File.Delete(path);
            }
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>The daemon's optional parts: the TCP endpoint, admission's capacity, the image store's data dir.</summary>
public sealed record DaemonFeatures(TcpEndpointOptions? Tcp, AdmissionOptions Admission, string DataDir)
{
    /// <summary>`--metrics-listen`: where /metrics is served (plain HTTP/1.1), or null.</summary>
    public System.Net.IPEndPoint? Metrics { get; init; }

    /// <summary>`--log-format`: key=value lines (text) or JSON lines.</summary>
    public LogFormat LogFormat { get; init; }
}
