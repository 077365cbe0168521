using System.Diagnostics;
using System.Globalization;
using System.Text;
using Corral.Cgroups;
using Corral.Oom;
using Microsoft.Extensions.Options;

// Kernel OOM kill -> OOM event latency, for Corral's event-driven cgroup watcher and for a 500 ms
// poller of the same counter, watching the same cgroup during the same kills (one run).
// The kill time is the kernel's own: the timestamp of its "Killed process PID" record in /dev/kmsg,
// mapped to CLOCK_MONOTONIC with a marker written to /dev/kmsg just before each kill.
var kills = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 60;
var limit = 64L << 20;
var driver = CgroupDetector.DetectHost() ?? throw new InvalidOperationException("no cgroup memory controller on this host");
var id = $"oom-latency-{Environment.ProcessId}";
var cgroup = driver.Create(id, new ResourceLimits(MemoryBytes: limit));
var kmsg = new KernelLog();
var eventTimes = new List<long>();
var pollTimes = new List<long>();
var watcher = new OomWatcherFactory(RealCgroupFileSystem.Instance, Options.Create(new OomOptions()), TimeProvider.System)
    .Create(cgroup, limit, () => null)!;
watcher.Start(e =>
{
    if (e.Kind == OomEventKind.Kill)
    {
        lock (eventTimes)
        {
            eventTimes.Add(Stopwatch.GetTimestamp());
        }
    }
});

using var stopPolling = new CancellationTokenSource();
var poller = Task.Run(async () =>
{
    // The seed's way, applied to the right counter: read it every 500 ms.
    var seen = cgroup.ReadStats().OomKills;
    using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(500));
    while (await timer.WaitForNextTickAsync(stopPolling.Token).ConfigureAwait(false))
    {
        var now = cgroup.ReadStats().OomKills;
        lock (pollTimes)
        {
            for (; seen < now; seen++)
            {
                pollTimes.Add(Stopwatch.GetTimestamp());
            }
        }
    }
});

var eventLatencies = new List<double>();
var pollLatencies = new List<double>();
var random = new Random(42);
try
{
    for (var i = 0; i < kills; i++)
    {
        var offsetNs = kmsg.Calibrate(i);
        var pid = RunVictim(cgroup);
        var killUsec = kmsg.WaitForKill(pid, TimeSpan.FromSeconds(10));
        var killTs = (killUsec * 1000) + offsetNs;
        eventLatencies.Add((WaitFor(eventTimes, i + 1) - killTs) / 1e6);
        pollLatencies.Add((WaitFor(pollTimes, i + 1) - killTs) / 1e6);

        // A random phase against the poller, so its latency is not biased by our own rhythm.
        Thread.Sleep(random.Next(0, 500));
    }
}
finally
{
    stopPolling.Cancel();
    try
    {
        await poller.ConfigureAwait(false);
    }
    catch (OperationCanceledException)
    {
    }

    watcher.Stop();
    watcher.Dispose();
    cgroup.Remove();
}

Console.WriteLine($"# OOM detection latency: kernel kill to event, {kills} kills, 64 MiB cgroup v{(driver.Version == CgroupVersion.V1 ? 1 : 2)} limit");
Console.WriteLine($"machine: {Environment.ProcessorCount} cores, kernel {File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}, {DateTime.UtcNow:yyyy-MM-dd HH:mm}Z, command: dotnet bench/OomLatency/bin/Release/net10.0/OomLatency.dll {kills}");
Console.WriteLine();
Console.WriteLine("| watcher | p50 ms | p90 ms | p99 ms | max ms | kills seen |");
Console.WriteLine("|---|---|---|---|---|---|");
Row("Corral cgroup watcher (event driven)", eventLatencies);
Row("500 ms poller of the same counter", pollLatencies);

static void Row(string name, List<double> values)
{
    var sorted = values.Order().ToList();
    double P(double q) => sorted[(int)Math.Round(q * (sorted.Count - 1))];
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {P(0.5):0.0} | {P(0.9):0.0} | {P(0.99):0.0} | {sorted[^1]:0.0} | {sorted.Count} |"));
}

static long WaitFor(List<long> times, int count)
{
    var deadline = Stopwatch.GetTimestamp() + (3 * Stopwatch.Frequency);
    while (Stopwatch.GetTimestamp() < deadline)
    {
        lock (times)
        {
            if (times.Count >= count)
            {
                return times[count - 1];
            }
        }

        Thread.Sleep(1);
    }

    throw new TimeoutException($"kill {count} was not reported within 3 s");
}

static int RunVictim(IContainerCgroup cgroup)
{
    var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
    info.ArgumentList.Add("-c");
    info.ArgumentList.Add("for f in \"$@\"; do echo $$ > \"$f\"; done; exec python3 -c \"b = b'\\x01' * (300 << 20)\"");
    info.ArgumentList.Add("victim");
    foreach (var procs in cgroup.ProcsFiles)
    {
        info.ArgumentList.Add(procs);
    }

    using var process = Process.Start(info)!;
    process.WaitForExit();
    if (process.ExitCode != 137)
    {
        throw new InvalidOperationException($"the victim was not OOM-killed (exit {process.ExitCode})");
    }

    return process.Id;
}

/// <summary>/dev/kmsg: the kernel's records with their CLOCK_MONOTONIC-like microsecond stamps.</summary>
internal sealed class KernelLog
{
    private readonly FileStream _reader;
    private readonly List<(long Usec, string Message)> _records = [];
    private int _searchFrom;

    public KernelLog()
    {
        _reader = new FileStream("/dev/kmsg", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
        var thread = new Thread(Read) { IsBackground = true };
        thread.Start();
    }

    /// <summary>Writes a marker and returns (monotonic ns) - (kernel ns) for it.</summary>
    public long Calibrate(int round)
    {
        var marker = $"corral-oom-latency marker {Environment.ProcessId}-{round}";
        using var writer = new FileStream("/dev/kmsg", FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1);
        var bytes = Encoding.ASCII.GetBytes(marker + "\n");
        var before = Stopwatch.GetTimestamp();
        writer.Write(bytes);
        var after = Stopwatch.GetTimestamp();
        // Records before the marker (older boots' pids included) are never matched again.
        var usec = Wait(m => m.EndsWith(marker, StringComparison.Ordinal), TimeSpan.FromSeconds(5));
        return ((before + after) / 2) - (usec * 1000);
    }

    public long WaitForKill(int pid, TimeSpan timeout) =>
        Wait(m => m.Contains($"Killed process {pid} ", StringComparison.Ordinal), timeout);

    private long Wait(Func<string, bool> match, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            lock (_records)
            {
                for (var i = _searchFrom; i < _records.Count; i++)
                {
                    if (match(_records[i].Message))
                    {
                        _searchFrom = i;
                        return _records[i].Usec;
                    }
                }
            }

            Thread.Sleep(1);
        }

        throw new TimeoutException("kernel record not found in /dev/kmsg");
    }

    private void Read()
    {
        var buffer = new byte[8192];
        while (true)
        {
            int n;
            try
            {
                n = _reader.Read(buffer, 0, buffer.Length);
            }
            catch (IOException)
            {
                continue; // EPIPE: records were overwritten; carry on
            }

            var line = Encoding.UTF8.GetString(buffer, 0, n);
            var semi = line.IndexOf(';', StringComparison.Ordinal);
            var fields = line[..semi].Split(',');
            var message = line[(semi + 1)..].Split('\n')[0];
            lock (_records)
            {
                _records.Add((long.Parse(fields[2], CultureInfo.InvariantCulture), message));
            }
        }
    }
}
