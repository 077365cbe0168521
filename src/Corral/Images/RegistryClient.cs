using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Corral.Common;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Corral.Images;

public sealed class RegistryOptions
{
    /// <summary>Registries spoken to over plain http; loopback registries always are.</summary>
    public IReadOnlyCollection<string> InsecureRegistries { get; set; } = [];

    /// <summary>A docker-style config.json whose `auths` hold credentials; null: $DOCKER_CONFIG/config.json, then ~/.docker/config.json.</summary>
    public string? AuthFile { get; set; }

    /// <summary>Manifests and indexes (chunked or not): more is refused as soon as it arrives.</summary>
    public int MaxManifestBytes { get; set; } = 4 << 20;

    /// <summary>A token service's answer.</summary>
    public int MaxTokenBytes { get; set; } = 1 << 20;

    /// <summary>What is read of an error body (the rest is never read): enough for the message.</summary>
    public int MaxErrorBodyBytes { get; set; } = 64 << 10;
}

/// <summary>A manifest as the registry served it, digest verified.</summary>
public sealed record FetchedManifest(byte[] Body, string MediaType, Digest Digest);

/// <summary>
/// The parts of the OCI distribution API v2 a pull needs: manifests by tag or digest, blobs with
/// resumable downloads, and Bearer token auth (the WWW-Authenticate challenge, anonymous or with
/// credentials from a docker config.json).
/// </summary>
public sealed class RegistryClient(HttpClient http, RegistryOptions options, ILogger? logger = null)
{
    private static readonly string[] ManifestTypes = [MediaTypes.OciManifest, MediaTypes.OciIndex, MediaTypes.DockerManifest, MediaTypes.DockerManifestList];

    private readonly ILogger _logger = logger ?? NullLogger.Instance;
    private readonly Dictionary<string, AuthenticationHeaderValue> _authorization = new(StringComparer.Ordinal);

