using Corral.Common;
using Corral.Daemon.Images;
using Corral.Daemon.Sandboxes;
using Corral.Images;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Daemon;

public sealed class SandboxImagesTests : IDisposable
{
    private readonly string _dataDir = Directory.CreateTempSubdirectory("corral-sandbox-images-").FullName;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => Directory.Delete(_dataDir, recursive: true);

    [Fact]
    public async Task ARootfsIsKeptAsGiven()
    {
        var request = Request("/some/rootfs");

        (await Images().ApplyAsync(request, image: null, Ct)).ShouldBeSameAs(request);
    }

    [Fact]
    public async Task NeitherRootfsNorImageWithoutADefaultImageSaysHowToGetOne()
    {
        var ex = await Should.ThrowAsync<CorralException>(() => Images().ApplyAsync(Request(string.Empty), image: null, Ct));

        ex.Message.ShouldContain("corral prepare");
    }

    [Fact]
    public async Task NeitherRootfsNorImageIsTheDefaultImage()
    {
        var image = new DefaultImage(_dataDir);
        Directory.CreateDirectory(image.RootfsPath);
        File.WriteAllText(Path.Combine(image.Directory, "ready"), string.Empty);
        image.IsReady.ShouldBeTrue("DefaultImage's ready marker changed; update this test");

        var applied = await Images().ApplyAsync(Request(string.Empty), image: null, Ct);

        applied.Rootfs.ShouldBe(image.RootfsPath);
        applied.ImageLayers.ShouldBeNull();
    }

    [Fact]
    public async Task BothRootfsAndImageAreRefused()
    {
        var ex = await Should.ThrowAsync<CorralException>(() => Images().ApplyAsync(Request("/some/rootfs"), "localhost/x:1", Ct));

        ex.Message.ShouldContain("choose one");
    }

    [Fact]
    public async Task AnImageNotInTheStoreIsNotFound()
    {
        var ex = await Should.ThrowAsync<CorralException>(() => Images().ApplyAsync(Request(string.Empty), "localhost/absent:1", Ct));

        ex.Kind.ShouldBe(ErrorKind.NotFound);
        ex.Message.ShouldContain(_dataDir);
    }

    [Fact]
    public async Task AnUnparsableImageIsInvalid()
    {
        var ex = await Should.ThrowAsync<CorralException>(() => Images().ApplyAsync(Request(string.Empty), "UPPER CASE!", Ct));

        ex.Message.ShouldStartWith("invalid image 'UPPER CASE!'");
    }

    private SandboxImages Images() => new(new ImageStore(_dataDir), new DefaultImage(_dataDir));

    private static ContainerRequest Request(string rootfs) => new() { Rootfs = rootfs, Command = ["true"] };
}
