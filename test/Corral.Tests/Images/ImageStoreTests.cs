using System.Formats.Tar;
using System.Text.Json;
using Corral.Common;
using Corral.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Images;

public sealed class ImageStoreTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private string WriteLayer(string name, TarBuilder layer)
    {
        var path = _temp.Combine(name);
        File.WriteAllBytes(path, layer.Gzip());
        return path;
    }

    private string Layout(string name, params TarBuilder[] layers)
    {
        var dir = _temp.Combine(name);
        OciLayoutWriter.Write(dir, "v1", layers.Select((l, i) => WriteLayer($"{name}-layer{i}.tar.gz", l)).ToList(), new ContainerConfig { Cmd = ["python3"], Env = ["A=1"] });
        return dir;
    }

    [Fact]
    public async Task ImportsAnOciLayoutAndSharesLayersBetweenImages()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var shared = new TarBuilder().File("bin/sh", "shell");
        var first = Layout("one", shared, new TarBuilder().File("etc/one", "1").File("bin/.wh.sh", ""));
        var second = Layout("two", shared);

        var refs1 = await new ImageImporter(store).ImportAsync(first, "localhost/one:1", TestContext.Current.CancellationToken);
        var refs2 = await new ImageImporter(store).ImportAsync(second, null, TestContext.Current.CancellationToken);

        refs1.ShouldBe(["localhost/one:1"]);
        refs2.ShouldBe(["localhost/two:v1"]);
        var image = store.Find("localhost/one:1").ShouldNotBeNull();
        image.Config.Config!.Cmd.ShouldBe(["python3"]);
        var layers = await store.EnsureLayersAsync(image, TestContext.Current.CancellationToken);
        var layers2 = await store.EnsureLayersAsync(store.Find("localhost/two:v1")!, TestContext.Current.CancellationToken);
        layers.Count.ShouldBe(2);
        layers2.ShouldBe([layers[0]]);
        Directory.GetDirectories(store.LayersDir).Length.ShouldBe(2);
        File.ReadAllText(Path.Combine(layers[0], "bin/sh")).ShouldBe("shell");
        File.ReadAllText(Path.Combine(layers[1], "etc/one")).ShouldBe("1");

        var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(store.Root, "refs.json")));
        index.RootElement.GetProperty("refs").GetProperty("localhost/one:1").GetProperty("manifest").GetString().ShouldBe(image.ManifestDigest.ToString());
    }

    [Fact]
    public async Task RemovingAnImageKeepsWhatAnotherStillUses()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var shared = new TarBuilder().File("bin/sh", "shell");
        await new ImageImporter(store).ImportAsync(Layout("one", shared, new TarBuilder().File("only-one", "1")), "localhost/one:1", TestContext.Current.CancellationToken);
        await new ImageImporter(store).ImportAsync(Layout("two", shared), "localhost/two:1", TestContext.Current.CancellationToken);
        await store.EnsureLayersAsync(store.Find("localhost/one:1")!, TestContext.Current.CancellationToken);

        store.Remove("localhost/one:1").ShouldBeTrue();

        store.Find("localhost/one:1").ShouldBeNull();
        var two = store.Find("localhost/two:1").ShouldNotBeNull();
        store.Blobs.Has(Digest.Parse(two.Manifest.Layers[0].Digest)).ShouldBeTrue();
        Directory.GetDirectories(store.LayersDir).Length.ShouldBe(1);
        store.Blobs.List().Count().ShouldBe(3);
        store.Remove("localhost/one:1").ShouldBeFalse();
    }

    [Fact]
    public void CollectingGarbageSweepsWhatACrashLeftOnceItIsOld()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var store = new ImageStore(_temp.Combine("data"), time);
        var tempLayer = Path.Combine(store.LayersDir, ".tmp-abc-1");
        var tempBlob = Path.Combine(store.Blobs.Root, "sha256", "abc.1.tmp");
        var tempImport = Path.Combine(store.Root, ".import-1");
        Directory.CreateDirectory(tempLayer);
        Directory.CreateDirectory(tempImport);
        Directory.CreateDirectory(Path.GetDirectoryName(tempBlob)!);
        File.WriteAllText(tempBlob, "x");

        store.CollectGarbage();
        Path.Exists(tempLayer).ShouldBeTrue();
        Path.Exists(tempBlob).ShouldBeTrue();

        time.Advance(TimeSpan.FromHours(2));
        store.CollectGarbage();
        Path.Exists(tempLayer).ShouldBeFalse();
        Path.Exists(tempBlob).ShouldBeFalse();
        Path.Exists(tempImport).ShouldBeFalse();
    }

    [Fact]
    public async Task ImportsADockerSaveArchive()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var layerTar = new TarBuilder().File("hello.txt", "hi").Tar();
        var config = $$$"""{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/hello.txt"]},"rootfs":{"type":"layers","diff_ids":["{{{Digest.Of(layerTar)}}}"]}}""";
        var archive = ArchiveOf(
            ("manifest.json", """[{"Config":"cfg.json","RepoTags":["example/hello:2"],"Layers":["abc/layer.tar"]}]"""u8.ToArray()),
            ("cfg.json", System.Text.Encoding.UTF8.GetBytes(config)),
            ("abc/layer.tar", layerTar));

        var refs = await new ImageImporter(store).ImportAsync(archive, null, TestContext.Current.CancellationToken);

        refs.ShouldBe(["docker.io/example/hello:2"]);
        var image = store.Find("example/hello:2").ShouldNotBeNull();
        image.Config.Config!.Cmd.ShouldBe(["cat", "/hello.txt"]);
        var layers = await store.EnsureLayersAsync(image, TestContext.Current.CancellationToken);
        File.ReadAllText(Path.Combine(layers[0], "hello.txt")).ShouldBe("hi");
        Directory.GetFileSystemEntries(store.Root).Select(Path.GetFileName).ShouldNotContain(n => n!.StartsWith(".import", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ImportsAnOciLayoutTarball()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var dir = Layout("layout", new TarBuilder().File("x", "y"));
        var archive = _temp.Combine("layout.tar");
        await TarFile.CreateFromDirectoryAsync(dir, archive, includeBaseDirectory: false, TestContext.Current.CancellationToken);

        var refs = await new ImageImporter(store).ImportAsync(archive, null, TestContext.Current.CancellationToken);

        refs.ShouldBe(["localhost/layout:v1"]);
    }

    [Fact]
    public async Task RefusesAnArchiveWhoseManifestPointsOutside()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var archive = ArchiveOf(("manifest.json", """[{"Config":"../../../etc/passwd","Layers":[]}]"""u8.ToArray()));

        var ex = await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(archive, null, TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("'..'");
    }

    [Fact]
    public async Task AnArchiveCannotReadHostFilesThroughSymlinks()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var path = _temp.Combine("links.tar");
        using (var stream = File.Create(path))
        using (var writer = new TarWriter(stream, TarEntryFormat.Pax))
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "manifest.json") { LinkName = "/etc/passwd" });
        }

        var ex = await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(path, null, TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("not an OCI image layout");
    }

    [Fact]
    public async Task RefusesALayoutWhoseBlobWasTamperedWith()
    {
        var store = new ImageStore(_temp.Combine("data"));
        var dir = Layout("bad", new TarBuilder().File("x", "y"));
        var blob = Directory.GetFiles(Path.Combine(dir, "blobs", "sha256")).OrderByDescending(f => new FileInfo(f).Length).First();
        var bytes = File.ReadAllBytes(blob);
        bytes[^1] ^= 0xff;
        File.WriteAllBytes(blob, bytes);

        var ex = await Should.ThrowAsync<CorralException>(() => new ImageImporter(store).ImportAsync(dir, null, TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("failed verification");
        store.ReadRefs().Refs.ShouldBeEmpty();
    }

    private string ArchiveOf(params (string Name, byte[] Content)[] files)
    {
        var path = _temp.Combine($"archive-{Guid.NewGuid():N}.tar");
        using var stream = File.Create(path);
        using var writer = new TarWriter(stream, TarEntryFormat.Pax);
        foreach (var (name, content) in files)
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(content) });
        }

        return path;
    }
}
