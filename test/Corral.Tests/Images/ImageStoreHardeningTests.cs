using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Corral.Common;
using Corral.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Images;

/// <summary>Issue #10, items 3 and 4: bounded registry reads, unpack caps per image, and failed imports and pulls that leave nothing.</summary>
public sealed class ImageStoreHardeningTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private ImageStore Store() => new(_temp.Combine("data"));

    private string Layout(string name, params byte[][] layers)
    {
        var dir = _temp.Combine(name);
        var files = layers.Select((l, i) =>
        {
            var path = _temp.Combine($"{name}-layer{i}.tar.gz");
            File.WriteAllBytes(path, TarBuilder.Compress(l));
            return path;
        }).ToList();
        OciLayoutWriter.Write(dir, "v1", files, new ContainerConfig { Cmd = ["sh"] });
        return dir;
    }

    private static void NothingLeft(ImageStore store)
    {
        store.ReadRefs().Refs.ShouldBeEmpty();
        store.Blobs.List().ShouldBeEmpty();
        if (Directory.Exists(store.LayersDir))
        {
            Directory.GetFileSystemEntries(store.LayersDir).ShouldBeEmpty();
        }
    }

    [Fact]
    public async Task ARefusedLayoutCreatesNoTagAndKeepsNoBlobOrLayer()
    {
        var store = Store();
        var good = new TarBuilder().File("bin/sh", "shell").Tar();
        var hostile = new TarBuilder().Symlink("a", "/").Symlink("a/a/a/a/esc", "../../../../etc/shadow").Tar();
        var dir = Layout("bad", good, hostile);

        var ex = await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(dir, "localhost/bad:1", TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("refusing layer");
        store.Find("localhost/bad:1").ShouldBeNull();
        NothingLeft(store);
    }

    [Fact]
    public async Task ARefusedImportKeepsWhatAnotherImageUses()
    {
        var store = Store();
        var shared = new TarBuilder().File("bin/sh", "shell").Tar();
        await new ImageImporter(store).ImportAsync(Layout("ok", shared), "localhost/ok:1", TestContext.Current.CancellationToken);
        var before = store.Blobs.List().ToHashSet();

        await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(Layout("bad", shared, new TarBuilder().Symlink("esc", "../x").Tar()), "localhost/bad:1", TestContext.Current.CancellationToken));

        store.ReadRefs().Refs.Keys.ShouldBe(["localhost/ok:1"]);
        store.Blobs.List().ToHashSet().SetEquals(before).ShouldBeTrue();
        Directory.GetDirectories(store.LayersDir).Length.ShouldBe(1);
        var layers = await store.EnsureLayersAsync(store.Find("localhost/ok:1")!, TestContext.Current.CancellationToken);
        File.ReadAllText(Path.Combine(layers[0], "bin/sh")).ShouldBe("shell");
    }

    [Fact]
    public async Task AnImageOverTheImageCapIsRefusedAndLeavesNothing()
    {
        var store = Store();
        store.Limits = UnpackLimits.Default with { MaxImageBytes = 3 << 20 };
        var dir = Layout("big", new TarBuilder().File("one", Random(2 << 20)).Tar(), new TarBuilder().File("two", Random(2 << 20)).Tar());

        var ex = await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(dir, "localhost/big:1", TestContext.Current.CancellationToken));

        ex.Kind.ShouldBe(ErrorKind.ResourceExhausted);
        ex.Message.ShouldContain("--max-image-size");
        NothingLeft(store);
    }

    [Fact]
    public async Task TheImageCapCountsLayersAlreadyUnpacked()
    {
        var store = Store();
        var first = new TarBuilder().File("one", Random(2 << 20)).Tar();
        await new ImageImporter(store).ImportAsync(Layout("small", first), "localhost/small:1", TestContext.Current.CancellationToken);
        store.Limits = UnpackLimits.Default with { MaxImageBytes = 3 << 20 };

        var ex = await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(Layout("big", new TarBuilder().File("two", Random(2 << 20)).Tar(), first), "localhost/big:1", TestContext.Current.CancellationToken));

        ex.Kind.ShouldBe(ErrorKind.ResourceExhausted);
        store.ReadRefs().Refs.Keys.ShouldBe(["localhost/small:1"]);
    }

    [Fact]
    public async Task ADescriptorWhoseSizeDoesNotMatchAStoredBlobIsRefused()
    {
        var store = Store();
        var dir = Layout("ok", new TarBuilder().File("x", "y").Tar());
        await new ImageImporter(store).ImportAsync(dir, "localhost/ok:1", TestContext.Current.CancellationToken);

        // The same layer digest, with a size one byte larger in a new manifest.
        var index = JsonSerializer.Deserialize(File.ReadAllBytes(Path.Combine(dir, "index.json")), ImageJsonContext.Default.ImageIndex)!;
        var manifestPath = Path.Combine(dir, "blobs", "sha256", Digest.Parse(index.Manifests[0].Digest).Hex);
        var manifest = JsonSerializer.Deserialize(File.ReadAllBytes(manifestPath), ImageJsonContext.Default.ImageManifest)!;
        manifest.Layers[0] = new Descriptor { MediaType = manifest.Layers[0].MediaType, Digest = manifest.Layers[0].Digest, Size = manifest.Layers[0].Size + 1 };
        var bytes = JsonSerializer.SerializeToUtf8Bytes(manifest, ImageJsonContext.Default.ImageManifest);
        File.WriteAllBytes(Path.Combine(dir, "blobs", "sha256", Digest.Of(bytes).Hex), bytes);
        index.Manifests[0] = new Descriptor { MediaType = index.Manifests[0].MediaType, Digest = Digest.Of(bytes).ToString(), Size = bytes.Length };
        File.WriteAllBytes(Path.Combine(dir, "index.json"), JsonSerializer.SerializeToUtf8Bytes(index, ImageJsonContext.Default.ImageIndex));

        var ex = await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(dir, "localhost/lying:1", TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("is stored with");
        store.ReadRefs().Refs.Keys.ShouldBe(["localhost/ok:1"]);
        store.Blobs.Has(Digest.Of(bytes)).ShouldBeFalse();
    }

    [Fact]
    public async Task APullOfAHostileLayerLeavesNothing()
    {
        var layer = TarBuilder.Compress(new TarBuilder().File("ok", "1").Dir("x/y/").Symlink("x/y/up", "../..").Symlink("x/y/up/esc", "../etc").Tar());
        var registry = Registry(layer, out var host);
        await using (registry)
        {
            var store = Store();
            var puller = new ImagePuller(store, new RegistryClient(new HttpClient(), new RegistryOptions()));

            var ex = await Should.ThrowAsync<CorralException>(() => puller.PullAsync(ImageReference.Parse($"{host}/test/h:1"), cancellationToken: TestContext.Current.CancellationToken));

            ex.Message.ShouldContain("outside the layer");
            NothingLeft(store);
        }
    }

    [Fact]
    public async Task APulledLayerOverTheRatioCapIsRefusedEarly()
    {
        var bomb = TarBuilder.GzipZeros("zeros", 512L << 20);
        var registry = Registry(bomb, out var host);
        await using (registry)
        {
            var store = Store();
            store.Limits = UnpackLimits.Default with { RatioFloorBytes = 1 << 20, MaxRatio = 8 };
            var puller = new ImagePuller(store, new RegistryClient(new HttpClient(), new RegistryOptions()));

            var ex = await Should.ThrowAsync<CorralException>(() => puller.PullAsync(ImageReference.Parse($"{host}/test/h:1"), cancellationToken: TestContext.Current.CancellationToken));

            ex.Kind.ShouldBe(ErrorKind.ResourceExhausted);
            ex.Message.ShouldContain(UnpackLimits.RatioVariable);
            NothingLeft(store);
        }
    }

    public static TheoryData<string, string> Endless => new()
    {
        { "manifest", "manifest 1 is too large" },
        { "error", "registry error for manifest 1: 500" },
        { "token", "token is too large" },
    };

    [Theory]
    [MemberData(nameof(Endless))]
    public async Task AnEndlessChunkedResponseIsReadOnlyUpToItsCap(string what, string error)
    {
        LoopbackHttpServer? server = null;
        server = new LoopbackHttpServer(async (path, stream, ct) =>
        {
            if (what == "token" && path.StartsWith("/v2/", StringComparison.Ordinal))
            {
                await LoopbackHttpServer.WriteAsync(stream, "401 Unauthorized", $"WWW-Authenticate: Bearer realm=\"http://{server!.Host}/token\",service=\"x\"\r\n", [], ct);
                return;
            }

            var head = what == "error" ? "HTTP/1.1 500 Internal Server Error\r\n" : "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n";
            await server!.EndlessChunkedAsync(stream, head, 400L << 20, ct);
        });
        await using (server)
        {
            var client = new RegistryClient(new HttpClient(), new RegistryOptions());

            var ex = await Should.ThrowAsync<CorralException>(() => client.GetManifestAsync(ImageReference.Parse($"{server.Host}/test/big:1"), "1", TestContext.Current.CancellationToken));

            ex.Message.ShouldContain(error);
            ex.Message.ShouldNotContain("\n");

            // The server stops when the client closes: what it got out is the cap plus socket buffers, not 400 MB.
            await Task.Delay(500, TestContext.Current.CancellationToken);
            server.BytesSent.ShouldBeLessThan(32L << 20);
        }
    }

    [Fact]
    public async Task AManifestWithALargeContentLengthIsRefusedBeforeItIsRead()
    {
        LoopbackHttpServer? server = null;
        server = new LoopbackHttpServer(async (_, stream, ct) =>
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 419430400\r\nConnection: close\r\n\r\n"), ct);
            await server!.EndlessChunkedAsync(stream, "", 400L << 20, ct);
        });
        await using (server)
        {
            var client = new RegistryClient(new HttpClient(), new RegistryOptions());

            var ex = await Should.ThrowAsync<CorralException>(() => client.GetManifestAsync(ImageReference.Parse($"{server.Host}/test/big:1"), "1", TestContext.Current.CancellationToken));

            ex.Message.ShouldContain("too large (419430400 bytes");
            await Task.Delay(500, TestContext.Current.CancellationToken);
            server.BytesSent.ShouldBeLessThan(32L << 20);
        }
    }

    /// <summary>A registry on loopback serving one image (tag 1) of one layer.</summary>
    private static LoopbackHttpServer Registry(byte[] layer, out string host)
    {
        var config = JsonSerializer.SerializeToUtf8Bytes(new ImageConfigFile { Os = "linux", Architecture = "amd64" }, ImageJsonContext.Default.ImageConfigFile);
        var manifest = JsonSerializer.SerializeToUtf8Bytes(new ImageManifest
        {
            SchemaVersion = 2,
            MediaType = MediaTypes.OciManifest,
            Config = new Descriptor { MediaType = MediaTypes.OciConfig, Digest = Digest.Of(config).ToString(), Size = config.Length },
            Layers = [new Descriptor { MediaType = MediaTypes.OciLayerGzip, Digest = Digest.Of(layer).ToString(), Size = layer.Length }],
        }, ImageJsonContext.Default.ImageManifest);
        var blobs = new Dictionary<string, byte[]> { [Digest.Of(config).ToString()] = config, [Digest.Of(layer).ToString()] = layer };
        var server = new LoopbackHttpServer(async (path, stream, ct) =>
        {
            var last = Uri.UnescapeDataString(path[(path.LastIndexOf('/') + 1)..]);
            if (path.Contains("/manifests/", StringComparison.Ordinal))
            {
                await LoopbackHttpServer.WriteAsync(stream, "200 OK", $"Content-Type: {MediaTypes.OciManifest}\r\n", manifest, ct);
            }
            else if (blobs.TryGetValue(last, out var blob))
            {
                await LoopbackHttpServer.WriteAsync(stream, "200 OK", "", blob, ct);
            }
            else
            {
                await LoopbackHttpServer.WriteAsync(stream, "404 Not Found", "", [], ct);
            }
        });
        host = server.Host;
        return server;
    }

    private static string Random(int bytes) => Convert.ToBase64String(RandomNumberGenerator.GetBytes(bytes * 3 / 4));
}
