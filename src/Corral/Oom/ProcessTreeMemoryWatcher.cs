using Microsoft.Extensions.Logging;

namespace Corral.Oom;

/// <summary>
/// The seed's fallback when no cgroup is available: polls the RSS of the runtime's process tree and
/// reports "OOM likely" once it crosses a fraction of the limit. It only guesses: RSS is not what the
/// kernel charges, and a spike between two polls is never seen (the cgroup watcher has neither weakness).
/// </summary>
internal sealed class ProcessTreeMemoryWatcher(
    Func<int?> rootPid,
    long limitBytes,
    OomOptions options,
    TimeProvider time,
    ILogger logger,
    IProcessTable? table = null) : IOomWatcher
{
    private readonly IProcessTable _table = table ?? ProcProcessTable.Instance;
    private readonly long _thresholdBytes = (long)Math.Ceiling(limitBytes * options.ProcessTreeThreshold);
    private readonly Lock _gate = new();

    private Action<OomEvent>? _onEvent;
    private ITimer? _timer;
    private int? _attachedPid;
    private bool _started;
    private bool _likely;
    private OomSummary? _summary;

    public OomStrategy Strategy => OomStrategy.ProcessTree;

    public long ThresholdBytes => _thresholdBytes;

    /// <summary>Gives the root pid once it is known; until then each poll asks the pid function.</summary>
    public void AttachProcess(int pid)
    {
        lock (_gate)
        {
            _attachedPid = pid;
        }
    }

    public void Start(Action<OomEvent> onEvent)
    {
        ArgumentNullException.ThrowIfNull(onEvent);
        lock (_gate)
        {
            if (_started)
            {
                throw new InvalidOperationException("OOM watcher already started");
            }

            _started = true;
            _onEvent = onEvent;
            _timer = time.CreateTimer(_ => Poll(), null, options.ProcessTreeInterval, options.ProcessTreeInterval);
            logger.ProcessTreeWatcherStarted(_attachedPid ?? rootPid(), limitBytes / (1024 * 1024), Strategy);
        }
    }

    public OomSummary Stop()
    {
        lock (_gate)
        {
            if (_summary is not null)
            {
                return _summary;
            }

            _timer?.Dispose();
            _timer = null;
            _summary = new OomSummary(0, false, _likely);
            logger.WatcherStopped(_attachedPid?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?", 0, false, _likely);
            return _summary;
        }
    }

    public void Dispose() => Stop();

    private void Poll()
    {
        lock (_gate)
        {
            if (_summary is not null || _likely)
            {
                return;
            }

            var pid = _attachedPid ?? rootPid();
            if (pid is not { } root || ProcessTree.SumRssBytes(_table, root) is not { } rss)
            {
                return;
            }

            if (rss >= _thresholdBytes)
            {
                _likely = true;
                _timer?.Dispose(); // reported once: nothing left to watch for
                _timer = null;
                logger.OomLikely(root, rss, _thresholdBytes);
                _onEvent?.Invoke(new OomEvent(
                    OomEventKind.Likely,
                    time.GetUtcNow(),
                    0,
                    rss,
                    $"process tree of pid {root} uses {rss} bytes RSS, at or above {options.ProcessTreeThreshold:P0} of the {limitBytes} byte limit"));
            }
        }
    }
}
