using System.Globalization;
using Corral.Cgroups;

namespace Corral.Supervision;

/// <summary>
/// Whether a fork in the container failed on its pids limit. The kernel counts the refusal
/// (pids.events max) in the forking task's own cgroup on these kernels, which for runc is its child
/// `ctr`, removed by runc as it exits; so while a pids limit is set the counters of the container's
/// cgroup and of runc's child are sampled (every 100 ms, and once more at the exit), keeping the
/// highest count seen.
/// </summary>
internal sealed class PidsLimitProbe : IDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);
    private readonly string[] _files;
    private readonly Dictionary<string, long> _seen = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public PidsLimitProbe(IContainerCgroup cgroup)
    {
        _files = [.. cgroup.ProcsFiles
            .Select(Path.GetDirectoryName)
            .OfType<string>()
            .SelectMany(dir => new[] { Path.Combine(dir, "pids.events"), Path.Combine(dir, "ctr", "pids.events") })
            .Distinct(StringComparer.Ordinal)];
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Forks refused on the limit, as far as seen; reads once more first.</summary>
    public long Hits()
    {
        Sample();
        lock (_seen)
        {
            return _seen.Values.DefaultIfEmpty(0).Max();
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        try
        {
            _loop.Wait(TimeSpan.FromSeconds(1));
        }
        catch (AggregateException)
        {
        }

        _stop.Dispose();
    }

    private async Task LoopAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                Sample();
                await Task.Delay(Interval, _stop.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void Sample()
    {
        foreach (var file in _files)
        {
            long value;
            try
            {
                var max = File.ReadAllLines(file).FirstOrDefault(l => l.StartsWith("max ", StringComparison.Ordinal));
                if (max is null || !long.TryParse(max.AsSpan(4), NumberStyles.None, CultureInfo.InvariantCulture, out value))
                {
                    continue;
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                continue;
            }

            lock (_seen)
            {
                _seen[file] = Math.Max(value, _seen.GetValueOrDefault(file));
            }
        }
    }
}
