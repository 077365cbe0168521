using System.Formats.Tar;
using Corral.Common;
using Corral.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Images;

/// <summary>
/// Hostile layers of issue #10, by family: metadata applied through a parent that became a
/// symlink, links that escape from where they really land, and bombs. A "victim" directory
/// outside the layer root must come out exactly as it went in.
/// </summary>
public sealed class LayerUnpackerHostileTests : IDisposable
{
    private const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private static readonly DateTime VictimTime = new(2001, 2, 3, 4, 5, 6, DateTimeKind.Utc);

    private readonly TempDir _temp = new();

    public LayerUnpackerHostileTests()
    {
        // victim/t/victim (0700), victim/t/secret (a file), both dated 2001.
        Directory.CreateDirectory(Victim("t/victim"));
        File.WriteAllText(Victim("t/secret"), "secret");
        foreach (var path in new[] { Victim("t/victim"), Victim("t"), Victim("") })
        {
            File.SetUnixFileMode(path, Private);
            Directory.SetLastWriteTimeUtc(path, VictimTime);
        }
    }

    private string Target => _temp.Combine("root");

    private string VictimRoot => _temp.Combine("victim");

    public void Dispose() => _temp.Dispose();

    private string Victim(string relative) => relative.Length == 0 ? VictimRoot : Path.Combine(VictimRoot, relative);

    private void Unpack(byte[] layer, WhiteoutMode mode = WhiteoutMode.Delete) =>
        LayerUnpacker.Unpack(new MemoryStream(layer), Target, mode, TestContext.Current.CancellationToken);

    private void VictimUntouched()
    {
        File.GetUnixFileMode(Victim("t/victim")).ShouldBe(Private);
        File.GetUnixFileMode(Victim("t")).ShouldBe(Private);
        Directory.GetLastWriteTimeUtc(Victim("t/victim")).ShouldBe(VictimTime);
        Directory.GetLastWriteTimeUtc(Victim("t")).ShouldBe(VictimTime);
        File.ReadAllText(Victim("t/secret")).ShouldBe("secret");
        Directory.GetFileSystemEntries(Victim("t")).Select(Path.GetFileName).Order().ShouldBe(["secret", "victim"]);
        Directory.GetFileSystemEntries(Victim("t/victim")).ShouldBeEmpty();
        if (Environment.IsPrivilegedProcess)
        {
            new DirectoryInfo(Victim("t/victim")).UnixFileMode.ShouldBe(Private);
            StatOwner(Victim("t/victim")).ShouldBe("0:0");
        }
    }

    [Theory]
    [InlineData(WhiteoutMode.Delete)]
    [InlineData(WhiteoutMode.Overlay)]
    public void DirectoryModeOwnerAndTimesAreNotAppliedThroughAParentThatLaterBecameASymlink(WhiteoutMode mode)
    {
        // Issue #10's example: q/t/victim (0777, owned 1234), then q -> the victim's parent.
        var layer = new TarBuilder()
            .Dir("q/")
            .Dir("q/t/")
            .Entry(new PaxTarEntry(TarEntryType.Directory, "q/t/victim/") { Mode = (UnixFileMode)0b111_111_111, Uid = 1234, Gid = 1234, ModificationTime = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero) })
            .Symlink("q", VictimRoot)
            .Tar();

        Unpack(layer, mode);

