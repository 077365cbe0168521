using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Corral.Common;
using Corral.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Images;

/// <summary>The pull logic against an in-memory registry (the real one is in the integration tests).</summary>
public sealed class ImagePullerTests : IDisposable
{
    private readonly TempDir _temp = new();
    private readonly FakeRegistry _registry = new();

    public void Dispose() => _temp.Dispose();

    private (ImagePuller Puller, ImageStore Store) Create()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var client = new RegistryClient(new HttpClient(_registry), new RegistryOptions());
        return (new ImagePuller(store, client), store);
    }

    private (byte[] Layer, Digest Manifest) PublishImage(string mediaType = MediaTypes.OciManifest)
    {
        var tar = new TarBuilder().File("etc/hello", "from the registry").Tar();
        var layer = TarBuilder.Compress(tar);
        var config = JsonSerializer.SerializeToUtf8Bytes(new ImageConfigFile
        {
            Os = "linux",
            Architecture = "amd64",
            Rootfs = new RootfsDiffs { Type = "layers", DiffIds = [Digest.Of(tar).ToString()] },
        }, ImageJsonContext.Default.ImageConfigFile);
        var manifest = JsonSerializer.SerializeToUtf8Bytes(new ImageManifest
        {
            SchemaVersion = 2,
            MediaType = mediaType,
            Config = new Descriptor { MediaType = MediaTypes.OciConfig, Digest = Digest.Of(config).ToString(), Size = config.Length },
            Layers = [new Descriptor { MediaType = MediaTypes.OciLayerGzip, Digest = Digest.Of(layer).ToString(), Size = layer.Length }],
        }, ImageJsonContext.Default.ImageManifest);
        _registry.Blobs[Digest.Of(config).ToString()] = config;
        _registry.Blobs[Digest.Of(layer).ToString()] = layer;
        _registry.Manifests[Digest.Of(manifest).ToString()] = (manifest, mediaType);
        return (layer, Digest.Of(manifest));
    }

    [Fact]
    public async Task PullsTheLinuxAmd64ImageOutOfAManifestList()
    {
        var (_, manifest) = PublishImage(MediaTypes.DockerManifest);
        var list = JsonSerializer.SerializeToUtf8Bytes(new ImageIndex
        {
            SchemaVersion = 2,
            MediaType = MediaTypes.DockerManifestList,
            Manifests =
            [
                new Descriptor { MediaType = MediaTypes.DockerManifest, Digest = "sha256:" + new string('1', 64), Size = 10, Platform = new Platform { Os = "linux", Architecture = "arm64" } },
                new Descriptor { MediaType = MediaTypes.DockerManifest, Digest = manifest.ToString(), Size = _registry.Manifests[manifest.ToString()].Body.Length, Platform = new Platform { Os = "linux", Architecture = "amd64" } },
            ],
        }, ImageJsonContext.Default.ImageIndex);
        _registry.Manifests["1"] = (list, MediaTypes.DockerManifestList);
        var (puller, store) = Create();

        var image = await puller.PullAsync(ImageReference.Parse("registry.example/test/app:1"), cancellationToken: TestContext.Current.CancellationToken);

        image.ManifestDigest.ShouldBe(manifest);
        store.ReadRefs().Refs["registry.example/test/app:1"].Manifest.ShouldBe(manifest.ToString());
        var layers = await store.EnsureLayersAsync(image, TestContext.Current.CancellationToken);
        File.ReadAllText(Path.Combine(layers[0], "etc/hello")).ShouldBe("from the registry");
        _registry.Requests.ShouldAllBe(r => r.StartsWith("https://registry.example/v2/", StringComparison.Ordinal));
        _registry.Requests.ShouldNotContain(r => r.Contains(new string('1', 64), StringComparison.Ordinal));
    }

    [Fact]
    public async Task ContinuesAPartialBlobWithARangeRequest()
    {
        var (layer, manifest) = PublishImage();
        _registry.Manifests["1"] = _registry.Manifests[manifest.ToString()];
        var (puller, store) = Create();
        var digest = Digest.Of(layer);
        Directory.CreateDirectory(Path.GetDirectoryName(store.Blobs.PartialPathOf(digest))!);
        File.WriteAllBytes(store.Blobs.PartialPathOf(digest), layer[..(layer.Length / 2)]);

        await puller.PullAsync(ImageReference.Parse("registry.example/test/app:1"), cancellationToken: TestContext.Current.CancellationToken);

        _registry.Ranges.ShouldBe([$"bytes={layer.Length / 2}-"]);
        store.Blobs.Has(digest).ShouldBeTrue();
        File.Exists(store.Blobs.PartialPathOf(digest)).ShouldBeFalse();
    }

    [Fact]
    public async Task ARegistryServingWrongBytesIsRefusedAndNothingIsStored()
    {
        var (layer, manifest) = PublishImage();
        _registry.Manifests["1"] = _registry.Manifests[manifest.ToString()];
        var tampered = layer.ToArray();
        tampered[^10] ^= 0xff;
        _registry.Blobs[Digest.Of(layer).ToString()] = tampered;
        var (puller, store) = Create();

        var ex = await Should.ThrowAsync<CorralException>(() => puller.PullAsync(ImageReference.Parse("registry.example/test/app:1"), cancellationToken: TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("failed verification");
        store.Blobs.Has(Digest.Of(layer)).ShouldBeFalse();
        File.Exists(store.Blobs.PartialPathOf(Digest.Of(layer))).ShouldBeFalse();
        store.ReadRefs().Refs.ShouldBeEmpty();
    }

    [Fact]
    public async Task AManifestNotMatchingTheDigestAskedForIsRefused()
    {
        var (_, manifest) = PublishImage();
        var other = "sha256:" + new string('e', 64);
        _registry.Manifests[other] = _registry.Manifests[manifest.ToString()];
        var (puller, _) = Create();

        var ex = await Should.ThrowAsync<CorralException>(() => puller.PullAsync(ImageReference.Parse($"registry.example/test/app@{other}"), cancellationToken: TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("hashing to");
    }

    [Fact]
    public async Task FollowsABearerChallengeAnonymously()
    {
        var (_, manifest) = PublishImage();
        _registry.Manifests["1"] = _registry.Manifests[manifest.ToString()];
        _registry.RequireToken = "tok-123";
        var (puller, _) = Create();

        await puller.PullAsync(ImageReference.Parse("registry.example/test/app:1"), cancellationToken: TestContext.Current.CancellationToken);

        _registry.Requests.ShouldContain("https://auth.example/token?service=registry.example&scope=repository%3Atest%2Fapp%3Apull");
        _registry.Requests.Count(r => r.StartsWith("https://auth.example", StringComparison.Ordinal)).ShouldBe(1);
    }

    private sealed class FakeRegistry : HttpMessageHandler
    {
        public Dictionary<string, byte[]> Blobs { get; } = [];

        public Dictionary<string, (byte[] Body, string MediaType)> Manifests { get; } = [];

        public List<string> Requests { get; } = [];

        public List<string> Ranges { get; } = [];

        public string? RequireToken { get; set; }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var uri = request.RequestUri!;
            lock (Requests)
            {
                Requests.Add(uri.ToString());
            }

            if (uri.Host == "auth.example")
            {
                return Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent($"{{\"token\":\"{RequireToken}\"}}") });
            }

            if (RequireToken is not null && request.Headers.Authorization?.ToString() != $"Bearer {RequireToken}")
            {
                var challenge = new HttpResponseMessage(HttpStatusCode.Unauthorized);
                challenge.Headers.WwwAuthenticate.Add(new AuthenticationHeaderValue("Bearer", "realm=\"https://auth.example/token\",service=\"registry.example\""));
                return Task.FromResult(challenge);
            }

            var path = uri.AbsolutePath;
            var last = path[(path.LastIndexOf('/') + 1)..];
            if (path.Contains("/manifests/", StringComparison.Ordinal))
            {
                if (!Manifests.TryGetValue(Uri.UnescapeDataString(last), out var manifest))
                {
                    return Task.FromResult(new HttpResponseMessage(HttpStatusCode.NotFound));
                }

                var content = new ByteArrayContent(manifest.Body);
                content.Headers.ContentType = new MediaTypeHeaderValue(manifest.MediaType);
                return Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = content });
            }

            if (!Blobs.TryGetValue(Uri.UnescapeDataString(last), out var blob))
            {
                return Task.FromResult(new HttpResponseMessage(HttpStatusCode.NotFound));
            }

            if (request.Headers.Range is { } range)
            {
                Ranges.Add(range.ToString());
                var from = (int)range.Ranges.First().From!.Value;
                return Task.FromResult(new HttpResponseMessage(HttpStatusCode.PartialContent) { Content = new ByteArrayContent(blob[from..]) });
            }

            return Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(blob) });
        }
    }
}
