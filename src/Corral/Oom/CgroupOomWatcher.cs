using Corral.Cgroups;
using Microsoft.Extensions.Logging;

namespace Corral.Oom;

/// <summary>
/// Watches a container cgroup's own memory counters, driven by kernel notifications (inotify on
/// memory.events for v2, eventfds through cgroup.event_control for v1): a quiet container costs no timer.
/// Also ends the livelock the kernel can fall into at the limit (thrashing, no OOM kill): a sampling
/// timer runs only while usage sits near the limit.
/// </summary>
/// <remarks>The event callback runs under the watcher's lock: it must not wait for another thread that calls <see cref="Stop"/>.</remarks>
internal sealed class CgroupOomWatcher : IOomWatcher
{
    private static readonly TimeSpan RecheckInterval = TimeSpan.FromMilliseconds(25);
    private const int RecheckRounds = 8; // a kill lands within ~200 ms of the v1 OOM notification, or not at all

    private readonly string _containerId;
    private readonly IMemoryCounters _counters;
    private readonly ICgroupEventSource _source;
    private readonly long _limitBytes;
    private readonly LivelockRule _livelock;
    private readonly long _origin;
    private readonly OomOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _versionName;
    private readonly Lock _gate = new();

    private Action<OomEvent>? _onEvent;
    private IDisposable? _subscription;
    private bool _started;
    private bool _stopped;
    private OomSummary? _summary;

    private long _baseKills;
    private long _reportedKills;
    private bool _oomNotified;

    private ITimer? _recheckTimer;
    private int _recheckLeft;

    private ITimer? _sampleTimer;

    public CgroupOomWatcher(
        string containerId,
        CgroupVersion version,
        IMemoryCounters counters,
        ICgroupEventSource source,
        long limitBytes,
        OomOptions options,
        TimeProvider time,
        ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(limitBytes);
        _containerId = containerId;
        _versionName = version.ToString();
        _counters = counters;
        _source = source;
        _limitBytes = limitBytes;
        _livelock = new LivelockRule(options, limitBytes);
        _options = options;
        _time = time;
        _origin = time.GetTimestamp();
        _logger = logger;
    }

    public OomStrategy Strategy => OomStrategy.Cgroup;

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

