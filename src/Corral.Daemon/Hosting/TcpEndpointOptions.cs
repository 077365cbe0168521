using System.Globalization;
using System.Net;
using Corral.Common;

namespace Corral.Daemon.Hosting;

/// <summary>`--listen HOST:PORT --token-file F`: the API over TCP (h2c), every call with the bearer token.</summary>
public sealed class TcpEndpointOptions
{
    public required IPEndPoint Endpoint { get; init; }

    /// <summary>What callers send as `authorization: Bearer TOKEN`.</summary>
    public required string Token { get; init; }

    /// <summary>Validates the pair at start-up: no listener without a token, no token anyone else may read.</summary>
    public static TcpEndpointOptions? From(string? listen, string? tokenFile)
    {
        if (listen is null)
        {
            return tokenFile is null ? null : throw new CorralException("--token-file needs --listen HOST:PORT: the Unix socket takes no token");
        }

        if (tokenFile is null)
        {
            throw new CorralException($"--listen {listen} needs --token-file F: the TCP endpoint is only served with a bearer token");
        }

        return new TcpEndpointOptions { Endpoint = ParseEndpoint(listen), Token = ReadToken(tokenFile) };
    }

    /// <summary>HOST:PORT with an IP address or localhost as the host ([::1]:PORT for IPv6).</summary>
    public static IPEndPoint ParseEndpoint(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var colon = text.LastIndexOf(':');
        if (colon > 0 && text[..colon] == "localhost")
        {
            text = "127.0.0.1" + text[colon..];
            colon = text.LastIndexOf(':');
        }

        if (colon <= 0
            || !IPEndPoint.TryParse(text, out var endpoint)
            || !int.TryParse(text[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var port)
            || port is < 1 or > 65535)
        {
            throw new CorralException($"invalid --listen '{text}': use HOST:PORT with an IP address or localhost, e.g. 127.0.0.1:7070 or [::]:7070");
        }

        return endpoint;
    }

    /// <summary>The token file's first line; refused when missing, empty, or readable by group or others.</summary>
    public static string ReadToken(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new CorralException($"--token-file {path}: no such file");
        }

        var mode = File.GetUnixFileMode(path);
        if ((mode & (UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite)) != 0)
        {
            throw new CorralException($"--token-file {path}: readable or writable by group or others (mode {Convert.ToString((int)mode, 8)}); chmod 600 it");
        }

        var token = File.ReadAllText(path).Split('\n', 2)[0].Trim();
        if (token.Length == 0)
        {
            throw new CorralException($"--token-file {path}: empty; put the token on its first line");
        }

        return token;
    }
}
