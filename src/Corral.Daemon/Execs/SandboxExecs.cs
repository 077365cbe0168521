using System.Collections.Concurrent;
using Corral.Common;
using Corral.Daemon.Metrics;
using Corral.Daemon.Sandboxes;
using Corral.Supervision;

namespace Corral.Daemon.Execs;

/// <summary>
/// The processes started inside the daemon's sandboxes: running ones, and the last ended ones per
/// sandbox with how they ended. Execs are not adopted after a daemon restart: their output streams
/// went to callers of the daemon that died.
/// </summary>
public sealed class SandboxExecs(SandboxRegistry registry, ContainerExecutor executor, TimeProvider time, DaemonMetrics? metrics = null)
{
    /// <summary>Ended execs kept per sandbox for ListExecs; the oldest go first.</summary>
    public const int EndedKept = 64;

    /// <summary>How long an exec waits for a just-created sandbox to start (the supervisor's own start deadline).</summary>
    private static readonly TimeSpan StartWait = TimeSpan.FromSeconds(60);

    private readonly ConcurrentDictionary<string, ConcurrentDictionary<string, ContainerExec>> _bySandbox = new(StringComparer.Ordinal);

    public async Task<ContainerExec> StartAsync(ExecRequest request, ExecIo io, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var sandbox = await RunningSandboxAsync(request.ContainerId, cancellationToken).ConfigureAwait(false);
        ContainerExec exec;
        var startedAt = time.GetTimestamp();
        try
        {
            exec = await executor.StartAsync(request, io, cancellationToken).ConfigureAwait(false);
            metrics?.ExecStarted(sandbox.Record.Runtime, time.GetElapsedTime(startedAt));
        }
        catch (CorralException ex) when (ex.ExitCode == 1 || sandbox.HasEnded)
        {
            // The container ended between our look and the runtime's.
            throw CorralException.Precondition($"sandbox {sandbox.Id} is not running: {ex.Message}");
        }

        var execs = _bySandbox.GetOrAdd(sandbox.Id, _ => new(StringComparer.Ordinal));
        execs[exec.ExecId] = exec;
        _ = exec.Completion.ContinueWith(_ => Trim(sandbox.Id), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        return exec;
    }

    public IReadOnlyList<ContainerExec> List(string sandboxId)
    {
        _ = registry.Get(sandboxId);
        return _bySandbox.TryGetValue(sandboxId, out var execs) ? [.. execs.Values.OrderBy(e => e.StartedAt)] : [];
    }

    public async Task KillAsync(string sandboxId, string execId, int signal, CancellationToken cancellationToken)
    {
        _ = registry.Get(sandboxId);
        if (!_bySandbox.TryGetValue(sandboxId, out var execs) || !execs.TryGetValue(execId, out var exec))
        {
            throw CorralException.NotFound($"no exec {execId} in sandbox {sandboxId}");
        }

        if (exec.Completion.IsCompleted || !await exec.SignalAsync(signal, cancellationToken).ConfigureAwait(false))
        {
            throw CorralException.Precondition($"exec {execId} in sandbox {sandboxId} has already ended");
        }
    }

    /// <summary>Forgets the execs of a removed sandbox.</summary>
    public void Forget(string sandboxId) => _bySandbox.TryRemove(sandboxId, out _);

    /// <summary>The sandbox once its PID 1 runs: an exec right after Create waits for the start (bounded).</summary>
    private async Task<Sandbox> RunningSandboxAsync(string id, CancellationToken cancellationToken)
    {
        var sandbox = registry.Get(id);
        var since = time.GetTimestamp();
        while (sandbox.Record.Pid is null && !sandbox.HasEnded && time.GetElapsedTime(since) < StartWait)
        {
            await sandbox.ChangedAsync(cancellationToken).ConfigureAwait(false);
        }

        if (sandbox.HasEnded)
        {
            throw CorralException.Precondition($"sandbox {id} has ended; exec needs a running sandbox");
        }

        if (sandbox.Record.Pid is null)
        {
            throw CorralException.Precondition($"sandbox {id} did not start within {StartWait.TotalSeconds:0}s; exec needs a running sandbox");
        }

        return sandbox;
    }

    private void Trim(string sandboxId)
    {
        if (!_bySandbox.TryGetValue(sandboxId, out var execs))
        {
            return;
        }

        var ended = execs.Values.Where(e => e.Completion.IsCompleted).OrderBy(e => e.StartedAt).ToList();
        foreach (var old in ended.Take(Math.Max(0, ended.Count - EndedKept)))
        {
            execs.TryRemove(old.ExecId, out _);
        }
    }
}
