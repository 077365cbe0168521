using Corral.Cgroups;
using Corral.Images;
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

    public ILoggerFactory Loggers => _loggers ??= LoggerFactory.Create(builder => builder
        .SetMinimumLevel(LogLevel)
        .AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
            o.UseUtcTimestamp = true;
        })
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));

    public ImageStore Images() => new(DataDir, TimeProvider.System, Loggers.CreateLogger<ImageStore>());

    public ImagePuller Puller(IReadOnlyCollection<string> insecureRegistries, string? authFile)
    {
        var envInsecure = Environment.GetEnvironmentVariable("CORRAL_INSECURE_REGISTRIES")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];
        var http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = true, ConnectTimeout = TimeSpan.FromSeconds(15) }) { Timeout = Timeout.InfiniteTimeSpan };
        var options = new RegistryOptions { InsecureRegistries = [.. insecureRegistries, .. envInsecure], AuthFile = authFile };
        return new ImagePuller(Images(), new RegistryClient(http, options, Loggers.CreateLogger<RegistryClient>()), Loggers.CreateLogger<ImagePuller>());
    }

    public SupervisorOptions SupervisorOptions() => new() { StateDir = StateDir };

    public ContainerSupervisor CreateSupervisor(SupervisorOptions? options = null)
    {
        options ??= SupervisorOptions();
        var driver = CgroupDetector.DetectHost(Loggers);
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
