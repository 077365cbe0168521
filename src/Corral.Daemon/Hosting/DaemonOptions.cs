using Corral.Runtimes;
using Microsoft.Extensions.Logging;

namespace Corral.Daemon.Hosting;

public sealed class DaemonOptions
{
    public string SocketPath { get; set; } = "/run/corral/corral.sock";

    /// <summary>Per-sandbox records, exit records and logs.</summary>
    public string StateDir { get; set; } = "/run/corral/daemon";

    /// <summary>Where the supervisor keeps bundles and live-container claims (shared with the CLI's `corral ps`).</summary>
    public string SupervisorStateDir { get; set; } = "/run/corral";

    /// <summary>Each sandbox's stdout and stderr together; past it, output is dropped and a marker written.</summary>
    public long LogCapBytes { get; set; } = 8L << 20;

    /// <summary>At shutdown running sandboxes get SIGTERM, then SIGKILL after this.</summary>
    public TimeSpan ShutdownGrace { get; set; } = TimeSpan.FromSeconds(3);

    public int EventHistory { get; set; } = 10_000;

    /// <summary>The runtimes' binaries, roots and gVisor platform, handed to every sandbox's shim.</summary>
    public RuntimeOptions Runtime { get; set; } = new();

    /// <summary>
    /// The binary started as each sandbox's shim (`SHIM shim DIR`): the Native AOT Corral CLI. By default
    /// $CORRAL_SHIM, else the CLI that `./corral` builds next to the daemon (.build/cli/Corral.Cli).
    /// </summary>
    public string ShimPath { get; set; } = DefaultShimPath();

    /// <summary>Shims kept started and waiting, so that a Create does not wait for one to start (0: none).</summary>
    public int ShimPool { get; set; } = 2;

    /// <summary>The network of a sandbox whose Create leaves it unset (`corral serve --network`).</summary>
    public Corral.Networking.NetworkMode DefaultNetwork { get; set; } = Corral.Networking.NetworkMode.None;

    /// <summary>The disk cap of a sandbox whose Create leaves it unset (`corral serve --disk`); null: none.</summary>
    public long? DefaultDiskBytes { get; set; }

    /// <summary>
    /// Host directories the API may bind-mount from (`corral serve --allow-mounts-under`, repeatable);
    /// empty: no bind mounts through the API (an API caller never names an arbitrary host path).
    /// </summary>
    public List<string> AllowMountsUnder { get; } = [];

    public LogLevel ShimLogLevel { get; set; } = LogLevel.Information;

    /// <summary>A sandbox whose runtime has not started its workload by then fails (a gVisor boot on a loaded or emulated host can be slow).</summary>
    public TimeSpan StartTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>The shims log as the daemon does: key=value lines or JSON lines.</summary>
    public Corral.Logging.LogFormat ShimLogFormat { get; set; } = Corral.Logging.LogFormat.Text;

    public static string DefaultShimPath() =>
        Environment.GetEnvironmentVariable("CORRAL_SHIM") is { Length: > 0 } fromEnvironment
            ? fromEnvironment
            : Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "cli", "Corral.Cli"));
}
