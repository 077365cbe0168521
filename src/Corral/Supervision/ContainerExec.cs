using System.Diagnostics;
using System.IO.Pipes;
using System.Security.Cryptography;
using Corral.Common;
using Corral.Interop;
using Corral.Logging;
using Corral.Oci;
using Corral.Runtimes;
using Corral.Shim;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Corral.Supervision;

/// <summary>A process to start inside a running container (`runc exec` / `runsc exec`).</summary>
public sealed record ExecRequest
{
    public required string ContainerId { get; init; }

    public required IReadOnlyList<string> Command { get; init; }

    /// <summary>Added to the container's environment; these win.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Env { get; init; } = [];

    /// <summary>The container's working directory when null.</summary>
    public string? Workdir { get; init; }

    /// <summary>SIGKILL the process after this long.</summary>
    public TimeSpan? Timeout { get; init; }
}

/// <summary>Where an exec'd process reads stdin from (null: empty) and writes its output (null: discarded, the tail is kept).</summary>
public sealed record ExecIo(Stream? Stdin, Stream? Stdout, Stream? Stderr);

/// <summary>How an exec'd process ended.</summary>
public sealed record ExecResult
{
    public required string ExecId { get; init; }

    public required int ExitCode { get; init; }

    public string? Signal { get; init; }

    public bool TimedOut { get; init; }

    /// <summary>The process died because its container ended under it (gVisor's sandbox, OOM-killed whole): the container's record says why.</summary>
    public bool SandboxEnded { get; init; }

    public required DateTimeOffset StartedAt { get; init; }

    public required DateTimeOffset ExitedAt { get; init; }

    public double DurationMs => (ExitedAt - StartedAt).TotalMilliseconds;

    public string StdoutTail { get; init; } = string.Empty;

    public string StderrTail { get; init; } = string.Empty;
}

