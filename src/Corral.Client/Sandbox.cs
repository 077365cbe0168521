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

    public IAsyncEnumerable<LogChunk> LogsAsync(bool follow = false, CancellationToken cancellationToken = default) =>
        client.LogsAsync(Id, follow, cancellationToken);

    public async ValueTask DisposeAsync()
    {
        try
        {
            var info = await client.InspectAsync(Id).ConfigureAwait(false);
            if (info.State is SandboxState.Created or SandboxState.Running)
            {
                try
                {
                    await client.KillAsync(Id, "KILL", TimeSpan.Zero).ConfigureAwait(false);
                }
                catch (RpcException ex) when (ex.StatusCode == StatusCode.FailedPrecondition)
                {
                    // It ended meanwhile.
                }

                try
                {
                    await client.WaitAsync(Id).ConfigureAwait(false);
                }
                catch (RpcException ex) when (ex.StatusCode == StatusCode.Aborted)
                {
                    // It never started; removing it is all that is left.
                }
            }

            await client.RemoveAsync(Id).ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
        {
            // Already removed.
        }
    }
}
