using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace Corral.Daemon.Hosting;

/// <summary>
/// Calls that came over TCP must carry `authorization: Bearer TOKEN`; others get UNAUTHENTICATED
/// before any service sees them. The Unix socket is not checked: its file mode already admits only root.
/// </summary>
internal sealed class BearerTokenMiddleware(RequestDelegate next, TcpEndpointOptions tcp)
{
    private const string Scheme = "Bearer ";

    // Compared as hashes: equal length whatever was sent, so the comparison time tells nothing.
    private readonly byte[] _expected = SHA256.HashData(Encoding.UTF8.GetBytes(tcp.Token));

    public Task InvokeAsync(HttpContext context)
    {
        // A Unix socket connection has no IP address.
        if (context.Connection.LocalIpAddress is null)
        {
            return next(context);
        }

        string header = context.Request.Headers.Authorization.ToString();
        if (!header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
        {
            return Refuse(context, "missing bearer token: send `authorization: Bearer TOKEN` (corral --token-file F, or $CORRAL_TOKEN)");
        }

        var sent = SHA256.HashData(Encoding.UTF8.GetBytes(header[Scheme.Length..].Trim()));
        return CryptographicOperations.FixedTimeEquals(sent, _expected)
            ? next(context)
            : Refuse(context, "invalid bearer token: it does not match the daemon's --token-file");
    }

    /// <summary>A trailers-only gRPC answer: HTTP 200 with grpc-status UNAUTHENTICATED (16).</summary>
    private static Task Refuse(HttpContext context, string message)
    {
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/grpc";
        context.Response.Headers["grpc-status"] = "16";
        context.Response.Headers["grpc-message"] = Uri.EscapeDataString(message);
        return Task.CompletedTask;
    }
}