        VictimUntouched();
        new FileInfo(Path.Combine(Target, "q")).LinkTarget.ShouldBe(VictimRoot);
    }

    [Fact]
    public void AGrandparentReplacedByASymlinkDoesNotRedirectTheDeferredMode()
    {
        var layer = new TarBuilder()
            .Dir("a/b/t/victim/", (UnixFileMode)0b111_111_111)
            .Dir("a/b/t/", (UnixFileMode)0b111_111_111)
            .Symlink("a/b", VictimRoot)
            .Tar();

        Unpack(layer);

        VictimUntouched();
    }

    [Fact]
    public void EntriesUnderAnAbsoluteSymlinkParentStayInsideTheLayer()
    {
        // l -> <victim> is the container's <victim>: files, hard links, dirs and whiteouts under it land in the layer.
        var layer = new TarBuilder()
            .File("etc/file", "mine")
            .Symlink("l", VictimRoot)
            .File("l/t/new", "planted")
            .HardLink("l/t/linked", "etc/file")
            .Dir("l/t/victim/", (UnixFileMode)0b111_111_111)
            .File("l/t/.wh.secret", "")
            .File("l/t/victim/.wh..wh..opq", "")
            .Tar();

        Unpack(layer);

        VictimUntouched();
        var inside = Path.Combine(Target, VictimRoot.TrimStart('/'), "t");
        File.ReadAllText(Path.Combine(inside, "new")).ShouldBe("planted");
        File.ReadAllText(Path.Combine(inside, "linked")).ShouldBe("mine");
        File.GetUnixFileMode(Path.Combine(inside, "victim")).ShouldBe((UnixFileMode)0b111_111_111);
    }

    [Fact]
    public void AWhiteoutThroughASymlinkedParentDeletesNothingOutside()
    {
        var layer = new TarBuilder().Symlink("l", Victim("t")).File("l/.wh.secret", "").File("l/.wh.victim", "").Tar();

        Unpack(layer, WhiteoutMode.Delete);
        Unpack(new TarBuilder().Symlink("m", Victim("t")).File("m/.wh.secret", "").File("m/.wh..wh..opq", "").Tar(), WhiteoutMode.Overlay);

        VictimUntouched();
    }

    [Fact]
    public void AHardLinkThroughASymlinkedParentCannotReachAHostFile()
    {
        var layer = new TarBuilder().Symlink("l", Victim("t")).HardLink("stolen", "l/secret").Tar();

        var ex = Should.Throw<CorralException>(() => Unpack(layer));

        ex.Message.ShouldStartWith("refusing layer");
        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        VictimUntouched();
        Path.Exists(Path.Combine(Target, "stolen")).ShouldBeFalse();
    }

    public static TheoryData<string, byte[]> EscapingLinks => new()
    {
        // Issue #10's example: the name says depth 8, the entry lands at depth 0.
        { "collapsing parent", new TarBuilder().Symlink("a", "/").Symlink("a/a/a/a/a/a/a/a/esc", "../../../../../../../../etc/shadow").Tar() },
        { "collapsing relative parent", new TarBuilder().Symlink("d", ".").Symlink("d/d/d/esc", "../../../etc/shadow").Tar() },
        { "parent through a relative link up", new TarBuilder().Dir("x/y/").Symlink("x/y/up", "../..").Symlink("x/y/up/esc", "../etc").Tar() },
        { "nested link in the target", new TarBuilder().Dir("sub/").Symlink("sub/x", "..").Symlink("sub/y", "x/../etc").Tar() },
        { "link made escaping by a later entry", new TarBuilder().Dir("sub/").Symlink("sub/y", "x/../etc").Symlink("sub/x", "..").Tar() },
        { "hard link to a link at another depth", new TarBuilder().Dir("d1/d2/").Symlink("d1/d2/l", "../../etc").HardLink("h", "d1/d2/l").Tar() },
        { "plain climb", new TarBuilder().Dir("a/").Symlink("a/esc", "../../etc/shadow").Tar() },
        { "climb after a dot", new TarBuilder().Symlink("esc", "./../etc").Tar() },
    };

    [Theory]
    [MemberData(nameof(EscapingLinks))]
    public void SymlinksAreJudgedFromWhereTheyReallyLand(string family, byte[] layer)
    {
        var ex = Should.Throw<CorralException>(() => Unpack(layer), family);

        ex.Message.ShouldStartWith("refusing layer");
        ex.Message.ShouldContain("outside the layer");
        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        VictimUntouched();
    }

    [Fact]
    public void LinksThatStayInsideAreKept()
    {
        var layer = new TarBuilder()
            .Dir("usr/lib/x/")
            .Symlink("lib", "usr/lib")
            .Symlink("lib/x/up", "../../bin")
            .Symlink("usr/lib/x/abs", "/etc/shadow")
            .Symlink("a", "/")
            .Symlink("a/a/ok", "usr/lib")
            .Dir("d1/d2/")
            .Symlink("d1/d2/l", "../x")
            .HardLink("d1/h", "d1/d2/l")
            .Tar();

        Unpack(layer);

        new FileInfo(Path.Combine(Target, "usr/lib/x/up")).LinkTarget.ShouldBe("../../bin");
        new FileInfo(Path.Combine(Target, "usr/lib/x/abs")).LinkTarget.ShouldBe("/etc/shadow");
        new FileInfo(Path.Combine(Target, "ok")).LinkTarget.ShouldBe("usr/lib");
        new FileInfo(Path.Combine(Target, "d1/h")).LinkTarget.ShouldBe("../x");
    }

    [Fact]
    public void AGzipOfZerosStopsAtTheLayerCap()
    {
        const long cap = 8 << 20;
        var bomb = TarBuilder.GzipZeros("zeros", 512L << 20);
        bomb.Length.ShouldBeLessThan(2 << 20);
        var counted = new CountingReadStream(new MemoryStream(bomb));

        var ex = Should.Throw<CorralException>(() => LayerUnpacker.Unpack(counted, Target, WhiteoutMode.Overlay, new UnpackBudget(cap, 100), TestContext.Current.CancellationToken));

        ex.Kind.ShouldBe(ErrorKind.ResourceExhausted);
        ex.Message.ShouldContain("unpacks to more than");
        ex.Message.ShouldContain("--max-layer-size");
        var written = new FileInfo(Path.Combine(Target, "zeros")).Length;
        written.ShouldBeLessThanOrEqualTo(cap);
        counted.Total.ShouldBeLessThan(bomb.Length / 2, "the compressed stream must not be read to its end");
    }

    [Fact]
    public void TooManyEntriesAreRefused()
    {
        var builder = new TarBuilder();
        for (var i = 0; i < 20; i++)
        {
            builder.File($"f{i}", "x");
        }

        var ex = Should.Throw<CorralException>(() => LayerUnpacker.Unpack(new MemoryStream(builder.Tar()), Target, WhiteoutMode.Overlay, new UnpackBudget(1 << 20, 10), TestContext.Current.CancellationToken));

        ex.Kind.ShouldBe(ErrorKind.ResourceExhausted);
        ex.Message.ShouldContain("more than 10 entries");
        Directory.GetFileSystemEntries(Target).Length.ShouldBe(10);
    }

    [Fact]
    public void TheLayerBudgetIsTheSmallestOfLayerRatioAndImageCaps()
    {
        var limits = new UnpackLimits { MaxLayerBytes = 1L << 30, MaxImageBytes = 4L << 30, MaxRatio = 50, RatioFloorBytes = 64 << 20 };

        limits.LayerBudget(10 << 20, 4L << 30).MaxBytes.ShouldBe(500L << 20);
        limits.LayerBudget(100 << 20, 4L << 30).MaxBytes.ShouldBe(1L << 30);
        limits.LayerBudget(1 << 10, 4L << 30).MaxBytes.ShouldBe(64L << 20);
        limits.LayerBudget(100 << 20, 100 << 20).MaxBytes.ShouldBe(100L << 20);
        limits.LayerBudget(100 << 20, 100 << 20).Option.ShouldBe("--max-image-size");
        (limits with { MaxRatio = 0 }).LayerBudget(10 << 20, 4L << 30).MaxBytes.ShouldBe(1L << 30);
        Should.Throw<CorralException>(() => UnpackLimits.From(maxLayer: "lots")).Kind.ShouldBe(ErrorKind.InvalidArgument);
        UnpackLimits.From(maxLayer: "2Gi", maxImage: "3Gi", maxRatio: "0").ShouldBe(UnpackLimits.Default with { MaxLayerBytes = 2L << 30, MaxImageBytes = 3L << 30, MaxRatio = 0 });
    }

    private static string StatOwner(string path)
    {
        var info = new System.Diagnostics.ProcessStartInfo("stat") { RedirectStandardOutput = true };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add("%u:%g");
        info.ArgumentList.Add(path);
        using var process = System.Diagnostics.Process.Start(info)!;
        var output = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        return output;
    }

    private sealed class CountingReadStream(Stream inner) : Stream
    {
        public long Total { get; private set; }

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = inner.Read(buffer, offset, count);
            Total += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
