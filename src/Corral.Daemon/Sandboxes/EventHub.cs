using System.Threading.Channels;
using Corral.Supervision;

namespace Corral.Daemon.Sandboxes;

public enum SandboxEventType
{
    Created,
    Started,
    Oom,
    Exited,
    Removed,
    Failed,
}

public sealed record SandboxEvent(long Sequence, SandboxEventType Type, string Id, DateTimeOffset At, int? Pid = null, string? Detail = null, ExitRecord? Exit = null);

/// <summary>
/// Every lifecycle event in publication order: a bounded history for late subscribers, then live
/// delivery. Publication is serialised, so a sandbox's OOM event, published before its exit, is
/// seen before it by every subscriber.
/// </summary>
public sealed class EventHub(int historyLimit, TimeProvider time)
{
    private readonly Lock _gate = new();
    private readonly LinkedList<SandboxEvent> _history = new();
    private readonly List<Channel<SandboxEvent>> _subscribers = [];
    private long _sequence;
    private bool _completed;

    public SandboxEvent Publish(SandboxEventType type, string id, int? pid = null, string? detail = null, ExitRecord? exit = null)
    {
        lock (_gate)
        {
            var e = new SandboxEvent(++_sequence, type, id, time.GetUtcNow(), pid, detail, exit);
            _history.AddLast(e);
            if (_history.Count > historyLimit)
            {
                _history.RemoveFirst();
            }

            foreach (var subscriber in _subscribers)
            {
                subscriber.Writer.TryWrite(e);
            }

            return e;
        }
    }

    /// <summary>Past events, then (when <paramref name="follow"/>) live ones until cancelled or the daemon stops.</summary>
    public async IAsyncEnumerable<SandboxEvent> ReadAsync(bool follow, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        SandboxEvent[] past;
        Channel<SandboxEvent>? live = null;
        lock (_gate)
        {
            past = [.. _history];
            if (follow)
            {
                live = Channel.CreateUnbounded<SandboxEvent>(new UnboundedChannelOptions { SingleReader = true });
                if (_completed)
                {
                    live.Writer.TryComplete();
                }
                else
                {
                    _subscribers.Add(live);
                }
            }
        }

        try
        {
            foreach (var e in past)
            {
                yield return e;
            }

            if (live is null)
            {
                yield break;
            }

            await foreach (var e in live.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                yield return e;
            }
        }
        finally
        {
            if (live is not null)
            {
                lock (_gate)
                {
                    _subscribers.Remove(live);
                }
            }
        }
    }

    /// <summary>Ends every live stream (daemon shutdown).</summary>
    public void Complete()
    {
        lock (_gate)
        {
            _completed = true;
            foreach (var subscriber in _subscribers)
            {
                subscriber.Writer.TryComplete();
            }

            _subscribers.Clear();
        }
    }
}