/// <summary>
/// Starts processes inside containers this host runs. The process gets the container's own process
/// settings (user, capabilities, rlimits, no_new_privileges) with the caller's command, environment
/// and directory, so an exec is exactly as confined as PID 1.
/// </summary>
public sealed class ContainerExecutor(
    SupervisorOptions options,
    RuntimeOptions runtimeOptions,
    TimeProvider time,
    ILogger<ContainerExecutor>? logger = null)
{
    private readonly ILogger _logger = logger ?? (ILogger)NullLogger.Instance;
    private readonly ContainerStateStore _store = new(options.StateDir);

    /// <summary>
    /// Validates and starts <paramref name="request"/>; returns once the runtime reported the process's
    /// pid. Bad input, an unknown or stopped container throw <see cref="CorralException"/> with nothing
    /// left behind. Cancelling <paramref name="cancellationToken"/> later kills the process.
    /// </summary>
    public async Task<ContainerExec> StartAsync(ExecRequest request, ExecIo io, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(io);
        var id = ContainerId.Validate(request.ContainerId);
        var state = _store.Get(id) ?? throw new CorralException(ErrorKind.NotFound, $"no such container: {id}", 1);
        if (state.Pid is null)
        {
            throw CorralException.Precondition($"container {id} has not started yet");
        }

        ContainerRuntimes.TryParse(state.Runtime, out var kind);
        var runtime = ContainerRuntimes.Create(kind, runtimeOptions);
        var bundle = Path.Combine(options.StateDir, "bundles", id);
        RuntimeSpec spec;
        try
        {
            spec = SpecBuilder.FromJson(await File.ReadAllTextAsync(Path.Combine(bundle, "config.json"), cancellationToken).ConfigureAwait(false));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CorralException(ErrorKind.FailedPrecondition, $"container {id} is not running", 1);
        }

        var process = ProcessFor(spec, request);
        var execId = "x-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var files = new ExecFiles(bundle, execId);
        try
        {
            PrivateFiles.WriteAllText(files.Process, SpecBuilder.ToJson(process));
        }
        catch (DirectoryNotFoundException)
        {
            // The container ended and its bundle went between the read above and this write.
            throw new CorralException(ErrorKind.FailedPrecondition, $"container {id} is not running", 1);
        }

        var invocation = options.ExecReaper is { Count: > 0 } reaper && runtime.ExecDetached(id, files.Process, files.Pid) is { } detached
            ? ExecReaper.Wrap(reaper, detached, files.Pid)
            : runtime.Exec(id, files.Process, files.Pid, files.InternalPid);
        var info = invocation.StartInfo();

        var startedAt = time.GetUtcNow();
        Process child;
        try
        {
            child = Process.Start(info) ?? throw CorralException.Host($"could not start {info.FileName}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            files.Delete();
            throw CorralException.Host($"cannot run {info.FileName}: {ex.Message}");
        }

        var exec = new ContainerExec(this, execId, id, request.Command, runtime, child, files, startedAt);
        exec.Run(io, request.Timeout, cancellationToken);
        await exec.WaitStartedAsync().ConfigureAwait(false);
        if (exec.Pid is null)
        {
            // The runtime exited without starting the process: its own words say why.
            var failed = await exec.Completion.ConfigureAwait(false);
            if (!StillRunning(id, bundle))
            {
                // Not the runtime's fault: the container ended while the exec was starting (runsc says
                // "connecting to control server" and exits 128).
                throw new CorralException(ErrorKind.FailedPrecondition, $"container {id} is not running", 1);
            }

            var why = failed.StderrTail.Trim().Split('\n').LastOrDefault(l => l.Length > 0) ?? $"exit code {failed.ExitCode}";
            throw CorralException.Runtime($"{runtime.Name} could not exec in container {id}: {why}");
        }

        Log.ExecStarted(_logger, id, execId, exec.Pid.Value, string.Join(' ', request.Command));
        return exec;
    }

    /// <summary>The container is still known, its bundle still there and its PID 1 alive (a zombie is not: it died and waits for its parent).</summary>
    internal bool StillRunning(string id, string bundle) =>
        _store.Get(id) is { Pid: { } pid } && File.Exists(Path.Combine(bundle, "config.json")) && (LibC.kill(pid, 0) == 0 || LibC.LastError != LibC.ESRCH) && !IsZombie(pid);

    /// <summary>
    /// The process died and is not reaped yet (state Z or X in /proc/PID/stat). gVisor's sandbox killed by
    /// the kernel stays a zombie until runsc reaps it, seconds later on a busy host, while runsc exec has
    /// already lost it.
    /// </summary>
    internal static bool IsZombie(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }

        // "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
        var close = stat.LastIndexOf(')');
        return close >= 0 && close + 2 < stat.Length && stat[close + 2] is 'Z' or 'X';
    }

    internal SupervisorOptions Options => options;

    internal TimeProvider Time => time;

    internal ILogger Logger => _logger;

    private static ProcessSpec ProcessFor(RuntimeSpec spec, ExecRequest request)
    {
        if (request.Command.Count == 0 || string.IsNullOrEmpty(request.Command[0]))
        {
            throw new CorralException("no command given: exec ID -- CMD [ARGS...]");
        }

        InputRules.Process(request.Command, request.Env, request.Workdir);
        if (request.Timeout is { } timeout)
        {
            InputRules.Duration("exec timeout", timeout);
        }

        // The container's environment (PATH and HOME already settled), then the caller's, later ones winning.
        var env = SpecBuilder.BuildEnv([.. spec.Process.Env.Select(SplitEnv), .. request.Env]);
        var cwd = request.Workdir ?? spec.Process.Cwd;
        if (!cwd.StartsWith('/'))
        {
            throw new CorralException($"invalid workdir '{cwd}': must be an absolute path");
        }

        // The root (its writable layer included) is what the runtime sees; a path on one of the container's
        // own mounts (a tmpfs, a bind mount) is left for the runtime to find.
        var onMount = spec.Mounts.Any(m => m.Type is "tmpfs" or "bind" && request.Command[0].StartsWith(m.Destination.TrimEnd('/') + "/", StringComparison.Ordinal));
        var command = onMount ? null : request.Command[0];
        var path = env.First(e => e.StartsWith("PATH=", StringComparison.Ordinal))["PATH=".Length..];
        ContainerSupervisor.ValidateInRootfs(spec.Root.Path, command, path, request.Workdir);

        return spec.Process with { Terminal = false, Args = [.. request.Command], Env = env, Cwd = cwd };
    }

    private static KeyValuePair<string, string> SplitEnv(string entry)
    {
        var eq = entry.IndexOf('=', StringComparison.Ordinal);
        return eq < 0 ? new(entry, string.Empty) : new(entry[..eq], entry[(eq + 1)..]);
    }

    internal sealed record ExecFiles(string Bundle, string ExecId)
    {
        public string Process => System.IO.Path.Combine(Bundle, $"exec-{ExecId}.json");

        public string Pid => System.IO.Path.Combine(Bundle, $"exec-{ExecId}.pid");

        public string InternalPid => System.IO.Path.Combine(Bundle, $"exec-{ExecId}.ipid");

        public void Delete()
        {
            foreach (var file in new[] { Process, Pid, InternalPid })
            {
                try
                {
                    File.Delete(file);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // The bundle goes with the container anyway.
                }
            }
        }
    }
}

