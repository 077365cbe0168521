using System.Diagnostics;
using System.Globalization;
using System.IO.Pipes;
using System.Security.Cryptography;
using Corral.Common;
using Corral.Interop;
using Corral.Logging;
using Corral.Oci;
using Corral.Runtimes;
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
        var state = _store.Get(id) ?? throw new CorralException($"no such container: {id}", 1);
        if (state.Pid is null)
        {
            throw new CorralException($"container {id} has not started yet");
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
            throw new CorralException($"container {id} is not running", 1);
        }

        var process = ProcessFor(spec, request);
        var execId = "x-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var files = new ExecFiles(bundle, execId);
        await File.WriteAllTextAsync(files.Process, SpecBuilder.ToJson(process), cancellationToken).ConfigureAwait(false);

        var info = runtime.Exec(id, files.Process, files.Pid, files.InternalPid).StartInfo();

        var startedAt = time.GetUtcNow();
        Process child;
        try
        {
            child = Process.Start(info) ?? throw new CorralException($"could not start {info.FileName}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            files.Delete();
            throw new CorralException($"cannot run {info.FileName}: {ex.Message}");
        }

        var exec = new ContainerExec(this, execId, id, request.Command, runtime, child, files, startedAt);
        exec.Run(io, request.Timeout, cancellationToken);
        await exec.WaitStartedAsync().ConfigureAwait(false);
        if (exec.Pid is null)
        {
            // The runtime exited without starting the process: its own words say why.
            var failed = await exec.Completion.ConfigureAwait(false);
            var why = failed.StderrTail.Trim().Split('\n').LastOrDefault(l => l.Length > 0) ?? $"exit code {failed.ExitCode}";
            throw new CorralException($"{runtime.Name} could not exec in container {id}: {why}");
        }

        Log.ExecStarted(_logger, id, execId, exec.Pid.Value, string.Join(' ', request.Command));
        return exec;
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

        ContainerSupervisor.ValidateEnvNames(request.Env);

        // The container's environment (PATH and HOME already settled), then the caller's, later ones winning.
        var env = SpecBuilder.BuildEnv([.. spec.Process.Env.Select(SplitEnv), .. request.Env]);
        var cwd = request.Workdir ?? spec.Process.Cwd;
        if (!cwd.StartsWith('/'))
        {
            throw new CorralException($"invalid workdir '{cwd}': must be an absolute path");
        }

        // The root is read-only and what the runtime sees; only /tmp (the container's own tmpfs) can hold
        // a command an earlier exec wrote.
        var command = request.Command[0].StartsWith("/tmp/", StringComparison.Ordinal) ? null : request.Command[0];
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
        try
        {
            // Started: the runtime wrote the pid file before it let the process run.
            while (!_exited.Task.IsCompleted && ReadPid() is null)
            {
                await Task.WhenAny(_exited.Task, Task.Delay(TimeSpan.FromMilliseconds(2), time, CancellationToken.None)).ConfigureAwait(false);
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

            // Decided by the process; output still in the pipes (a background child may hold them) gets a bounded grace.
            var drained = Task.WhenAll(stdout.Completion, stderr.Completion);
            if (await Task.WhenAny(drained, Task.Delay(options.OutputDrainGrace, time)).ConfigureAwait(false) != drained)
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

            var result = new ExecResult
            {
                ExecId = ExecId,
                ExitCode = exitCode,
                Signal = Signals.FromExitCode(exitCode),
                TimedOut = timedOut,
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

    /// <summary>runc reports the host pid; a gVisor process exists only inside the sandbox, with its pid there.</summary>
    private int? ReadPid()
    {
        try
        {
            return int.TryParse(File.ReadAllText(_runtime.Kind == RuntimeKind.Runc ? _files.Pid : _files.InternalPid).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 0 ? pid : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

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
