using Corral.Daemon.Sandboxes;
using Corral.Supervision;
using Prometheus;

namespace Corral.Daemon.Metrics;

/// <summary>
/// Every series the daemon exports at `/metrics` (Prometheus text format), in one registry of its own.
/// Fed from the few places that already see the events: the registry (created, started, OOM, exited,
/// failed), admission (refusals), execs (start latency), images (layer preparation); the gauges
/// (sandboxes by state, shims alive) are computed from the registry at each scrape. No sandbox or
/// exec id is ever a label: the label sets stay small whatever the load.
/// </summary>
public sealed class DaemonMetrics
{
    /// <summary>Latency buckets from 1 ms to 60 s: detection latencies sit at milliseconds, starts at tenths.</summary>
    private static readonly double[] LatencyBuckets =
        [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    private static readonly string[] States = ["created", "running", "exited", "failed"];
    private static readonly string[] Runtimes = ["gvisor", "runc", "crun"];

    private readonly Gauge _sandboxes;
    private readonly Gauge _shimsAlive;
    private readonly Counter _created;
    private readonly Counter _ended;
    private readonly Counter _oomKills;
    private readonly Histogram _createToRunning;
    private readonly Histogram _exitToEvent;
    private readonly Histogram _oomToEvent;
    private readonly Histogram _execStart;
    private readonly Counter _admissionRefusals;
    private readonly Histogram _imageLayers;
    private SandboxRegistry? _registry;

    public DaemonMetrics(TimeProvider time)
    {
        Time = time;
        Registry = Prometheus.Metrics.NewCustomRegistry();

        // The runtime's process metrics: process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_handles, process_start_time_seconds, dotnet_gc_*, dotnet_total_memory_bytes ...
        DotNetStats.Register(Registry);
        var factory = Prometheus.Metrics.WithCustomRegistry(Registry);
        _sandboxes = factory.CreateGauge("corral_sandboxes", "Sandboxes the daemon holds, by state and runtime.", "state", "runtime");
        _shimsAlive = factory.CreateGauge("corral_shims_alive", "Shim processes alive (one per sandbox that has not ended).");
        _created = factory.CreateCounter("corral_sandboxes_created_total", "Sandboxes created, by runtime.", "runtime");
        _ended = factory.CreateCounter(
            "corral_sandboxes_ended_total",
            "Sandboxes ended, by runtime and outcome: exit_zero, exit_nonzero, signal, oom_kernel, oom_livelock, timeout, failed.",
            "runtime",
            "outcome");
        _oomKills = factory.CreateCounter("corral_oom_kills_total", "OOM kills the kernel counted in sandboxes' cgroups (the exit records' oomKills), by runtime.", "runtime");
        // The latency histograms by runtime share one bucket layout.
        Histogram ByRuntimeLatency(string name, string help) =>
            factory.CreateHistogram(name, help, ["runtime"], new HistogramConfiguration { Buckets = LatencyBuckets });

        _createToRunning = ByRuntimeLatency("corral_sandbox_start_seconds", "Create accepted to PID 1 running, by runtime.");
        _exitToEvent = ByRuntimeLatency("corral_exit_event_latency_seconds", "PID 1's death (the runtime process's exit, as the shim saw it) to the daemon's exited event, by runtime.");
        _oomToEvent = ByRuntimeLatency("corral_oom_event_latency_seconds", "The kernel's OOM kill (as the shim's cgroup watcher saw it) to the daemon's oom event, by runtime.");
        _execStart = ByRuntimeLatency("corral_exec_start_seconds", "Exec request to the process started in the sandbox (runc exec / runsc exec), by runtime.");
        _admissionRefusals = factory.CreateCounter(
            "corral_admission_refusals_total",
            "Creates refused because their cpus or memory did not fit (RESOURCE_EXHAUSTED).");
        _imageLayers = factory.CreateHistogram(
            "corral_image_layers_prepare_seconds",
            "Resolving a Create's image in the store and making sure its layers are unpacked.",
            new HistogramConfiguration { Buckets = LatencyBuckets });
        Registry.AddBeforeCollectCallback(UpdateGauges);
    }

    public CollectorRegistry Registry { get; }

    public TimeProvider Time { get; }

    /// <summary>The sandboxes the gauges are read from at each scrape.</summary>
    public void Attach(SandboxRegistry registry) => _registry = registry;

    public void SandboxCreated(string runtime) => _created.WithLabels(runtime).Inc();

    public void SandboxStarted(SandboxRecord record) =>
        _createToRunning.WithLabels(record.Runtime).Observe(Seconds(Time.GetUtcNow() - record.CreatedAt));

    public void OomSeen(string runtime, DateTimeOffset killSeenAt) =>
        _oomToEvent.WithLabels(runtime).Observe(Seconds(Time.GetUtcNow() - killSeenAt));

    public void SandboxExited(ExitRecord exit)
    {
        ArgumentNullException.ThrowIfNull(exit);
        _ended.WithLabels(exit.Runtime, Outcome(exit)).Inc();
        if (exit.OomKills > 0)
        {
            _oomKills.WithLabels(exit.Runtime).Inc(exit.OomKills);
        }

        _exitToEvent.WithLabels(exit.Runtime).Observe(Seconds(Time.GetUtcNow() - exit.ExitedAt));
    }

    public void SandboxFailed(string runtime) => _ended.WithLabels(runtime, "failed").Inc();

    public void ExecStarted(string runtime, TimeSpan elapsed) => _execStart.WithLabels(runtime).Observe(Seconds(elapsed));

    public void AdmissionRefused() => _admissionRefusals.Inc();

    public void ImageLayersPrepared(TimeSpan elapsed) => _imageLayers.Observe(Seconds(elapsed));

    /// <summary>The outcome label of an exit record: OOM first (it is also a SIGKILL), then timeout, signal, code.</summary>
    public static string Outcome(ExitRecord exit)
    {
        ArgumentNullException.ThrowIfNull(exit);
        return exit switch
        {
            { OomKilled: true, OomReason: "livelock" } => "oom_livelock",
            { OomKilled: true } => "oom_kernel",
            { TimedOut: true } => "timeout",
            { Signal: not null } => "signal",
            { ExitCode: 0 } => "exit_zero",
            _ => "exit_nonzero",
        };
    }

    /// <summary>The Prometheus text exposition of every series.</summary>
    public async Task WriteAsync(Stream output, CancellationToken cancellationToken) =>
        await Registry.CollectAndExportAsTextAsync(output, cancellationToken).ConfigureAwait(false);

    private static double Seconds(TimeSpan elapsed) => Math.Max(0, elapsed.TotalSeconds);

    private void UpdateGauges()
    {
        var counts = new Dictionary<(string State, string Runtime), int>();
        foreach (var state in States)
        {
            foreach (var runtime in Runtimes)
            {
                counts[(state, runtime)] = 0;
            }
        }

        var shims = 0;
        foreach (var sandbox in _registry?.List() ?? [])
        {
            var record = sandbox.Record;
            var key = (record.Status.ToString().ToLowerInvariant(), record.Runtime);
            counts[key] = counts.GetValueOrDefault(key) + 1;
            if (!sandbox.HasEnded && sandbox.Files.IsShimAlive())
            {
                shims++;
            }
        }

        foreach (var ((state, runtime), count) in counts)
        {
            _sandboxes.WithLabels(state, runtime).Set(count);
        }

        _shimsAlive.Set(shims);
    }
}