/// <summary>One process started in a container by <see cref="ContainerExecutor"/>.</summary>
public sealed class ContainerExec
{
    private readonly ContainerExecutor _owner;
    private readonly IContainerRuntime _runtime;
    private readonly Process _process;
    private readonly ContainerExecutor.ExecFiles _files;
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<DateTimeOffset> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task<ExecResult>? _completion;
    private readonly CancellationTokenSource _stdinDone = new();

    internal ContainerExec(ContainerExecutor owner, string execId, string containerId, IReadOnlyList<string> command, IContainerRuntime runtime, Process process, ContainerExecutor.ExecFiles files, DateTimeOffset startedAt)
    {
        _owner = owner;
        ExecId = execId;
        ContainerId = containerId;
        Command = command;
        _runtime = runtime;
        _process = process;
        _files = files;
        StartedAt = startedAt;
    }

    public string ExecId { get; }

    public string ContainerId { get; }

    public IReadOnlyList<string> Command { get; }

    public DateTimeOffset StartedAt { get; }

    /// <summary>The process's pid: on the host for runc, inside the sandbox for gVisor (its processes have no host pid).</summary>
    public int? Pid { get; private set; }

    public Task<ExecResult> Completion => _completion ?? throw new InvalidOperationException("not started");

    /// <summary>Signals the process; false once it has ended.</summary>
    public async Task<bool> SignalAsync(int signal, CancellationToken cancellationToken = default)
    {
        if (_exited.Task.IsCompleted || Pid is not { } pid)
        {
            return false;
        }

        if (_runtime.KillProcess(ContainerId, pid, signal) is { } invocation)
        {
            var result = await RuntimeCommandRunner.RunAsync(invocation, _owner.Options.RuntimeCommandDeadline, cancellationToken).ConfigureAwait(false);
            return result.Succeeded;
        }

        return LibC.kill(pid, signal) == 0;
    }

    internal Task WaitStartedAsync() => _started.Task;

    internal void Run(ExecIo io, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        _process.EnableRaisingEvents = true;
        _process.Exited += (_, _) => _exited.TrySetResult(_owner.Time.GetUtcNow());
        if (_process.HasExited)
        {
            _exited.TrySetResult(_owner.Time.GetUtcNow());
        }

        _completion = RunAsync(io, timeout, cancellationToken);
    }

