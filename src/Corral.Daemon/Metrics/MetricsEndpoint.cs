using System.Net;
using Corral.Common;
using Corral.Daemon.Hosting;
using Microsoft.AspNetCore.Http;

namespace Corral.Daemon.Metrics;

/// <summary>
/// `--metrics-listen HOST:PORT`: `/metrics` over plain HTTP/1.1, without the bearer token (Prometheus
/// scrapes carry none). A loopback address by default: any other needs `--metrics-allow-remote`,
/// since whoever reaches the port learns the host's load and sandbox counts.
/// </summary>
public static class MetricsEndpoint
{
    public static IPEndPoint? From(string? listen, bool allowRemote)
    {
        if (listen is null)
        {
            return allowRemote ? throw CorralException.Invalid("--metrics-allow-remote needs --metrics-listen HOST:PORT") : null;
        }

        IPEndPoint endpoint;
        try
        {
            endpoint = TcpEndpointOptions.ParseEndpoint(listen);
        }
        catch (CorralException)
        {
            throw CorralException.Invalid($"invalid --metrics-listen '{listen}': use HOST:PORT with an IP address or localhost, e.g. 127.0.0.1:9464");
        }

        if (!IPAddress.IsLoopback(endpoint.Address) && !allowRemote)
        {
            throw CorralException.Invalid($"--metrics-listen {listen} is not a loopback address: /metrics has no token, so serving it beyond this host needs --metrics-allow-remote");
        }

        return endpoint;
    }

    /// <summary>A connection that came in on the metrics endpoint (its own port; the Unix socket has no IP address).</summary>
    public static bool IsMetricsConnection(HttpContext context, IPEndPoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(endpoint);
        return context.Connection.LocalIpAddress is not null && context.Connection.LocalPort == endpoint.Port;
    }

    public static async Task AnswerAsync(HttpContext context, DaemonMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(metrics);
        if (context.Request.Path != "/metrics")
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }

        if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
        {
            context.Response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            context.Response.Headers.Allow = "GET, HEAD";
            return;
        }

        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        using var body = new MemoryStream();
        await metrics.WriteAsync(body, context.RequestAborted).ConfigureAwait(false);
        context.Response.ContentLength = body.Length;
        if (HttpMethods.IsGet(context.Request.Method))
        {
            body.Position = 0;
            await body.CopyToAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
        }
    }
}
