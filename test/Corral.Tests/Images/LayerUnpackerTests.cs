using System.Formats.Tar;
using Corral.Common;
using Corral.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Images;

public sealed class LayerUnpackerTests : IDisposable
{
    private readonly TempDir _temp = new();

    private string Target => _temp.Combine("root");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void UnpacksFilesDirectoriesLinksPermissionsAndOwnership()
    {
        var tar = new TarBuilder()
            .Dir("usr/")
            .Dir("usr/bin/")
            .File("usr/bin/tool", "#!/bin/sh\n", (UnixFileMode)0b111_101_101 | UnixFileMode.SetUser, uid: 1234, gid: 2345)
            .Symlink("bin", "usr/bin")
            .Symlink("etc/alt", "/usr/bin/tool")
            .HardLink("usr/bin/tool2", "usr/bin/tool")
            .File("./tmp/x", "x")
            .Tar();
        var layer = TarBuilder.Compress(tar);

        var diffId = LayerUnpacker.Unpack(new MemoryStream(layer), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken);

        var tool = Path.Combine(Target, "usr/bin/tool");
        File.ReadAllText(tool).ShouldBe("#!/bin/sh\n");
        File.GetUnixFileMode(tool).ShouldBe((UnixFileMode)0b111_101_101 | UnixFileMode.SetUser);
        new FileInfo(Path.Combine(Target, "bin")).LinkTarget.ShouldBe("usr/bin");
        new FileInfo(Path.Combine(Target, "etc/alt")).LinkTarget.ShouldBe("/usr/bin/tool");
        File.ReadAllText(Path.Combine(Target, "usr/bin/tool2")).ShouldBe("#!/bin/sh\n");
        File.GetLastWriteTimeUtc(tool).Year.ShouldBe(2020);
        File.Exists(Path.Combine(Target, "tmp/x")).ShouldBeTrue();
        diffId.ShouldBe(Digest.Of(tar));
        if (Environment.IsPrivilegedProcess)
        {
            Stat(tool, "%u:%g").ShouldBe("1234:2345");
        }
    }

    [Fact]
    public void WhiteoutsDeleteAndOpaqueDirectoriesHideLowerContentInDeleteMode()
    {
        LayerUnpacker.Unpack(new MemoryStream(new TarBuilder().File("a/keep", "1").File("a/gone", "2").File("b/old", "3").File("b/older", "4").Tar()), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken);
        LayerUnpacker.Unpack(new MemoryStream(new TarBuilder().File("a/.wh.gone", "").File("b/new", "5").File("b/.wh..wh..opq", "").Gzip()), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken);

        File.Exists(Path.Combine(Target, "a/keep")).ShouldBeTrue();
        File.Exists(Path.Combine(Target, "a/gone")).ShouldBeFalse();
        File.Exists(Path.Combine(Target, "a/.wh.gone")).ShouldBeFalse();
        Directory.GetFileSystemEntries(Path.Combine(Target, "b")).Select(Path.GetFileName).ShouldBe(["new"]);
    }

    [Fact]
    public void WhiteoutsBecomeOverlayWhiteoutsInOverlayMode()
    {
        LayerUnpacker.Unpack(new MemoryStream(new TarBuilder().File("a/.wh.gone", "").File("b/.wh..wh..opq", "").File("b/new", "5").Tar()), Target, WhiteoutMode.Overlay, TestContext.Current.CancellationToken);

        var whiteout = Path.Combine(Target, "a/gone");
        Stat(whiteout, "%F %t:%T").ShouldBe("character special file 0:0");
        File.Exists(Path.Combine(Target, "b/new")).ShouldBeTrue();
        Path.Exists(Path.Combine(Target, "b/.wh..wh..opq")).ShouldBeFalse();
    }

    public static TheoryData<string, byte[]> HostileLayers => new()
    {
        { "'..' in its entry path", new TarBuilder().File("../escaped", "x").Tar() },
        { "'..' in its entry path", new TarBuilder().File("a/../../escaped", "x").Tar() },
        { "absolute entry path", new TarBuilder().File("/escaped", "x").Tar() },
        { "outside the layer", new TarBuilder().Symlink("up", "../escaped").Tar() },
        { "outside the layer", new TarBuilder().Dir("a/").Symlink("a/up", "../../etc").Tar() },
        { "'..' in its hard link target path", new TarBuilder().HardLink("pw", "../../../etc/passwd").Tar() },
        { "absolute hard link target path", new TarBuilder().HardLink("pw", "/etc/passwd").Tar() },
        { "missing directory", new TarBuilder().Symlink("e", "/etc").HardLink("pw", "e/hostname").Tar() },
        { "not a file in the layer", new TarBuilder().HardLink("pw", "nothing-here").Tar() },
        { "too many symlinks", new TarBuilder().Symlink("loop", "/loop").File("loop/x", "1").Tar() },
        { "device node", new TarBuilder().Device("dev/null").Tar() },
        { "device node", new TarBuilder().Device("dev/sda", TarEntryType.BlockDevice).Tar() },
        { "'..' in its entry path", new TarBuilder().File("..", "x").Tar() },
        { "invalid name", new TarBuilder().File("a/.wh...", "").Tar() },
    };

