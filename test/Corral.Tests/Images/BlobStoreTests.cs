using System.Text;
using Corral.Common;
using Corral.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Images;

public sealed class BlobStoreTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task StoresVerifiedBlobsByDigest()
    {
        var store = new BlobStore(_temp.Combine("blobs"));
        var data = Encoding.UTF8.GetBytes("hello blob");
        var digest = Digest.Of(data);

        await store.WriteAsync(data, digest, TestContext.Current.CancellationToken);

        store.Has(digest).ShouldBeTrue();
        File.ReadAllBytes(_temp.Combine("blobs", "sha256", digest.Hex)).ShouldBe(data);
        Directory.GetFiles(_temp.Combine("blobs", "sha256")).Length.ShouldBe(1);
    }

    [Fact]
    public async Task RefusesContentThatDoesNotMatchItsDigestLeavingNothing()
    {
        var store = new BlobStore(_temp.Combine("blobs"));
        var digest = Digest.Of("expected"u8);

        var ex = await Should.ThrowAsync<CorralException>(() => store.WriteAsync(new MemoryStream("tampered"u8.ToArray()), digest, 8, TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("failed verification");
        store.Has(digest).ShouldBeFalse();
        Directory.GetFiles(_temp.Combine("blobs", "sha256")).ShouldBeEmpty();
    }

    [Theory]
    [InlineData(5)]
    [InlineData(100)]
    public async Task RefusesContentOfTheWrongSize(long size)
    {
        var store = new BlobStore(_temp.Combine("blobs"));
        var data = "0123456789"u8.ToArray();

        var ex = await Should.ThrowAsync<CorralException>(() => store.WriteAsync(new MemoryStream(data), Digest.Of(data), size, TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("wrong size");
        Directory.GetFiles(_temp.Combine("blobs", "sha256")).ShouldBeEmpty();
    }

    [Fact]
    public void CommitsAVerifiedPartialAndDeletesABadOne()
    {
        var store = new BlobStore(_temp.Combine("blobs"));
        var data = "complete"u8.ToArray();
        var digest = Digest.Of(data);
        Directory.CreateDirectory(_temp.Combine("blobs", "sha256"));
        File.WriteAllBytes(store.PartialPathOf(digest), data[..4]);

        Should.Throw<CorralException>(() => store.CommitPartial(digest, data.Length));
        File.Exists(store.PartialPathOf(digest)).ShouldBeFalse();

        File.WriteAllBytes(store.PartialPathOf(digest), data);
        store.CommitPartial(digest, data.Length);
        store.Has(digest).ShouldBeTrue();
    }

    [Theory]
    [InlineData("sha256:abc")]
    [InlineData("md5:d41d8cd98f00b204e9800998ecf8427e")]
    [InlineData("sha256:ZZ3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")]
    [InlineData("sha256:../../../../etc/passwd00000000000000000000000000000000000000000")]
    public void DigestsAreValidatedBeforeTheyBecomePaths(string text)
    {
        Digest.TryParse(text, out _).ShouldBeFalse();
        Should.Throw<CorralException>(() => Digest.Parse(text));
    }
}

public sealed class ImageReferenceTests
{
    [Theory]
    [InlineData("debian", "docker.io", "library/debian", "latest", "docker.io/library/debian:latest")]
    [InlineData("127.0.0.1:5000/test/debian:1", "127.0.0.1:5000", "test/debian", "1", "127.0.0.1:5000/test/debian:1")]
    [InlineData("localhost/x", "localhost", "x", "latest", "localhost/x:latest")]
    [InlineData("ghcr.io/a/b:v1.2", "ghcr.io", "a/b", "v1.2", "ghcr.io/a/b:v1.2")]
    public void ParsesWithDockerDefaults(string text, string registry, string repository, string tag, string key)
    {
        var reference = ImageReference.Parse(text);

        reference.Registry.ShouldBe(registry);
        reference.Repository.ShouldBe(repository);
        reference.Tag.ShouldBe(tag);
        reference.Key.ShouldBe(key);
    }

    [Fact]
    public void ParsesDigestReferences()
    {
        var digest = Digest.Of("x"u8);

        var reference = ImageReference.Parse($"127.0.0.1:5000/test/debian@{digest}");

        reference.Digest.ShouldBe(digest);
        reference.Tag.ShouldBeNull();
        reference.ManifestReference.ShouldBe(digest.ToString());
        reference.Key.ShouldBe($"127.0.0.1:5000/test/debian@{digest}");
    }

    [Theory]
    [InlineData("UPPER/case")]
    [InlineData("a/../b")]
    [InlineData("")]
    [InlineData("x:bad tag")]
    public void RefusesInvalidReferences(string text) => Should.Throw<CorralException>(() => ImageReference.Parse(text));
}
