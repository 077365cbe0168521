using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Images;

/// <summary>
/// A registry with `auth: token`: a small HttpListener token service issues RS256 JWTs (x5c header,
/// the registry trusts the self-signed certificate) to one user; Corral follows the Bearer challenge.
/// </summary>
public sealed class TokenAuthFixture : IAsyncLifetime
{
    public const string User = "corral";
    public const string Password = "s3cret";
    private const string Issuer = "corral-test-issuer";
    private const string Service = "corral-test-registry";

    private readonly RSA _key = RSA.Create(2048);
    private readonly HttpListener _listener = new();
    private X509Certificate2? _certificate;
    private Task? _serving;
    private LocalRegistry? _registry;

    public string WorkDir { get; } = Directory.CreateTempSubdirectory("corral-token-e2e-").FullName;

    public LocalRegistry Registry => _registry!;

    public int TokenRequests;

    public int RefusedRequests;

    public string Ref => $"{Registry.Host}/private/debian:1";

    public async ValueTask InitializeAsync()
    {
        try
        {
            var request = new CertificateRequest("CN=corral test token issuer", _key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            _certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
            var bundle = Path.Combine(WorkDir, "root.pem");
            await File.WriteAllTextAsync(bundle, _certificate.ExportCertificatePem());

            var tokenPort = LocalRegistry.FreePort();
            _listener.Prefixes.Add($"http://127.0.0.1:{tokenPort}/");
            _listener.Start();
            _serving = ServeAsync();
            _registry = await LocalRegistry.StartAsync($"""
                auth:
                  token:
                    realm: http://127.0.0.1:{tokenPort}/token
                    service: {Service}
                    issuer: {Issuer}
                    rootcertbundle: {bundle}
                """);

            var layouts = Path.Combine(WorkDir, "layouts");
            Directory.CreateDirectory(layouts);
            await TestImages.BuildAsync(layouts);
            await Registry.PushAsync(Path.Combine(layouts, "debian"), "1", "private/debian:1", $"{User}:{Password}");
        }
        catch
        {
            await DisposeAsync();
            throw;
        }
    }

    public string WriteAuthFile(string password)
    {
        var path = Path.Combine(WorkDir, $"auth-{Guid.NewGuid():N}.json");
        var auth = Convert.ToBase64String(Encoding.UTF8.GetBytes($"{User}:{password}"));
        File.WriteAllText(path, "{\"auths\":{\"" + Registry.Host + "\":{\"auth\":\"" + auth + "\"}}}");
        return path;
    }

    private async Task ServeAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception ex) when (ex is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            Interlocked.Increment(ref TokenRequests);
            using var response = context.Response;
            var header = context.Request.Headers["Authorization"];
            var expected = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{User}:{Password}"));
            if (header != expected)
            {
                Interlocked.Increment(ref RefusedRequests);
                response.StatusCode = 401;
                continue;
            }

            var scopes = (context.Request.QueryString.GetValues("scope") ?? []).SelectMany(s => s.Split(' '));
            var access = scopes.Select(s => s.Split(':')).Where(p => p.Length == 3)
                .Select(p => new Dictionary<string, object> { ["type"] = p[0], ["name"] = p[1], ["actions"] = p[2].Split(',') }).ToList();
            var body = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new Dictionary<string, string> { ["token"] = Token(access) }));
            response.ContentType = "application/json";
            await response.OutputStream.WriteAsync(body);
        }
    }

    private string Token(List<Dictionary<string, object>> access)
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var header = new Dictionary<string, object> { ["alg"] = "RS256", ["typ"] = "JWT", ["x5c"] = new[] { Convert.ToBase64String(_certificate!.RawData) } };
        var claims = new Dictionary<string, object>
        {
            ["iss"] = Issuer,
            ["sub"] = User,
            ["aud"] = Service,
            ["exp"] = now + 300,
            ["nbf"] = now - 10,
            ["iat"] = now,
            ["jti"] = Guid.NewGuid().ToString("N"),
            ["access"] = access,
        };
        var signingInput = $"{Base64Url(JsonSerializer.SerializeToUtf8Bytes(header))}.{Base64Url(JsonSerializer.SerializeToUtf8Bytes(claims))}";
        var signature = _key.SignData(Encoding.ASCII.GetBytes(signingInput), HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        return $"{signingInput}.{Base64Url(signature)}";
    }

    private static string Base64Url(byte[] data) => Convert.ToBase64String(data).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public async ValueTask DisposeAsync()
    {
        if (_listener.IsListening)
        {
            _listener.Stop();
        }

        _listener.Close();
        if (_serving is not null)
        {
            await _serving;
        }

        if (_registry is not null)
        {
            await _registry.DisposeAsync();
        }

        _certificate?.Dispose();
        _key.Dispose();
        if (Directory.Exists(WorkDir))
        {
            Directory.Delete(WorkDir, recursive: true);
        }
    }
}

[Collection(ImageTestsCollection.Name)]
public sealed class TokenAuthTests(TokenAuthFixture fixture) : IClassFixture<TokenAuthFixture>
{
    [Fact]
    public async Task PullsWithABearerTokenFromTheDockerConfigCredentials()
    {
        var data = Path.Combine(fixture.WorkDir, "data-ok");
        var before = fixture.TokenRequests;

        var pull = await CorralProcess.RunAsync(["--data-dir", data, "pull", "--auth-file", fixture.WriteAuthFile(TokenAuthFixture.Password), fixture.Ref], TimeSpan.FromMinutes(3));

        pull.ExitCode.ShouldBe(0, pull.Stderr);
        pull.Stdout.ShouldStartWith(fixture.Ref + " sha256:");
        fixture.TokenRequests.ShouldBeGreaterThan(before);
    }

    [Fact]
    public async Task WrongOrMissingCredentialsFailWithOneLine()
    {
        var data = Path.Combine(fixture.WorkDir, "data-bad");

        var wrong = await CorralProcess.RunAsync(["--data-dir", data, "pull", "--auth-file", fixture.WriteAuthFile("wrong"), fixture.Ref]);
        var anonymous = await CorralProcess.RunAsync(["--data-dir", data, "pull", fixture.Ref]);

        wrong.ExitCode.ShouldBe(125);
        wrong.Stderr.Trim().Split('\n')[^1].ShouldBe($"corral: registry {fixture.Registry.Host}: the token service refused the credentials (401)");
        anonymous.ExitCode.ShouldBe(125);
        anonymous.Stderr.Trim().Split('\n')[^1].ShouldBe($"corral: registry {fixture.Registry.Host}: the token service refused anonymous access (401)");
        Directory.Exists(Path.Combine(data, "images", "layers")).ShouldBeFalse();
    }
}