    [Theory]
    [MemberData(nameof(HostileLayers))]
    public void RefusesHostileLayersWritingNothingOutside(string reason, byte[] layer)
    {
        var sentinel = _temp.Combine("escaped");

        var ex = Should.Throw<CorralException>(() => LayerUnpacker.Unpack(new MemoryStream(layer), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken));

        ex.Message.ShouldStartWith("refusing layer");
        ex.Message.ShouldContain(reason);
        Path.Exists(sentinel).ShouldBeFalse();
        Directory.GetFileSystemEntries(_temp.Path).Select(Path.GetFileName).ShouldBe(["root"]);
    }

    [Fact]
    public void SymlinksAreFollowedOnlyInsideTheRoot()
    {
        // An absolute link counts from the layer root, as it would in the container.
        var layer = new TarBuilder().Symlink("etc", "/").Symlink("deep/x", "/../..").File("etc/written", "1").File("deep/x/also", "2").Tar();

        LayerUnpacker.Unpack(new MemoryStream(layer), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken);

        File.Exists(Path.Combine(Target, "written")).ShouldBeTrue();
        File.Exists(Path.Combine(Target, "also")).ShouldBeTrue();
        Directory.GetFileSystemEntries(_temp.Path).Select(Path.GetFileName).ShouldBe(["root"]);
        File.Exists("/written").ShouldBeFalse();
    }

    private static string Stat(string path, string format)
    {
        var info = new System.Diagnostics.ProcessStartInfo("stat") { RedirectStandardOutput = true };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(format);
        info.ArgumentList.Add(path);
        using var process = System.Diagnostics.Process.Start(info)!;
        var output = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        return output;
    }

    [Fact]
    public void AFileThroughAFileIsRefused()
    {
        var layer = new TarBuilder().File("a", "1").File("a/b", "2").Tar();

        Should.Throw<CorralException>(() => LayerUnpacker.Unpack(new MemoryStream(layer), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken)).Message.ShouldContain("not a directory");
    }

    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(200)]
    public void TruncatedGzipIsRefused(int cut)
    {
        var layer = new TarBuilder().File("big", new string('x', 4096) + Guid.NewGuid()).File("small", "y").Gzip();

        var ex = Should.Throw<CorralException>(() => LayerUnpacker.Unpack(new MemoryStream(layer[..^cut]), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("truncated");
    }

    [Fact]
    public void TruncatedTarIsRefused()
    {
        var layer = new TarBuilder().File("big", new string('x', 8192)).Tar();

        var ex = Should.Throw<CorralException>(() => LayerUnpacker.Unpack(new MemoryStream(layer[..3000]), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken));

        ex.Message.ShouldContain("truncated");
    }

    [Fact]
    public void ZstdIsRefusedClearly()
    {
        byte[] zstd = [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];

        Should.Throw<CorralException>(() => LayerUnpacker.Unpack(new MemoryStream(zstd), Target, WhiteoutMode.Delete, TestContext.Current.CancellationToken)).Message.ShouldContain("zstd");
    }
}

public sealed class LayerUnpackerSymlinkChmodTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void ADirectoryReplacedByASymlinkDoesNotGetItsModeChangedThroughIt()
    {
        var outside = _temp.Combine("outside");
        Directory.CreateDirectory(outside);
        File.SetUnixFileMode(outside, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var layer = new TarBuilder().Dir("a/", (UnixFileMode)0b111_111_111).Symlink("a", outside).Tar();

        LayerUnpacker.Unpack(new MemoryStream(layer), _temp.Combine("root"), WhiteoutMode.Delete, TestContext.Current.CancellationToken);

        File.GetUnixFileMode(outside).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        new FileInfo(_temp.Combine("root", "a")).LinkTarget.ShouldBe(outside);
    }

    [Fact]
    public void ResolveInsideNeverLeavesTheRoot()
    {
        var root = _temp.Combine("root");
        Directory.CreateDirectory(Path.Combine(root, "real"));
        File.WriteAllText(Path.Combine(root, "real", "f"), "x");
        File.CreateSymbolicLink(Path.Combine(root, "abs"), "/real");
        File.CreateSymbolicLink(Path.Combine(root, "up"), "../../../../etc");
        File.CreateSymbolicLink(Path.Combine(root, "passwd"), "/etc/passwd");

        LayerUnpacker.ResolveInside(root, "abs/f").ShouldBe(Path.Combine(root, "real", "f"));
        LayerUnpacker.ResolveInside(root, "up/passwd").ShouldBeNull();
        LayerUnpacker.ResolveInside(root, "passwd").ShouldBeNull();
        LayerUnpacker.ResolveInside(root, "../../etc/passwd").ShouldBeNull();
    }
}
