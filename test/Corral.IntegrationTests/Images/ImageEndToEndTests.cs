using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Images;

/// <summary>Pull, import and run from images through the real CLI against a local registry.</summary>
[Collection(ImageTestsCollection.Name)]
public sealed class ImageEndToEndTests(RegistryFixture fixture) : IClassFixture<RegistryFixture>
{
    private static Task<CorralResult> Corral(string dataDir, params string[] args) =>
        CorralProcess.RunAsync(["--data-dir", dataDir, .. args], TimeSpan.FromMinutes(3));

    private static JsonElement Refs(string dataDir) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(dataDir, "images", "refs.json"))).RootElement.GetProperty("refs");

    [Fact]
    public async Task PullByTagStoresVerifiedBlobsAndUnpacksTheLayer()
    {
        var data = fixture.NewDataDir();

        var pull = await Corral(data, "pull", fixture.DebianRef);

        pull.ExitCode.ShouldBe(0, pull.Stderr);
        pull.Stderr.ShouldContain("done");
        var manifest = Refs(data).GetProperty(fixture.DebianRef).GetProperty("manifest").GetString()!;
        pull.Stdout.ShouldContain(manifest);
        File.Exists(Path.Combine(data, "images", "blobs", "sha256", manifest[7..])).ShouldBeTrue();
        var layers = Directory.GetDirectories(Path.Combine(data, "images", "layers"));
        layers.Length.ShouldBe(1);
        File.Exists(Path.Combine(layers[0], "usr", "bin", "python3")).ShouldBeTrue();
        Directory.GetFiles(Path.Combine(data, "images", "blobs", "sha256"), "*.partial").ShouldBeEmpty();

        var images = await Corral(data, "images");
        images.ExitCode.ShouldBe(0);
        images.Stdout.ShouldContain(fixture.DebianRef);
        images.Stdout.ShouldContain(manifest[7..19]);

        var again = await Corral(data, "pull", fixture.DebianRef);
        again.ExitCode.ShouldBe(0, again.Stderr);
        again.Stderr.ShouldContain("already present");
    }

    [Fact]
    public async Task PullByDigestThenRmiRemovesEverything()
    {
        var data = fixture.NewDataDir();
        var byTag = await Corral(data, "pull", fixture.DebianRef);
        byTag.ExitCode.ShouldBe(0, byTag.Stderr);
        var digest = byTag.Stdout.Trim().Split(' ')[^1];
        var byDigestRef = $"{fixture.Registry.Host}/test/debian@{digest}";
        (await Corral(data, "rmi", fixture.DebianRef)).ExitCode.ShouldBe(0);
        Directory.GetFiles(Path.Combine(data, "images", "blobs", "sha256")).ShouldBeEmpty();

        var pull = await Corral(data, "pull", byDigestRef);

        pull.ExitCode.ShouldBe(0, pull.Stderr);
        Refs(data).GetProperty(byDigestRef).GetProperty("manifest").GetString().ShouldBe(digest);
        var rmi = await Corral(data, "rmi", byDigestRef);
        rmi.ExitCode.ShouldBe(0, rmi.Stderr);
        Refs(data).EnumerateObject().ShouldBeEmpty();
        Directory.GetFiles(Path.Combine(data, "images", "blobs", "sha256")).ShouldBeEmpty();
        Directory.GetDirectories(Path.Combine(data, "images", "layers")).ShouldBeEmpty();
        (await Corral(data, "rmi", byDigestRef)).ExitCode.ShouldBe(1);
    }

    [Fact]
    public async Task TwoPullsAtOnceShareOneDownload()
    {
        var data = fixture.NewDataDir();

        var pulls = await Task.WhenAll(Corral(data, "pull", fixture.DebianRef), Corral(data, "pull", fixture.DebianRef));

        pulls.ShouldAllBe(p => p.ExitCode == 0, string.Join(" | ", pulls.Select(p => p.Stderr)));
        Directory.GetFiles(Path.Combine(data, "images", "blobs", "sha256")).Length.ShouldBe(3);
        Directory.GetDirectories(Path.Combine(data, "images", "layers")).ShouldHaveSingleItem();
    }

    [Fact]
    public async Task AWrongDigestIsRefused()
    {
        var data = fixture.NewDataDir();
        var wrong = "sha256:" + new string('a', 64);

        var pull = await Corral(data, "pull", $"{fixture.Registry.Host}/test/debian@{wrong}");

        pull.ExitCode.ShouldNotBe(0);
        pull.Stderr.ShouldStartWith("corral: ");
    }

    [Fact]
    public async Task AHostileImageIsRefusedAndNothingEscapes()
    {
        var data = fixture.NewDataDir();
        var escaped = $"/tmp/corral-hostile-{Environment.ProcessId}";

        var pull = await Corral(data, "pull", fixture.HostileRef);

        pull.ExitCode.ShouldBe(125);
        pull.Stderr.ShouldContain("refusing layer");
        pull.Stderr.Trim().Split('\n').Length.ShouldBeLessThanOrEqualTo(3, pull.Stderr);
        File.Exists(escaped).ShouldBeFalse();
        Directory.GetFileSystemEntries(Path.Combine(data, "images", "layers")).ShouldBeEmpty();
        File.Exists(Path.Combine(data, "images", "refs.json")).ShouldBeFalse();
    }

    [Fact]
    public async Task AnInterruptedPullIsResumedWithARangeRequest()
    {
        var data = fixture.NewDataDir();
        await using var proxy = new CuttingProxy(fixture.Registry.Port, cutAfterBytes: 8 << 20);
        var reference = $"{proxy.Host}/test/debian:1";

        var first = await Corral(data, "pull", reference);

        first.ExitCode.ShouldBe(125, first.Stdout + first.Stderr);
        first.Stderr.ShouldContain("interrupted");
        proxy.Cuts.ShouldBe(1);
        var partial = Directory.GetFiles(Path.Combine(data, "images", "blobs", "sha256"), "*.partial").ShouldHaveSingleItem();
        var kept = new FileInfo(partial).Length;
        kept.ShouldBeGreaterThan(1L << 20);

        var second = await Corral(data, "--log-level", "information", "pull", reference);

        second.ExitCode.ShouldBe(0, second.Stderr);
        second.Stderr.ShouldContain($"offset={kept}");
        File.Exists(partial).ShouldBeFalse();
        Refs(data).GetProperty(reference).GetProperty("manifest").GetString().ShouldStartWith("sha256:");
    }

    [Fact]
    public async Task ImportsAnOciLayoutDirectory()
    {
        var data = fixture.NewDataDir();

        var import = await Corral(data, "import", Path.Combine(fixture.Layouts, "debian"), "--tag", "localhost/imported:1");

        import.ExitCode.ShouldBe(0, import.Stderr);
        Refs(data).GetProperty("localhost/imported:1").GetProperty("manifest").GetString().ShouldStartWith("sha256:");
        var run = await Corral(data, "run", "--runtime", "runc", "--image", "localhost/imported:1", "--pull", "never", "--", "python3", "-c", "print('imported ok')");
        run.ExitCode.ShouldBe(0, run.Stderr);
        run.Stdout.ShouldBe("imported ok\n");
    }

    [Fact]
    public async Task ImportsADockerArchiveWrittenBySkopeo()
    {
        var data = fixture.NewDataDir();
        var archive = Path.Combine(fixture.WorkDir, $"debian-{Guid.NewGuid():N}.tar");
        var (code, output) = await Tool.RunAsync("skopeo", ["copy", "--quiet", $"oci:{Path.Combine(fixture.Layouts, "debian")}:1", $"docker-archive:{archive}:example/saved:2"]);
        code.ShouldBe(0, output);

        var import = await Corral(data, "import", archive);

        import.ExitCode.ShouldBe(0, import.Stderr);
        import.Stdout.ShouldStartWith("docker.io/example/saved:2 sha256:");
        var run = await Corral(data, "run", "--runtime", "runc", "--image", "example/saved:2", "--pull", "never");
        run.ExitCode.ShouldBe(0, run.Stderr);
        run.Stdout.ShouldBe("hello from the image cmd /root yes\n");
        Directory.GetFileSystemEntries(Path.Combine(data, "images")).Select(Path.GetFileName).ShouldNotContain(n => n!.StartsWith(".import", StringComparison.Ordinal));
        File.Delete(archive);
    }

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task RunsPython3FromAnImageAndLeavesNoMountBehind(string runtime)
    {
        var id = TestHost.NewId("img");

        var run = await Corral(fixture.SharedDataDir, "run", "--runtime", runtime, "--name", id, "--image", fixture.DebianRef, "--", "python3", "-c", "import os; print('from image', os.getcwd(), os.environ['FROM_IMAGE'])");

        run.ExitCode.ShouldBe(0, run.Stderr);
        run.Stdout.ShouldBe("from image /root yes\n");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        File.ReadAllText("/proc/self/mountinfo").ShouldNotContain(Path.Combine("/run/corral/bundles", id));
    }

    [Fact]
    public async Task TheImageCmdRunsWhenNoCommandIsGiven()
    {
        var id = TestHost.NewId("cmd");

        var run = await Corral(fixture.SharedDataDir, "run", "--runtime", "runc", "--name", id, "--image", fixture.DebianRef, "--env", "FROM_IMAGE=overridden");

        run.ExitCode.ShouldBe(0, run.Stderr);
        run.Stdout.ShouldBe("hello from the image cmd /root overridden\n");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task ACommandMissingFromTheImageExits127WithNothingLeft()
    {
        var id = TestHost.NewId("nocmd");

        var run = await Corral(fixture.SharedDataDir, "run", "--runtime", "runc", "--name", id, "--image", fixture.DebianRef, "--", "no-such-command");

        run.ExitCode.ShouldBe(127, run.Stderr);
        run.Stderr.ShouldContain("command not found");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }
}
