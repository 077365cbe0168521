using Corral.Protocol.V1;
using Grpc.Core;

namespace Corral.Client;

/// <summary>
/// One sandbox, owned by the code that holds this handle: <c>await using</c> kills it if it still
/// runs and removes it, so nothing outlives the scope.
/// </summary>
public sealed class Sandbox(CorralClient client, string id) : IAsyncDisposable
{
    public string Id { get; } = id;

    public Task<ExitRecord> WaitAsync(CancellationToken cancellationToken = default) => client.WaitAsync(Id, cancellationToken);

    public Task KillAsync(string signal = "TERM", TimeSpan? grace = null, CancellationToken cancellationToken = default) =>
        client.KillAsync(Id, signal, grace, cancellationToken);

    public Task<SandboxStats> StatsAsync(CancellationToken cancellationToken = default) => client.StatsAsync(Id, cancellationToken);

    public Task<SandboxInfo> InspectAsync(CancellationToken cancellationToken = default) => client.InspectAsync(Id, cancellationToken);

    /// <summary>Runs <paramref name="command"/> in the sandbox and collects its output (the sandbox must be running).</summary>
    public Task<ExecOutput> ExecAsync(IReadOnlyList<string> command, string? stdin = null, CancellationToken cancellationToken = default) =>
        client.ExecAsync(Id, command, stdin, cancellationToken);

    /// <summary>Runs a process in the sandbox with streamed stdin and output; see <see cref="CorralClient.ExecAsync(ExecStart, Stream?, Stream?, Stream?, Action{ExecStarted}?, CancellationToken)"/>.</summary>
    public Task<ExecExit> ExecAsync(ExecStart start, Stream? stdin, Stream? stdout, Stream? stderr, Action<ExecStarted>? started = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(start);
        start.SandboxId = Id;
        return client.ExecAsync(start, stdin, stdout, stderr, started, cancellationToken);
    }

    public Task<IReadOnlyList<ExecInfo>> ListExecsAsync(CancellationToken cancellationToken = default) => client.ListExecsAsync(Id, cancellationToken);

    public Task KillExecAsync(string execId, string signal = "KILL", CancellationToken cancellationToken = default) =>
        client.KillExecAsync(Id, execId, signal, cancellationToken);

    /// <summary>Waits until the sandbox runs (its PID 1 started), so it takes execs.</summary>
    public async Task WaitRunningAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var info = await client.InspectAsync(Id, cancellationToken).ConfigureAwait(false);
            switch (info.State)
            {
                case SandboxState.Running:
                    return;
                case SandboxState.Exited or SandboxState.Failed:
                    throw new RpcException(new Status(StatusCode.FailedPrecondition, $"sandbox {Id} ended before it ran: {(info.Error.Length > 0 ? info.Error : $"exit code {info.Exit?.ExitCode}")}"));
            }

            await Task.Delay(10, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Sends a tar into the sandbox; see <see cref="CorralClient.UploadAsync"/>.</summary>
    public Task<CopyInResponse> UploadAsync(string containerPath, Stream tar, CancellationToken cancellationToken = default) =>
        client.UploadAsync(Id, containerPath, tar, cancellationToken);

    /// <summary>A tar of a path in the sandbox; see <see cref="CorralClient.DownloadAsync"/>.</summary>
    public Task DownloadAsync(string containerPath, Stream tar, CancellationToken cancellationToken = default) =>
        client.DownloadAsync(Id, containerPath, tar, cancellationToken);

    public Task WriteFileAsync(string containerPath, ReadOnlyMemory<byte> content, UnixFileMode mode = (UnixFileMode)0b110_100_100, CancellationToken cancellationToken = default) =>
        client.WriteFileAsync(Id, containerPath, content, mode, cancellationToken);

    public Task<byte[]> ReadFileAsync(string containerPath, long maxBytes = 256L << 20, CancellationToken cancellationToken = default) =>
        client.ReadFileAsync(Id, containerPath, maxBytes, cancellationToken);

    public IAsyncEnumerable<LogChunk> LogsAsync(bool follow = false, CancellationToken cancellationToken = default) =>
        client.LogsAsync(Id, follow, cancellationToken);

    public async ValueTask DisposeAsync()
    {
        try
        {
            await client.RemoveAsync(Id, force: true).ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
        {
            // Already removed.
        }
    }
}
