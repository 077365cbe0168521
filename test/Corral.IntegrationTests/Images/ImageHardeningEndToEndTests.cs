using System.Diagnostics;
using System.Formats.Tar;
using Corral.Images;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Images;

/// <summary>Issue #10 end to end: hostile layers through `corral import` and `corral pull`, and layers collected once their overlay goes.</summary>
[Collection(ImageTestsCollection.Name)]
public sealed class ImageHardeningEndToEndTests(RegistryFixture fixture) : IClassFixture<RegistryFixture>
{
    private const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    private static Task<CorralResult> Corral(string dataDir, params string[] args) =>
        CorralProcess.RunAsync(["--data-dir", dataDir, .. args], TimeSpan.FromMinutes(3));

    /// <summary>An OCI layout (tag 1) of one layer made of <paramref name="entries"/>.</summary>
    private string Layout(string name, params TarEntry[] entries)
    {
        var dir = Path.Combine(fixture.WorkDir, $"{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var layer = Path.Combine(dir + ".tar");
        using (var file = File.Create(layer))
        using (var writer = new TarWriter(file, TarEntryFormat.Pax))
        {
            foreach (var entry in entries)
            {
                writer.WriteEntry(entry);
            }
        }

        OciLayoutWriter.Write(dir, "1", [layer]);
        return dir;
    }

    private static void NothingStored(string data, CorralResult result)
    {
        result.ExitCode.ShouldBe(125, result.Stderr);
        result.Stderr.ShouldStartWith("corral: ");
        // Pull's plain progress lines aside, the error is one line.
        result.Stderr.Trim().Split('\n').Count(l => !l.StartsWith("corral: pulling", StringComparison.Ordinal) && !l.StartsWith("corral: layer ", StringComparison.Ordinal)).ShouldBe(1, result.Stderr);
        var images = Path.Combine(data, "images");
        if (File.Exists(Path.Combine(images, "refs.json")))
        {
            File.ReadAllText(Path.Combine(images, "refs.json")).ShouldNotContain("sha256:");
        }

        foreach (var dir in new[] { Path.Combine(images, "layers"), Path.Combine(images, "blobs", "sha256") })
        {
            if (Directory.Exists(dir))
            {
                Directory.GetFileSystemEntries(dir).Where(e => !e.EndsWith(".partial", StringComparison.Ordinal)).ShouldBeEmpty();
            }
        }
    }

    [Fact]
    public async Task ALinkEscapingThroughACollapsingParentIsRefusedByImportAndPull()
    {
        var layout = Layout(
            "collapse",
            new PaxTarEntry(TarEntryType.SymbolicLink, "a") { LinkName = "/" },
            new PaxTarEntry(TarEntryType.SymbolicLink, "a/a/a/a/a/a/a/a/esc") { LinkName = "../../../../../../../../etc/shadow" });
        await fixture.Registry.PushAsync(layout, "1", "test/collapse:1");

        var importData = fixture.NewDataDir();
        var import = await Corral(importData, "import", layout, "--tag", "localhost/collapse:1");
        var pullData = fixture.NewDataDir();
        var pull = await Corral(pullData, "pull", $"{fixture.Registry.Host}/test/collapse:1");

        import.Stderr.ShouldContain("outside the layer");
        NothingStored(importData, import);
        (await Corral(importData, "images", "--json")).Stdout.ShouldNotContain("collapse");
        pull.Stderr.ShouldContain("outside the layer");
        NothingStored(pullData, pull);
    }

    [Fact]
    public async Task ADirectoryModeIsNotAppliedThroughALaterSymlinkByImportOrPull()
    {
        var victim = $"/tmp/corral-victim-{Guid.NewGuid():N}";
        Directory.CreateDirectory(Path.Combine(victim, "t", "victim"));
        File.SetUnixFileMode(Path.Combine(victim, "t", "victim"), Private);
        try
        {
            var layout = Layout(
                "chmod",
                new PaxTarEntry(TarEntryType.Directory, "q/") { Mode = (UnixFileMode)0b111_101_101 },
                new PaxTarEntry(TarEntryType.Directory, "q/t/") { Mode = (UnixFileMode)0b111_101_101 },
                new PaxTarEntry(TarEntryType.Directory, "q/t/victim/") { Mode = (UnixFileMode)0b111_111_111, Uid = 4242, Gid = 4242 },
                new PaxTarEntry(TarEntryType.SymbolicLink, "q") { LinkName = victim });
            await fixture.Registry.PushAsync(layout, "1", "test/chmod:1");

            // An absolute link means the container's root, so the layer itself is fine: what must not happen is the chmod through it.
            var import = await Corral(fixture.NewDataDir(), "import", layout, "--tag", "localhost/chmod:1");
            var pull = await Corral(fixture.NewDataDir(), "pull", $"{fixture.Registry.Host}/test/chmod:1");

            import.ExitCode.ShouldBe(0, import.Stderr);
            pull.ExitCode.ShouldBe(0, pull.Stderr);
            File.GetUnixFileMode(Path.Combine(victim, "t", "victim")).ShouldBe(Private);
            var owner = await Tool.RunAsync("stat", ["-c", "%u", Path.Combine(victim, "t", "victim")]);
            owner.Output.Trim().ShouldBe("0");
        }
        finally
        {
            Directory.Delete(victim, recursive: true);
        }
    }

    [Fact]
    public async Task AGzipBombLayerStopsAtTheCapAndLeavesNothing()
    {
        var dir = Path.Combine(fixture.WorkDir, $"bomb-{Guid.NewGuid():N}");
        var layer = dir + ".tar.gz";
        using (var file = File.Create(layer))
        using (var gzip = new System.IO.Compression.GZipStream(file, System.IO.Compression.CompressionLevel.SmallestSize))
        using (var writer = new TarWriter(gzip, TarEntryFormat.Pax))
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "zeros") { DataStream = new Corral.Tests.Images.ZeroStream(1L << 30) });
        }

        OciLayoutWriter.Write(dir, "1", [layer]);
        var data = fixture.NewDataDir();

        var import = await Corral(data, "import", dir, "--tag", "localhost/bomb:1", "--max-layer-size", "64Mi");

        import.Stderr.ShouldContain("unpacks to more than 64");
        NothingStored(data, import);
        File.Delete(layer);
    }

    [Fact]
    public async Task ALayerRmiLeftInUseIsCollectedWhenItsContainerGoes()
    {
        var data = fixture.NewDataDir();
        var id = TestHost.NewId("gc");
        (await Corral(data, "import", Path.Combine(fixture.Layouts, "debian"), "--tag", "localhost/gc:1")).ExitCode.ShouldBe(0);
        var layers = Path.Combine(data, "images", "layers");
        var layer = Directory.GetDirectories(layers).ShouldHaveSingleItem();

        var watch = Stopwatch.StartNew();
        using var run = CorralProcess.Start(["--data-dir", data, "run", "--runtime", "runc", "--name", id, "--image", "localhost/gc:1", "--pull", "never", "--", "sleep", "4"]);
        var running = CorralProcess.CollectAsync(run, watch, TimeSpan.FromMinutes(2));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!File.ReadAllText("/proc/self/mountinfo").Contains(layer, StringComparison.Ordinal) && DateTime.UtcNow < deadline && !running.IsCompleted)
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }

        var rmi = await Corral(data, "rmi", "localhost/gc:1");
        var keptWhileRunning = Directory.Exists(layer);
        var result = await running;

        result.ExitCode.ShouldBe(0, result.Stderr);
        rmi.ExitCode.ShouldBe(0, rmi.Stderr);
        keptWhileRunning.ShouldBeTrue();
        Directory.GetFileSystemEntries(layers).ShouldBeEmpty();
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }
}