    public bool IsPlainHttp(string registry)
    {
        var host = registry;
        if (host.StartsWith('['))
        {
            host = host[1..host.IndexOf(']', StringComparison.Ordinal)];
        }
        else if (host.LastIndexOf(':') is var colon and > 0)
        {
            host = host[..colon];
        }

        return host == "localhost" || (IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip)) || options.InsecureRegistries.Contains(registry, StringComparer.OrdinalIgnoreCase);
    }

    public Uri BaseUri(string registry) =>
        new($"{(IsPlainHttp(registry) ? "http" : "https")}://{(registry == ImageReference.DefaultRegistry ? "registry-1.docker.io" : registry)}/v2/");

    public async Task<FetchedManifest> GetManifestAsync(ImageReference image, string reference, CancellationToken cancellationToken)
    {
        var uri = new Uri(BaseUri(image.Registry), $"{image.Repository}/manifests/{reference}");
        using var response = await SendAsync(image, () =>
        {
            var request = new HttpRequestMessage(HttpMethod.Get, uri);
            foreach (var type in ManifestTypes)
            {
                request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(type));
            }

            return request;
        }, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            throw new CorralException($"image {image.Registry}/{image.Repository}:{reference} not found in the registry", 1);
        }

        await EnsureSuccessAsync(response, $"manifest {reference}", cancellationToken).ConfigureAwait(false);
        var body = await ReadBoundedAsync(response, options.MaxManifestBytes, $"manifest {reference}", cancellationToken).ConfigureAwait(false);
        var digest = Digest.Of(body);
        if (Digest.TryParse(reference, out var asked) && asked != digest)
        {
            throw new CorralException($"the registry served a manifest hashing to {digest} for {reference}");
        }

        if (response.Headers.TryGetValues("Docker-Content-Digest", out var values) && values.FirstOrDefault() is { } header && Digest.TryParse(header, out var served) && served != digest)
        {
            throw new CorralException($"manifest {reference}: the registry says {served}, its content hashes to {digest}");
        }

        var mediaType = response.Content.Headers.ContentType?.MediaType;
        if (!MediaTypes.IsIndex(mediaType) && !MediaTypes.IsManifest(mediaType))
        {
            mediaType = JsonSerializer.Deserialize(body, ImageJsonContext.Default.ManifestProbe) is { } probe
                ? probe.MediaType ?? (probe.Manifests is not null ? MediaTypes.OciIndex : MediaTypes.OciManifest)
                : MediaTypes.OciManifest;
        }

        return new FetchedManifest(body, mediaType!, digest);
    }

    /// <summary>
    /// Downloads a blob into the store, continuing a .partial left by an interrupted download with
    /// a Range request; verifies digest and size before it becomes a blob.
    /// </summary>
    public async Task DownloadBlobAsync(ImageReference image, Descriptor descriptor, BlobStore store, Action<long>? progress, CancellationToken cancellationToken)
    {
        var digest = Digest.Parse(descriptor.Digest);
        if (store.Has(digest))
        {
            store.CheckStoredSize(digest, descriptor.Size);
            return;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(store.PartialPathOf(digest))!);
        var partial = store.PartialPathOf(digest);

        // One download of a blob at a time: a second pull (another `run --image`) waits, then finds it stored.
        await using var downloadLock = await LockAsync(store.LockPathOf(digest), cancellationToken).ConfigureAwait(false);
        if (store.Has(digest))
        {
            store.CheckStoredSize(digest, descriptor.Size);
            return;
        }

        var offset = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        if (offset > descriptor.Size)
        {
            File.Delete(partial);
            offset = 0;
        }

        if (offset < descriptor.Size || descriptor.Size == 0)
        {
            var uri = new Uri(BaseUri(image.Registry), $"{image.Repository}/blobs/{digest}");
            using var response = await SendAsync(image, () =>
            {
                var request = new HttpRequestMessage(HttpMethod.Get, uri);
                if (offset > 0)
                {
                    request.Headers.Range = new RangeHeaderValue(offset, null);
                }

                return request;
            }, cancellationToken, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
            await EnsureSuccessAsync(response, $"blob {digest}", cancellationToken).ConfigureAwait(false);
            var resumed = offset > 0 && response.StatusCode == HttpStatusCode.PartialContent;
            if (resumed)
            {
                ImageLog.Resumed(_logger, digest.ToString(), offset);
            }
            else
            {
                offset = 0;
            }

            progress?.Invoke(offset);
            await using var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using var file = new FileStream(partial, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            var buffer = new byte[1 << 16];
            int n;
            try
            {
                while ((n = await body.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    offset += n;
                    if (offset > descriptor.Size)
                    {
                        throw new CorralException($"blob {digest} is larger than the {descriptor.Size} bytes its manifest says");
                    }

                    await file.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                    progress?.Invoke(offset);
                }
            }
            catch (Exception ex) when (ex is IOException or HttpRequestException)
            {
                // The .partial stays: the next pull continues from here with a Range request.
                throw new CorralException(ErrorKind.Unavailable, $"download of blob {digest} was interrupted after {offset} of {descriptor.Size} bytes ({ex.Message}); pull again to resume", inner: ex);
            }
        }

        store.CommitPartial(digest, descriptor.Size);
        ImageLog.BlobStored(_logger, digest.ToString(), descriptor.Size);
    }

    private static async Task<FileStream> LockAsync(string path, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1);
            }
            catch (IOException)
            {
                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private async Task<HttpResponseMessage> SendAsync(ImageReference image, Func<HttpRequestMessage> create, CancellationToken cancellationToken, HttpCompletionOption completion = HttpCompletionOption.ResponseHeadersRead)
    {
        var scope = $"repository:{image.Repository}:pull";
        var key = $"{image.Registry}|{scope}";
        for (var attempt = 0; ; attempt++)
        {
            using var request = create();
            if (_authorization.TryGetValue(key, out var auth))
            {
                request.Headers.Authorization = auth;
            }

            HttpResponseMessage response;
            try
            {
                response = await http.SendAsync(request, completion, cancellationToken).ConfigureAwait(false);
            }
            catch (HttpRequestException ex)
            {
                throw new CorralException($"cannot reach registry {image.Registry}: {ex.Message}", inner: ex);
            }

            ImageLog.RegistryRequest(_logger, request.Method.Method, request.RequestUri!.ToString(), (int)response.StatusCode);
            if (response.StatusCode != HttpStatusCode.Unauthorized || attempt > 0)
            {
                return response;
            }

            var challenge = response.Headers.WwwAuthenticate.FirstOrDefault();
            response.Dispose();
            if (challenge is null)
            {
                throw new CorralException($"registry {image.Registry} refused access without saying how to authenticate");
            }

            _authorization[key] = await AuthorizeAsync(image.Registry, challenge, scope, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<AuthenticationHeaderValue> AuthorizeAsync(string registry, AuthenticationHeaderValue challenge, string scope, CancellationToken cancellationToken)
    {
        var credentials = Credentials(registry);
        if (challenge.Scheme.Equals("Basic", StringComparison.OrdinalIgnoreCase))
        {
            return credentials is { } basic
                ? new AuthenticationHeaderValue("Basic", basic)
                : throw new CorralException($"registry {registry} needs credentials: add them to a docker config.json (auths) and pass --auth-file");
        }

        if (!challenge.Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase))
        {
            throw new CorralException($"registry {registry} asks for unsupported authentication '{challenge.Scheme}'");
        }

        var parameters = ParseChallenge(challenge.Parameter ?? "");
        if (!parameters.TryGetValue("realm", out var realm) || !Uri.TryCreate(realm, UriKind.Absolute, out var realmUri) || realmUri.Scheme is not ("https" or "http"))
        {
            throw new CorralException($"registry {registry} sent a Bearer challenge without a usable realm");
        }

        var query = new StringBuilder();
        if (parameters.TryGetValue("service", out var service))
        {
            query.Append("service=").Append(Uri.EscapeDataString(service));
        }

        var wantedScope = parameters.GetValueOrDefault("scope") ?? scope;
        query.Append(query.Length > 0 ? "&" : "").Append("scope=").Append(Uri.EscapeDataString(wantedScope));
        var tokenUri = new UriBuilder(realmUri) { Query = query.ToString() }.Uri;
        using var request = new HttpRequestMessage(HttpMethod.Get, tokenUri);
        if (credentials is { } basicCredentials)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Basic", basicCredentials);
        }

        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
        {
            throw new CorralException($"registry {registry}: the token service refused {(credentials is null ? "anonymous access" : "the credentials")} ({(int)response.StatusCode})");
        }

        await EnsureSuccessAsync(response, "token", cancellationToken).ConfigureAwait(false);
        TokenResponse? token;
        try
        {
            token = JsonSerializer.Deserialize(await ReadBoundedAsync(response, options.MaxTokenBytes, "token", cancellationToken).ConfigureAwait(false), ImageJsonContext.Default.TokenResponse);
        }
        catch (JsonException ex)
        {
            throw CorralException.Invalid($"registry {registry}: the token service answered with invalid JSON: {ex.Message}");
        }

        var value = token?.Token ?? token?.AccessToken;
        if (string.IsNullOrEmpty(value))
        {
            throw new CorralException($"registry {registry}: the token service answered without a token");
        }

        ImageLog.TokenFetched(_logger, realmUri.GetLeftPart(UriPartial.Path), wantedScope);
        return new AuthenticationHeaderValue("Bearer", value);
    }

    /// <summary>base64(user:password) for <paramref name="registry"/> from the docker config, or null.</summary>
    internal string? Credentials(string registry)
    {
        var path = options.AuthFile
            ?? (Environment.GetEnvironmentVariable("DOCKER_CONFIG") is { } dockerConfig ? Path.Combine(dockerConfig, "config.json") : null)
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".docker", "config.json");
        if (!File.Exists(path))
        {
            if (options.AuthFile is not null)
            {
                throw new CorralException($"auth file '{path}' does not exist");
            }

            return null;
        }

        DockerConfigFile? config;
        try
        {
            config = JsonSerializer.Deserialize(File.ReadAllBytes(path), ImageJsonContext.Default.DockerConfigFile);
        }
        catch (JsonException ex)
        {
            throw new CorralException($"auth file '{path}' is not valid JSON: {ex.Message}");
        }

        foreach (var (key, auth) in config?.Auths ?? [])
        {
            var host = key.Replace("https://", "", StringComparison.Ordinal).Replace("http://", "", StringComparison.Ordinal).TrimEnd('/');
            host = host.Split('/')[0];
            if (host == registry || (registry == ImageReference.DefaultRegistry && host is "index.docker.io" or "registry-1.docker.io"))
            {
                if (!string.IsNullOrEmpty(auth.Auth))
                {
                    return auth.Auth;
                }

                if (auth.Username is { } user && auth.Password is { } password)
                {
                    return Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}"));
                }
            }
        }

        return null;
    }

    internal static Dictionary<string, string> ParseChallenge(string parameter)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var i = 0;
        while (i < parameter.Length)
        {
            while (i < parameter.Length && (parameter[i] == ',' || char.IsWhiteSpace(parameter[i])))
            {
                i++;
            }

            var eq = parameter.IndexOf('=', i);
            if (eq < 0)
            {
                break;
            }

            var name = parameter[i..eq].Trim();
            i = eq + 1;
            string value;
            if (i < parameter.Length && parameter[i] == '"')
            {
                var end = parameter.IndexOf('"', i + 1);
                end = end < 0 ? parameter.Length : end;
                value = parameter[(i + 1)..end];
                i = end + 1;
            }
            else
            {
                var end = parameter.IndexOf(',', i);
                end = end < 0 ? parameter.Length : end;
                value = parameter[i..end].Trim();
                i = end;
            }

            result[name] = value;
        }

        return result;
    }

    /// <summary>
    /// The body, read into a buffer that never grows past <paramref name="max"/> bytes whether the
    /// response is chunked or has a Content-Length: refused as soon as it passes the cap.
    /// </summary>
    private static async Task<byte[]> ReadBoundedAsync(HttpResponseMessage response, int max, string what, CancellationToken cancellationToken)
    {
        if (response.Content.Headers.ContentLength is { } length && length > max)
        {
            throw CorralException.Invalid($"{what} is too large ({length} bytes, at most {max} are accepted)");
        }

        var buffer = await ReadPrefixAsync(response, max + 1, cancellationToken).ConfigureAwait(false);
        return buffer.Length > max
            ? throw CorralException.Invalid($"{what} is too large (more than the {max} bytes accepted)")
            : buffer;
    }

    /// <summary>At most <paramref name="max"/> bytes of the body; the rest is never read.</summary>
    private static async Task<byte[]> ReadPrefixAsync(HttpResponseMessage response, int max, CancellationToken cancellationToken)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        using var buffer = new MemoryStream();
        var chunk = new byte[Math.Min(max, 1 << 16)];
        while (buffer.Length < max)
        {
            int n;
            try
            {
                n = await stream.ReadAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, max - buffer.Length)), cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or HttpRequestException)
            {
                throw CorralException.Host($"the registry's answer was cut off: {ex.Message}", ex);
            }

            if (n == 0)
            {
                break;
            }

            buffer.Write(chunk, 0, n);
        }

        return buffer.ToArray();
    }

    private async Task EnsureSuccessAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        string text;
        try
        {
            text = Encoding.UTF8.GetString(await ReadPrefixAsync(response, options.MaxErrorBodyBytes, cancellationToken).ConfigureAwait(false));
        }
        catch (CorralException)
        {
            text = "";
        }

        text = text.Length > 200 ? text[..200] : text;
        throw new CorralException($"registry error for {what}: {(int)response.StatusCode} {response.ReasonPhrase} {text.ReplaceLineEndings(" ").Trim()}");
    }
}
