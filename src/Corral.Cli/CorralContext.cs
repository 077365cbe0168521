using Corral.Cgroups;
using Corral.Images;
using Corral.Logging;
using Corral.Oom;
using Corral.Runtimes;
using Corral.Supervision;
using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace Corral.Cli;

/// <summary>Everything a CLI command needs, built from global options and the environment.</summary>
internal sealed record CorralContext(string StateDir, string DataDir, LogLevel LogLevel, RuntimeOptions RuntimeOptions)
{
    private ILoggerFactory? _loggers;

    /// <summary>key=value lines on stderr (the default), or JSON lines (a shim of a daemon started with --log-format json).</summary>
    public Corral.Logging.LogFormat LogFormat { get; init; }

    private static readonly List<ILoggerFactory> Created = [];

    public ILoggerFactory Loggers => _loggers ??= Track(LogFormat == Corral.Logging.LogFormat.Json
        ? LoggerFactory.Create(builder => builder.SetMinimumLevel(LogLevel).AddJsonLines(Console.Error))
        : LoggerFactory.Create(builder => builder
            .SetMinimumLevel(LogLevel)
            .AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
                o.UseUtcTimestamp = true;
            })
            .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)));

    /// <summary>
    /// Writes out every log line still queued (the console logger writes on a thread of its own), so that
    /// the one-line error printed next is the last line on stderr, after the warnings that led to it.
    /// Loggers used later write directly.
    /// </summary>
    public static void FlushLogs()
    {
        lock (Created)
        {
            foreach (var factory in Created)
            {
                factory.Dispose();
            }

            Created.Clear();
        }
    }

    private static ILoggerFactory Track(ILoggerFactory factory)
    {
        lock (Created)
        {
            Created.Add(factory);
        }

        return factory;
    }

    /// <summary>Unpack limits given on the command line (--max-layer-size, --max-image-size); null: defaults and environment.</summary>
    public UnpackLimits? Limits { get; set; }

    public ImageStore Images()
    {
        var store = new ImageStore(DataDir, TimeProvider.System, Loggers.CreateLogger<ImageStore>());
        if (Limits is { } limits)
        {
            store.Limits = limits;
        }

        return store;
    }

    public ImagePuller Puller(IReadOnlyCollection<string> insecureRegistries, string? authFile)
    {
        var envInsecure = Environment.GetEnvironmentVariable("CORRAL_INSECURE_REGISTRIES")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];
        var http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = true, ConnectTimeout = TimeSpan.FromSeconds(15) }) { Timeout = Timeout.InfiniteTimeSpan };
        var options = new RegistryOptions { InsecureRegistries = [.. insecureRegistries, .. envInsecure], AuthFile = authFile };
        return new ImagePuller(Images(), new RegistryClient(http, options, Loggers.CreateLogger<RegistryClient>()), Loggers.CreateLogger<ImagePuller>());
    }

    public SupervisorOptions SupervisorOptions() => new() { StateDir = StateDir, ExecReaper = SelfCommand() };

    /// <summary>How to run this CLI again: its native binary, or the host running its assembly.</summary>
    public static IReadOnlyList<string> SelfCommand()
    {
        var path = Environment.ProcessPath ?? throw new InvalidOperationException("the path of this process is unknown");
        return Path.GetFileNameWithoutExtension(path) == "dotnet" ? [path, Path.Combine(AppContext.BaseDirectory, "Corral.Cli.dll")] : [path];
    }

    public ContainerSupervisor CreateSupervisor(SupervisorOptions? options = null)
    {
        options ??= SupervisorOptions();
        var driver = CgroupDetector.DetectHost(Loggers, StateLayout.CgroupParent(options.StateDir));
        return new ContainerSupervisor(
            options,
            RuntimeOptions,
            driver,
            new OomWatcherFactory(RealCgroupFileSystem.Instance, Microsoft.Extensions.Options.Options.Create(new OomOptions()), TimeProvider.System, Loggers),
            TimeProvider.System,
            Loggers.CreateLogger<ContainerSupervisor>());
    }

    /// <summary>The default image, built with a progress display the first time.</summary>
    public async Task<string> EnsureDefaultImageAsync(CancellationToken cancellationToken)
    {
        var image = new DefaultImage(DataDir);
        if (image.IsReady)
        {
            return image.RootfsPath;
        }

        if (!Console.IsErrorRedirected)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            return await console.Status().StartAsync("Building the default image (Debian bookworm with python3)…", async status =>
            {
                var progress = new Progress<string>(line => status.Status($"Building the default image: {Markup.Escape(Trim(line))}"));
                return await image.EnsureAsync(progress, cancellationToken).ConfigureAwait(false);
            }).ConfigureAwait(false);
        }

        Console.Error.WriteLine("corral: building the default image (Debian bookworm with python3), once");
        var lines = 0;
        var plain = new Progress<string>(line =>
        {
            if (++lines % 25 == 0 || line.Contains("Base system installed", StringComparison.Ordinal))
            {
                Console.Error.WriteLine($"corral: image: {Trim(line)}");
            }
        });
        return await image.EnsureAsync(plain, cancellationToken).ConfigureAwait(false);
    }

    private static string Trim(string line) => line.Length > 70 ? line[..70] : line;
}