            // Baseline before subscribing: a kill between the two is then reported, never absorbed.
            var baseline = _counters.Read();
            _baseKills = baseline.OomKills;
        }

        var subscription = _source.Subscribe(OnNotification);
        lock (_gate)
        {
            if (_stopped)
            {
                subscription.Dispose();
                return;
            }

            _subscription = subscription;
            _logger.CgroupWatcherStarted(_containerId, _limitBytes / (1024 * 1024), Strategy, _versionName);
            Evaluate(CgroupNotification.EventsModified);
        }
    }

    public OomSummary Stop()
    {
        IDisposable? subscription;
        lock (_gate)
        {
            if (_summary is not null)
            {
                return _summary;
            }

            if (!_started)
            {
                _stopped = true;
                return _summary = OomSummary.None;
            }

            subscription = _subscription;
            _subscription = null;
        }

        // Outside the lock: disposing waits for a notification in flight, which takes the lock itself.
        subscription?.Dispose();

        lock (_gate)
        {
            if (_summary is not null)
            {
                return _summary;
            }

            _stopped = true;
            DisposeTimer(ref _recheckTimer);
            DisposeTimer(ref _sampleTimer);
            if (TryRead(out var sample))
            {
                ReportKills(sample);
            }

            _summary = new OomSummary(_reportedKills, _livelock.Fired, false, _oomNotified);
            _logger.WatcherStopped(_containerId, _summary.OomKills, _summary.Livelock, _summary.Likely);
            return _summary;
        }
    }

    public void Dispose() => Stop();

    private void OnNotification(CgroupNotification kind)
    {
        lock (_gate)
        {
            if (!_stopped)
            {
                Evaluate(kind);
            }
        }
    }

    private void Evaluate(CgroupNotification kind)
    {
        _oomNotified |= kind == CgroupNotification.Oom;
        if (!TryRead(out var sample))
        {
            return;
        }

        var killed = ReportKills(sample);
        if (kind == CgroupNotification.Oom && !killed && _recheckTimer is null)
        {
            _recheckLeft = RecheckRounds;
            _recheckTimer = _time.CreateTimer(_ => OnRecheck(), null, RecheckInterval, RecheckInterval);
        }

        MaybeArm(sample);
    }

    private void OnRecheck()
    {
        lock (_gate)
        {
            if (_stopped || _recheckTimer is null)
            {
                return;
            }

            var done = --_recheckLeft <= 0;
            if (TryRead(out var sample))
            {
                done |= ReportKills(sample);
                MaybeArm(sample);
            }

            if (done)
            {
                DisposeTimer(ref _recheckTimer);
            }
        }
    }

    /// <summary>
    /// Arms the livelock sampling when usage is near the limit. The read that gets here follows a v1 usage
    /// threshold event or, on v2, a change of memory.events (growth of "max" when the limit is hit).
    /// </summary>
    private void MaybeArm(MemorySample sample)
    {
        if (_sampleTimer is not null || !_livelock.TryArm(sample, Now()))
        {
            return;
        }

        _sampleTimer = _time.CreateTimer(_ => OnSample(), null, _options.LivelockSampleInterval, _options.LivelockSampleInterval);
        _logger.LivelockArmed(_containerId, sample.UsageBytes, _livelock.ArmBytes);
    }

    private void OnSample()
    {
        lock (_gate)
        {
            if (_stopped || _sampleTimer is null || !TryRead(out var sample))
            {
                return;
            }

            ReportKills(sample);
            var step = _livelock.Observe(sample, Now());
            switch (step.Action)
            {
                case LivelockAction.Disarm:
                    DisposeTimer(ref _sampleTimer);
                    _logger.LivelockDisarmed(_containerId, sample.UsageBytes);
                    break;
                case LivelockAction.Fire:
                    DisposeTimer(ref _sampleTimer);
                    _logger.LivelockDetected(_containerId, Math.Round(step.HitsPerSecond), (long)step.Thrashing.TotalMilliseconds, sample.UsageBytes);
                    Publish(new OomEvent(
                        OomEventKind.Livelock,
                        _time.GetUtcNow(),
                        _reportedKills,
                        sample.UsageBytes,
                        $"memory limit hit {step.HitsPerSecond:F0}/s for {step.Thrashing.TotalSeconds:F1}s at {sample.UsageBytes} of {_limitBytes} bytes with no OOM kill"));
                    break;
            }
        }
    }

    /// <summary>The watcher's monotonic time, for the livelock rule.</summary>
    private TimeSpan Now() => _time.GetElapsedTime(_origin);

    /// <summary>Publishes one Kill event for any growth of oom_kill since the last report; true when it grew.</summary>
    private bool ReportKills(MemorySample sample)
    {
        var kills = sample.OomKills - _baseKills;
        if (kills <= _reportedKills)
        {
            return false;
        }

        var added = kills - _reportedKills;
        _reportedKills = kills;
        _logger.OomKillSeen(_containerId, kills, sample.UsageBytes);
        Publish(new OomEvent(
            OomEventKind.Kill,
            _time.GetUtcNow(),
            kills,
            sample.UsageBytes,
            $"kernel OOM killer killed {added} process(es) in the container's cgroup ({kills} in total), memory limit {_limitBytes} bytes"));
        return true;
    }

    private void Publish(OomEvent oomEvent) => _onEvent?.Invoke(oomEvent);

    private bool TryRead(out MemorySample sample)
    {
        try
        {
            sample = _counters.Read();
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            _logger.CounterReadFailed(_containerId, ex.Message);
            sample = default;
            return false;
        }
    }

    private static void DisposeTimer(ref ITimer? timer)
    {
        timer?.Dispose();
        timer = null;
    }
}