    private async Task<ExecResult> RunAsync(ExecIo io, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        var options = _owner.Options;
        var time = _owner.Time;
        // Read through epoll: a daemon may hold hundreds of these pipes open at once.
        using var stdoutPipe = new EpollPipeReader((PipeStream)_process.StandardOutput.BaseStream);
        using var stderrPipe = new EpollPipeReader((PipeStream)_process.StandardError.BaseStream);
        var stdout = new OutputPump(stdoutPipe, io.Stdout, options.OutputTailBytes);
        var stderr = new OutputPump(stderrPipe, io.Stderr, options.OutputTailBytes);
        var stdin = PumpStdinAsync(io.Stdin);
        var timedOut = false;
        var sandboxEnded = false;
        try
        {
            // Started: the runtime wrote the pid file before it let the process run. Woken by inotify on the
            // bundle; polling every 2 ms instead kept a daemon with 150 execs starting at once busy enough to
            // starve its thread pool (exited execs' output then went unread past the drain grace).
            using (var changed = new SemaphoreSlim(0, 1))
            using (var watch = DirectoryWatcher.TryWatchShared(_files.Bundle, changed.Wake))
            {
                var interval = TimeSpan.FromMilliseconds(watch is null ? 5 : 100);
                while (!_exited.Task.IsCompleted && ReadPid() is null)
                {
                    await Task.WhenAny(_exited.Task, changed.WaitAsync(interval, CancellationToken.None)).ConfigureAwait(false);
                }
            }

            Pid = ReadPid();
            _started.TrySetResult();

            using var registration = cancellationToken.Register(() => _ = SignalAsync(Signals.SIGKILL, CancellationToken.None));
            if (timeout is { } limit && !_exited.Task.IsCompleted)
            {
                if (await Task.WhenAny(_exited.Task, Task.Delay(limit, time, CancellationToken.None)).ConfigureAwait(false) != _exited.Task)
                {
                    timedOut = true;
                    await SignalAsync(Signals.SIGKILL, CancellationToken.None).ConfigureAwait(false);
                }
            }

            var exitedAt = await _exited.Task.ConfigureAwait(false);
            var exitCode = _process.ExitCode;
            await _stdinDone.CancelAsync().ConfigureAwait(false);

            // Decided by the process; output still in the pipes (a background child may hold them) gets a
            // bounded grace. A pipe whose writers are all gone ends by itself: when only a busy daemon is
            // behind on reading it, that output is waited for, not cut (seen: 150 execs at once on two cores
            // left exited execs' output unread past the grace).
            var drained = Task.WhenAll(stdout.Completion, stderr.Completion);
            var waitedOut = await Task.WhenAny(drained, Task.Delay(options.OutputDrainGrace, time)).ConfigureAwait(false) != drained;
            if (waitedOut && stdoutPipe.WritersGone && stderrPipe.WritersGone)
            {
                waitedOut = await Task.WhenAny(drained, Task.Delay(BehindReaderBound, time)).ConfigureAwait(false) != drained;
            }

            if (waitedOut)
            {
                Log.ExecOutputNotDrained(_owner.Logger, ContainerId, ExecId, stdout.Total, stderr.Total, options.OutputDrainGrace.TotalSeconds);
                stdoutPipe.Dispose();
                stderrPipe.Dispose();
            }

            if (timedOut)
            {
                // Reported like a container killed at its timeout.
                exitCode = 137;
            }
            else if (!_runtime.HostPids && exitCode == RunscLostSandbox && await SandboxEndedAsync().ConfigureAwait(false))
            {
                sandboxEnded = true;
                // runsc exec ends 128 when the sandbox it talks to dies under it (an OOM kill of the
                // sandbox, PID 1's end): the process died with its sandbox, as a runc exec's is SIGKILLed.
                exitCode = 137;
            }

            var result = new ExecResult
            {
                ExecId = ExecId,
                ExitCode = exitCode,
                Signal = Signals.FromExitCode(exitCode),
                TimedOut = timedOut,
                SandboxEnded = sandboxEnded,
                StartedAt = StartedAt,
                ExitedAt = exitedAt,
                StdoutTail = stdout.Tail(),
                StderrTail = stderr.Tail(),
            };
            Log.ExecExited(_owner.Logger, ContainerId, ExecId, result.ExitCode, result.TimedOut, result.DurationMs);
            return result;
        }
        finally
        {
            _started.TrySetResult();
            await _stdinDone.CancelAsync().ConfigureAwait(false);
            await stdin.ConfigureAwait(false);
            _stdinDone.Dispose();
            _files.Delete();
            stdoutPipe.Dispose();
            stderrPipe.Dispose();
            _process.Dispose();
        }
    }

    /// <summary>runsc exec's own exit code when it lost its sandbox (not the process's).</summary>
    private const int RunscLostSandbox = 128;

    /// <summary>Whether the container ended (waiting up to 2 s: runsc exec notices before its supervisor does).</summary>
    private async Task<bool> SandboxEndedAsync()
    {
        for (var i = 0; i < 40; i++)
        {
            if (!_owner.StillRunning(ContainerId, _files.Bundle))
            {
                return true;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), _owner.Time, CancellationToken.None).ConfigureAwait(false);
        }

        return false;
    }

    /// <summary>How long output is still waited for after the grace when its pipes have no writers left (only the reader is behind).</summary>
    private static readonly TimeSpan BehindReaderBound = TimeSpan.FromSeconds(30);

    /// <summary>runc reports the host pid; a gVisor process exists only inside the sandbox, with its pid there.</summary>
    private int? ReadPid() => RuntimePidFile.TryRead(_runtime.HostPids ? _files.Pid : _files.InternalPid);

    private async Task PumpStdinAsync(Stream? source)
    {
        var target = _process.StandardInput.BaseStream;
        try
        {
            if (source is not null)
            {
                var buffer = new byte[16 * 1024];
                int read;
                var done = _stdinDone.Token;
                while ((read = await source.ReadAsync(buffer, done).ConfigureAwait(false)) > 0)
                {
                    await target.WriteAsync(buffer.AsMemory(0, read), done).ConfigureAwait(false);
                    await target.FlushAsync(done).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The process stopped reading (it exited, or closed its stdin).
        }
        finally
        {
            try
            {
                target.Dispose();
            }
            catch (IOException)
            {
                // A broken pipe on close: the process is gone.
            }
        }
    }
}
