using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Corral.Tests.Images;

/// <summary>
/// A tiny HTTP/1.1 server on loopback (one request per connection) whose routes write raw
/// responses, so a test can send what no well-behaved server would: endless chunked bodies, huge
/// error pages. It counts the bytes it managed to send.
/// </summary>
internal sealed class LoopbackHttpServer : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private long _sent;

    public LoopbackHttpServer(Func<string, Stream, CancellationToken, Task> respond)
    {
        _listener.Start();
        _accepting = AcceptAsync(respond);
    }

    public string Host => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    public long BytesSent => Interlocked.Read(ref _sent);

    public void Count(int bytes) => Interlocked.Add(ref _sent, bytes);

    /// <summary>Writes chunks of filler until the client goes away or <paramref name="limit"/> bytes are out.</summary>
    public async Task EndlessChunkedAsync(Stream stream, string head, long limit, CancellationToken cancellationToken)
    {
        var header = Encoding.ASCII.GetBytes(head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        await stream.WriteAsync(header, cancellationToken);
        var body = Encoding.ASCII.GetBytes(new string(' ', 1 << 16));
        var chunk = Encoding.ASCII.GetBytes($"{body.Length:x}\r\n").Concat(body).Concat("\r\n"u8.ToArray()).ToArray();
        try
        {
            for (long total = 0; total < limit; total += chunk.Length)
            {
                await stream.WriteAsync(chunk, cancellationToken);
                Count(chunk.Length);
            }
        }
        catch (IOException)
        {
            // The client stopped reading: what a bounded reader does.
        }
    }

    public static async Task WriteAsync(Stream stream, string status, string headers, byte[] body, CancellationToken cancellationToken)
    {
        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 {status}\r\n{headers}Content-Length: {body.Length}\r\nConnection: close\r\n\r\n");
        await stream.WriteAsync(head, cancellationToken);
        await stream.WriteAsync(body, cancellationToken);
    }

    private async Task AcceptAsync(Func<string, Stream, CancellationToken, Task> respond)
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(async () =>
            {
                using (client)
                {
                    try
                    {
                        var stream = client.GetStream();
                        var path = await ReadRequestPathAsync(stream, _stop.Token);
                        await respond(path, stream, _stop.Token);
                    }
                    catch (Exception ex) when (ex is IOException or OperationCanceledException or SocketException)
                    {
                    }
                }
            });
        }
    }

    private static async Task<string> ReadRequestPathAsync(Stream stream, CancellationToken cancellationToken)
    {
        var buffer = new List<byte>();
        var one = new byte[1];
        while (await stream.ReadAsync(one, cancellationToken) == 1)
        {
            buffer.Add(one[0]);
            if (buffer.Count >= 4 && buffer[^1] == '\n' && buffer[^2] == '\r' && buffer[^3] == '\n' && buffer[^4] == '\r')
            {
                break;
            }
        }

        var line = Encoding.ASCII.GetString(buffer.ToArray()).Split("\r\n")[0];
        return line.Split(' ') is { Length: >= 2 } parts ? parts[1] : "";
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
