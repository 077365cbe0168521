using System.Diagnostics;
using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using Corral.Common;
using Corral.Files;
using Corral.Interop;
using Corral.Tests.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Files;

/// <summary>
/// Copies into and out of a container root made under a temp dir. Every hostile case also proves
/// that a canary directory on the host (under /tmp, outside the root) stays empty.
/// </summary>
public sealed class ContainerFilesTests : IDisposable
{
    private static readonly DateTimeOffset Then = new(2020, 1, 2, 3, 4, 5, TimeSpan.Zero);
    private static readonly UnixFileMode Mode640 = (UnixFileMode)0b110_100_000;

    private readonly TempDir _temp = new();
    private readonly string _canary = Directory.CreateTempSubdirectory("corral-canary-").FullName;

    public ContainerFilesTests()
    {
        Directory.CreateDirectory(Root("etc"));
        Directory.CreateDirectory(Root("tmp"));
        File.WriteAllText(Root("etc/hostname"), "container-host\n");
    }

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private string RootDir => _temp.Combine("root");

    public void Dispose()
    {
        _temp.Dispose();
        Directory.Delete(_canary, recursive: true);
    }

    // ---- copy in: docker cp semantics ----

    [Fact]
    public void AFileGoesIntoAnExistingDirectoryWithItsModeTimeAndOwner()
    {
        var tar = new TarBuilder().File("a.txt", "hello", Mode640, uid: 1234, gid: 5678).Tar();

        var result = CopyIn("/etc", tar);

        result.Entries.ShouldBe(1);
        result.Bytes.ShouldBe(tar.Length);
        File.ReadAllText(Root("etc/a.txt")).ShouldBe("hello");
        File.GetUnixFileMode(Root("etc/a.txt")).ShouldBe(Mode640);
        File.GetLastWriteTimeUtc(Root("etc/a.txt")).ShouldBe(Then.UtcDateTime);
        Owner(Root("etc/a.txt")).ShouldBe((1234, 5678));
    }

    [Fact]
    public void AFileToANewNameIsRenamed()
    {
        CopyIn("/etc/b.txt", new TarBuilder().File("a.txt", "hello").Tar());

        File.ReadAllText(Root("etc/b.txt")).ShouldBe("hello");
        Path.Exists(Root("etc/a.txt")).ShouldBeFalse();
    }

    [Fact]
    public void ADirectoryToANewNameIsRenamedWithItsContentAndMode()
    {
        var tar = new TarBuilder()
            .Dir("dir/", (UnixFileMode)0b111_101_000)
            .File("dir/x", "x")
            .File("dir/sub/y", "y")
            .HardLink("dir/z", "dir/x")
            .Tar();

        CopyIn("/newdir", tar);

        File.ReadAllText(Root("newdir/x")).ShouldBe("x");
        File.ReadAllText(Root("newdir/sub/y")).ShouldBe("y");
        File.ReadAllText(Root("newdir/z")).ShouldBe("x");
        File.GetUnixFileMode(Root("newdir")).ShouldBe((UnixFileMode)0b111_101_000);
        Path.Exists(Root("dir")).ShouldBeFalse();
    }

    [Fact]
    public void AFileReplacesAnExistingFile()
    {
        File.WriteAllText(Root("etc/hosts"), "old");

        CopyIn("/etc/hosts", new TarBuilder().File("whatever", "new").Tar());

        File.ReadAllText(Root("etc/hosts")).ShouldBe("new");
        Path.Exists(Root("etc/whatever")).ShouldBeFalse();
    }

    [Fact]
    public void ACopyOntoASymlinkWritesWhereItPointsInsideTheRoot()
    {
        File.CreateSymbolicLink(Root("etc/link"), "/etc/real");
        File.CreateSymbolicLink(Root("etcdir"), "etc");

        CopyIn("/etc/link", new TarBuilder().File("a", "through the link").Tar());
        CopyIn("/etcdir", new TarBuilder().File("c", "in etc").Tar());

        File.ReadAllText(Root("etc/real")).ShouldBe("through the link");
        new FileInfo(Root("etc/link")).LinkTarget.ShouldBe("/etc/real");
        File.ReadAllText(Root("etc/c")).ShouldBe("in etc");
    }

    [Fact]
    public void AMissingParentIsRefusedAndNothingIsWritten()
    {
        var ex = Should.Throw<CorralException>(() => CopyIn("/nope/b.txt", new TarBuilder().File("a", "x").Tar()));

        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        ex.Message.ShouldNotContain("\n");
        ex.Message.ShouldContain("/nope/b.txt");
        Path.Exists(Root("nope")).ShouldBeFalse();
    }

    [Fact]
    public void ADirectoryOntoAFileIsRefusedAndTheFileKept()
    {
        File.WriteAllText(Root("etc/hosts"), "old");

        var ex = Should.Throw<CorralException>(() => CopyIn("/etc/hosts", new TarBuilder().Dir("d/").File("d/x", "x").Tar()));

        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        ex.Message.ShouldContain("cannot copy a directory onto /etc/hosts");
        File.ReadAllText(Root("etc/hosts")).ShouldBe("old");
    }

    [Fact]
    public void TwoTopLevelNamesToANewNameAreRefusedAndWhatWasCreatedIsRemoved()
    {
        var ex = Should.Throw<CorralException>(() => CopyIn("/etc/new", new TarBuilder().File("a", "a").File("b", "b").Tar()));

        ex.Message.ShouldStartWith("refusing archive: entry 'b'");
        Path.Exists(Root("etc/new")).ShouldBeFalse();
        Path.Exists(Root("etc/b")).ShouldBeFalse();
    }

    [Fact]
    public void AnExistingDirectoryIsNotReplacedByAFileNorTheOtherWayRound()
    {
        Directory.CreateDirectory(Root("etc/conf.d"));
        File.WriteAllText(Root("etc/conf.d/keep"), "keep");
        File.WriteAllText(Root("etc/plain"), "plain");

        Should.Throw<CorralException>(() => CopyIn("/etc", new TarBuilder().File("conf.d", "x").Tar()))
            .Message.ShouldContain("would replace a directory with a non-directory");
        Should.Throw<CorralException>(() => CopyIn("/etc", new TarBuilder().Dir("plain/").Tar()))
            .Message.ShouldContain("would replace a non-directory with a directory");

        File.ReadAllText(Root("etc/conf.d/keep")).ShouldBe("keep");
        File.ReadAllText(Root("etc/plain")).ShouldBe("plain");
    }

    [Fact]
    public void TheOwnerOverrideOwnsEveryCreatedEntry()
    {
        var tar = new TarBuilder()
            .Dir("d/")
            .File("d/f", "f", uid: 1, gid: 2)
            .File("d/implicit/g", "g")
            .Symlink("d/l", "f")
            .Entry(new PaxTarEntry(TarEntryType.Fifo, "d/p") { Mode = Mode640 })
            .Tar();

        CopyIn("/", tar, new FileOwner(1000, 1001));

        foreach (var path in new[] { "d", "d/f", "d/implicit", "d/implicit/g", "d/l", "d/p" })
        {
            Owner(Root(path)).ShouldBe((1000, 1001), path);
        }

        Owner(RootDir).ShouldBe((0, 0));
    }

    [Fact]
    public void SetIdBitsAreDropped()
    {
        var tar = new TarBuilder()
            .File("suid", "x", (UnixFileMode)0b110_111_101_101)
            .Dir("sgid/", (UnixFileMode)0b010_111_101_101)
            .Tar();

        CopyIn("/", tar);

        File.GetUnixFileMode(Root("suid")).ShouldBe((UnixFileMode)0b111_101_101);
        File.GetUnixFileMode(Root("sgid")).ShouldBe((UnixFileMode)0b111_101_101);
    }

    [Fact]
    public void AnEntryNamingTheDestinationItselfIsSkipped()
    {
        File.SetUnixFileMode(Root("etc"), (UnixFileMode)0b111_101_101);
        var before = Directory.GetLastWriteTimeUtc(Root("etc"));
        var tar = new TarBuilder()
            .Entry(new PaxTarEntry(TarEntryType.Directory, "./") { Mode = (UnixFileMode)0b111_111_111, Uid = 77, Gid = 77, ModificationTime = Then })
            .File("./x", "x")
            .Tar();

        CopyIn("/etc", tar);

        File.GetUnixFileMode(Root("etc")).ShouldBe((UnixFileMode)0b111_101_101);
        Owner(Root("etc")).ShouldBe((0, 0));
        Directory.GetLastWriteTimeUtc(Root("etc")).ShouldBeGreaterThanOrEqualTo(before);
        File.ReadAllText(Root("etc/x")).ShouldBe("x");
    }

    [Fact]
    public void AnExistingDirectoryIsMergedIntoWithItsOwnerModeAndTimesKept()
    {
        File.SetUnixFileMode(Root("etc"), (UnixFileMode)0b111_101_101);
        Directory.SetLastWriteTimeUtc(Root("etc"), Then.UtcDateTime);
        var tar = new TarBuilder()
            .Entry(new PaxTarEntry(TarEntryType.Directory, "etc/") { Mode = (UnixFileMode)0b111_111_111, Uid = 77, Gid = 77 })
            .File("etc/x", "x")
            .File("late/y", "y")
            .Entry(new PaxTarEntry(TarEntryType.Directory, "late/") { Mode = (UnixFileMode)0b111_000_000 })
            .Tar();

        CopyIn("/", tar, new FileOwner(1000, 1000));

        File.GetUnixFileMode(Root("etc")).ShouldBe((UnixFileMode)0b111_101_101);
        Owner(Root("etc")).ShouldBe((0, 0));
        File.ReadAllText(Root("etc/hostname")).ShouldBe("container-host\n");
        Owner(Root("etc/x")).ShouldBe((1000, 1000));

        // A directory this copy created itself (for late/y) still takes its entry's mode.
        File.GetUnixFileMode(Root("late")).ShouldBe((UnixFileMode)0b111_000_000);
        Owner(Root("late")).ShouldBe((1000, 1000));
    }

    [Fact]
    public void WhiteoutNamesArePlainNames()
    {
        File.WriteAllText(Root("etc/foo"), "kept");

        CopyIn("/etc", new TarBuilder().File(".wh.foo", "plain").File(".wh..wh..opq", "also plain").Tar());

        File.ReadAllText(Root("etc/foo")).ShouldBe("kept");
        File.ReadAllText(Root("etc/.wh.foo")).ShouldBe("plain");
        File.ReadAllText(Root("etc/.wh..wh..opq")).ShouldBe("also plain");
    }

    // ---- copy in: hostile archives ----

    public static TheoryData<string, byte[]> HostileArchives => new()
    {
        { "absolute name", new TarBuilder().File("/tmp/evil", "x").Tar() },
        { "dot-dot", new TarBuilder().File("a/../../evil", "x").Tar() },
        { "symlink up then through it", new TarBuilder().Symlink("evil", "../../../..").File("evil/x", "x").Tar() },
        { "symlink up hidden in a chain", new TarBuilder().Symlink("a", ".").Symlink("b", "a/..").File("b/x", "x").Tar() },
        { "device node", new TarBuilder().Device("null").Tar() },
        { "block device", new TarBuilder().Device("sda", TarEntryType.BlockDevice).Tar() },
        { "hard link to a missing file", new TarBuilder().HardLink("h", "missing").Tar() },
        { "hard link with dot-dot", new TarBuilder().HardLink("h", "../etc/hostname").Tar() },
        { "hard link with an absolute target", new TarBuilder().HardLink("h", "/etc/hostname").Tar() },
        { "hard link to a file already in the container", new TarBuilder().HardLink("h", "etc/hostname").Tar() },
    };

    [Theory]
    [MemberData(nameof(HostileArchives))]
    public void AHostileArchiveIsRefusedAndNothingLeavesTheRoot(string why, byte[] tar)
    {
        var ex = Should.Throw<CorralException>(() => CopyIn("/", tar), why);
        TestContext.Current.TestOutputHelper?.WriteLine($"{why}: {ex.Message}");

        ex.Kind.ShouldBe(ErrorKind.InvalidArgument, why);
        ex.Message.ShouldStartWith("refusing archive: entry '", customMessage: why);
        ex.Message.ShouldNotContain("\n");
        CanaryEmpty();
        Path.Exists(Root("h")).ShouldBeFalse(why);
        File.ReadAllText(Root("etc/hostname")).ShouldBe("container-host\n");
    }

    [Fact]
    public void ASymlinkUpIsFineWhenItLandsInsideTheRoot()
    {
        Directory.CreateDirectory(Root("a/b/c/d"));

        CopyIn("/a/b/c/d", new TarBuilder().Symlink("up", "../../..").File("up/x", "x").Tar());

        File.ReadAllText(Root("a/x")).ShouldBe("x");
        CanaryEmpty();
    }

    [Fact]
    public void AnAbsoluteSymlinkEntryNamesAPathInTheContainer()
    {
        CopyIn("/", new TarBuilder().Symlink("out", _canary).File("out/x", "x").Tar());

        File.ReadAllText(Root(_canary.TrimStart('/') + "/x")).ShouldBe("x");
        CanaryEmpty();
    }

    [Fact]
    public void ADestinationThroughARootSymlinkToAHostPathStaysInTheRoot()
    {
        File.CreateSymbolicLink(Root("out"), _canary);
        var tar = new TarBuilder().File("a", "x").Tar();

        // <root>/tmp/<canary> does not exist: refused, the host's canary is not the parent.
        Should.Throw<CorralException>(() => CopyIn("/out/x", tar)).Kind.ShouldBe(ErrorKind.InvalidArgument);
        CanaryEmpty();

        Directory.CreateDirectory(Root(_canary.TrimStart('/')));
        CopyIn("/out/x", tar);
        CopyIn("/out", new TarBuilder().File("y", "y").Tar());
        CopyIn("/", new TarBuilder().File("out/z", "z").Tar());

        CanaryEmpty();
        var inside = Root(_canary.TrimStart('/'));
        File.ReadAllText(Path.Combine(inside, "x")).ShouldBe("x");
        File.ReadAllText(Path.Combine(inside, "y")).ShouldBe("y");
        File.ReadAllText(Path.Combine(inside, "z")).ShouldBe("z");
    }

    [Fact]
    public void ARootSymlinkWithDotDotsCannotClimbOut()
    {
        File.CreateSymbolicLink(Root("up"), "../../../../../../" + _canary.TrimStart('/'));

        Should.Throw<CorralException>(() => CopyIn("/up/x", new TarBuilder().File("a", "x").Tar()));
        Directory.CreateDirectory(Root(_canary.TrimStart('/')));
        CopyIn("/up/x", new TarBuilder().File("a", "x").Tar());

        CanaryEmpty();
        File.ReadAllText(Root(_canary.TrimStart('/') + "/x")).ShouldBe("x");
    }

    [Fact]
    public void TheEntryCapIsEnforced()
    {
        var builder = new TarBuilder();
        for (var i = 0; i < 11; i++)
        {
            builder.File($"f{i}", "x");
        }

        var ex = Should.Throw<CorralException>(() => ContainerFiles.CopyIn(RootDir, "/tmp", new MemoryStream(builder.Tar()), null, new CopyLimits(1 << 20, 10), Token));

        ex.Kind.ShouldBe(ErrorKind.ResourceExhausted);
        ex.Message.ShouldContain("more than 10 entries");
    }

    [Fact]
    public void TheByteCapIsEnforcedWhileReading()
    {
        var tar = new TarBuilder().Entry(new PaxTarEntry(TarEntryType.RegularFile, "big") { DataStream = new ZeroStream(10 << 20) }).Tar();

        var ex = Should.Throw<CorralException>(() => ContainerFiles.CopyIn(RootDir, "/tmp/big", new MemoryStream(tar), null, new CopyLimits(1 << 20, 10), Token));

        ex.Kind.ShouldBe(ErrorKind.ResourceExhausted);
        Path.Exists(Root("tmp/big")).ShouldBeFalse();
    }

    [Fact]
    public void ARelativeContainerPathIsRefused()
    {
        Should.Throw<CorralException>(() => CopyIn("etc", new TarBuilder().File("a", "x").Tar())).Kind.ShouldBe(ErrorKind.InvalidArgument);
    }

    // ---- copy out ----

    [Fact]
    public void AFileComesOutUnderItsNameWithItsMetadata()
    {
        File.WriteAllText(Root("etc/hosts"), "127.0.0.1 localhost\n");
        File.SetUnixFileMode(Root("etc/hosts"), Mode640);
        File.SetLastWriteTimeUtc(Root("etc/hosts"), Then.UtcDateTime);
        LibC.lchown(Root("etc/hosts"), 1234, 5678).ShouldBe(0);

        var entries = ReadTar(CopyOut("/etc/hosts"));

        var entry = entries.ShouldHaveSingleItem();
        entry.Name.ShouldBe("hosts");
        entry.Type.ShouldBe(TarEntryType.RegularFile);
        entry.Content.ShouldBe("127.0.0.1 localhost\n"u8.ToArray());
        entry.Mode.ShouldBe(Mode640);
        entry.Uid.ShouldBe(1234);
        entry.Gid.ShouldBe(5678);
        entry.Time.ShouldBe(Then);
    }

    [Fact]
    public void ASymlinkToAnAbsolutePathIsResolvedInTheRootNotOnTheHost()
    {
        File.CreateSymbolicLink(Root("leak"), "/etc/hostname");

        var entry = ReadTar(CopyOut("/leak")).ShouldHaveSingleItem();

        entry.Name.ShouldBe("leak");
        Encoding.UTF8.GetString(entry.Content).ShouldBe("container-host\n");
    }

    [Fact]
    public void ARootSymlinkToAHostDirectoryLeaksNothing()
    {
        File.WriteAllText(Path.Combine(_canary, "secret"), "host secret");
        File.CreateSymbolicLink(Root("out"), _canary);
        File.CreateSymbolicLink(Root("up"), "../../../../../../../" + _canary.TrimStart('/'));
        Directory.CreateDirectory(Root("tree"));
        File.CreateSymbolicLink(Root("tree/out"), _canary);

        Should.Throw<CorralException>(() => CopyOut("/out/secret")).Kind.ShouldBe(ErrorKind.NotFound);
        Should.Throw<CorralException>(() => CopyOut("/up/secret")).Kind.ShouldBe(ErrorKind.NotFound);
        var entries = ReadTar(CopyOut("/tree"));

        entries.Select(e => e.Name).ShouldBe(["tree/", "tree/out"]);
        entries[1].Type.ShouldBe(TarEntryType.SymbolicLink);
        entries[1].LinkName.ShouldBe(_canary);
        File.Delete(Path.Combine(_canary, "secret"));
    }

    [Fact]
    public void AMissingPathFailsWithOneLine()
    {
        var ex = Should.Throw<CorralException>(() => CopyOut("/no/such"));

        ex.Kind.ShouldBe(ErrorKind.NotFound);
        ex.Message.ShouldBe("no such file or directory in the container: /no/such");
    }

    [Fact]
    public void ATreeComesOutWithSymlinksFifosAndNoDevices()
    {
        Directory.CreateDirectory(Root("srv/a/b"));
        File.WriteAllText(Root("srv/a/b/f"), "f");
        File.CreateSymbolicLink(Root("srv/a/l"), "b/f");
        LibC.mknod(Root("srv/null"), LibC.S_IFCHR | 0b110_110_110, (1UL << 8) | 3).ShouldBe(0);
        LibC.mknod(Root("srv/pipe"), LibC.S_IFIFO | 0b110_100_100, 0).ShouldBe(0);

        var entries = ReadTar(CopyOut("/srv"));

        entries.Select(e => e.Name).ShouldBe(["srv/", "srv/a/", "srv/a/b/", "srv/a/b/f", "srv/a/l", "srv/pipe"]);
        entries.Single(e => e.Name == "srv/a/l").LinkName.ShouldBe("b/f");
        entries.Single(e => e.Name == "srv/pipe").Type.ShouldBe(TarEntryType.Fifo);
    }

    [Fact]
    public void TheRootComesOutAsItsContent()
    {
        var names = ReadTar(CopyOut("/")).Select(e => e.Name).ToList();

        names.ShouldBe(["etc/", "etc/hostname", "tmp/"]);
        ReadTar(CopyOut("/etc/.")).Select(e => e.Name).ShouldBe(["hostname"]);
    }

    [Fact]
    public void CopyOutLimitsAreEnforced()
    {
        Directory.CreateDirectory(Root("many"));
        for (var i = 0; i < 20; i++)
        {
            File.WriteAllText(Root($"many/f{i}"), "x");
        }

        File.WriteAllBytes(Root("big"), new byte[2 << 20]);

        Should.Throw<CorralException>(() => ContainerFiles.CopyOut(RootDir, "/many", new MemoryStream(), new CopyLimits(1L << 30, 10), Token))
            .Kind.ShouldBe(ErrorKind.ResourceExhausted);
        var output = new MemoryStream();
        Should.Throw<CorralException>(() => ContainerFiles.CopyOut(RootDir, "/big", output, new CopyLimits(1 << 20, 10), Token))
            .Kind.ShouldBe(ErrorKind.ResourceExhausted);
        output.Length.ShouldBeLessThan(1 << 20);
    }

    [Fact]
    public void StatTellsWhatIsThere()
    {
        File.CreateSymbolicLink(Root("leak"), "/etc/hostname");

        var file = ContainerFiles.Stat(RootDir, "/leak").ShouldNotBeNull();
        file.Name.ShouldBe("leak");
        file.Kind.ShouldBe(ContainerPathKind.File);
        file.Size.ShouldBe("container-host\n".Length);
        ContainerFiles.Stat(RootDir, "/etc").ShouldNotBeNull().IsDirectory.ShouldBeTrue();
        ContainerFiles.Stat(RootDir, "/").ShouldNotBeNull().IsDirectory.ShouldBeTrue();
        ContainerFiles.Stat(RootDir, "/missing").ShouldBeNull();
        ContainerFiles.Stat(RootDir, "/etc/hostname/x").ShouldBeNull();
    }

    // ---- round trips ----

    [Fact]
    public void ATreeRoundTripsWithModesTimesAndSymlinks()
    {
        Directory.CreateDirectory(Root("src/nested/deeper"));
        File.WriteAllText(Root("src/top.txt"), "top");
        File.WriteAllText(Root("src/nested/deeper/exec.sh"), "#!/bin/sh\n");
        File.SetUnixFileMode(Root("src/nested/deeper/exec.sh"), (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(Root("src/nested"), (UnixFileMode)0b111_000_000);
        File.CreateSymbolicLink(Root("src/nested/link"), "deeper/exec.sh");
        var time = new DateTime(2019, 5, 6, 7, 8, 9, DateTimeKind.Utc);
        foreach (var path in new[] { "src/top.txt", "src/nested/deeper/exec.sh", "src/nested/deeper", "src/nested", "src" })
        {
            File.SetLastWriteTimeUtc(Root(path), time);
        }

        var tar = CopyOut("/src");
        CopyIn("/copy", tar);

        File.ReadAllText(Root("copy/top.txt")).ShouldBe("top");
        File.ReadAllText(Root("copy/nested/deeper/exec.sh")).ShouldBe("#!/bin/sh\n");
        File.GetUnixFileMode(Root("copy/nested/deeper/exec.sh")).ShouldBe((UnixFileMode)0b111_101_101);
        File.GetUnixFileMode(Root("copy/nested")).ShouldBe((UnixFileMode)0b111_000_000);
        new FileInfo(Root("copy/nested/link")).LinkTarget.ShouldBe("deeper/exec.sh");
        foreach (var path in new[] { "copy/top.txt", "copy/nested/deeper/exec.sh", "copy/nested/deeper", "copy/nested", "copy" })
        {
            File.GetLastWriteTimeUtc(Root(path)).ShouldBe(time, path);
        }
    }

    [Fact]
    public void AThousandFilesRoundTripQuickly()
    {
        for (var d = 0; d < 10; d++)
        {
            Directory.CreateDirectory(Root($"many/d{d}"));
            for (var f = 0; f < 100; f++)
            {
                File.WriteAllText(Root($"many/d{d}/f{f}"), $"{d}/{f}");
            }
        }

        var watch = Stopwatch.StartNew();
        var output = new MemoryStream();
        var copiedOut = ContainerFiles.CopyOut(RootDir, "/many", output, CopyLimits.Default, Token);
        var copiedIn = ContainerFiles.CopyIn(RootDir, "/back", new MemoryStream(output.ToArray()), null, CopyLimits.Default, Token);
        watch.Stop();

        copiedOut.Entries.ShouldBe(1011);
        copiedIn.Entries.ShouldBe(1011);
        copiedOut.Bytes.ShouldBe(output.Length);
        File.ReadAllText(Root("back/d7/f42")).ShouldBe("7/42");
        Directory.GetFiles(Root("back"), "*", SearchOption.AllDirectories).Length.ShouldBe(1000);
        watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void ABigFileRoundTripsByteForByte()
    {
        var data = new byte[50 << 20];
        new Random(42).NextBytes(data);
        File.WriteAllBytes(Root("big.bin"), data);

        var tarPath = _temp.Combine("big.tar");
        using (var output = File.Create(tarPath))
        {
            ContainerFiles.CopyOut(RootDir, "/big.bin", output, CopyLimits.Default, Token).Entries.ShouldBe(1);
        }

        using (var input = File.OpenRead(tarPath))
        {
            ContainerFiles.CopyIn(RootDir, "/tmp/copy.bin", input, null, CopyLimits.Default, Token).Bytes.ShouldBe(new FileInfo(tarPath).Length);
        }

        SHA256.HashData(File.ReadAllBytes(Root("tmp/copy.bin"))).ShouldBe(SHA256.HashData(data));
    }

    private string Root(string relative) => Path.Combine(RootDir, relative);

    private CopyResult CopyIn(string containerPath, byte[] tar, FileOwner? owner = null) =>
        ContainerFiles.CopyIn(RootDir, containerPath, new MemoryStream(tar), owner, CopyLimits.Default, Token);

    private byte[] CopyOut(string containerPath)
    {
        var output = new MemoryStream();
        ContainerFiles.CopyOut(RootDir, containerPath, output, CopyLimits.Default, Token);
        return output.ToArray();
    }

    private void CanaryEmpty() => Directory.GetFileSystemEntries(_canary).ShouldBeEmpty();

    private static (int Uid, int Gid) Owner(string path)
    {
        var status = FileStatus.Of(-100, path).ShouldNotBeNull();
        return (status.Uid, status.Gid);
    }

    private static List<TarRead> ReadTar(byte[] tar)
    {
        var entries = new List<TarRead>();
        using var reader = new TarReader(new MemoryStream(tar));
        while (reader.GetNextEntry() is { } entry)
        {
            var content = new MemoryStream();
            entry.DataStream?.CopyTo(content);
            entries.Add(new TarRead(entry.Name, entry.EntryType, entry.LinkName, content.ToArray(), entry.Mode, entry.Uid, entry.Gid, entry.ModificationTime));
        }

        return entries;
    }

    private sealed record TarRead(string Name, TarEntryType Type, string LinkName, byte[] Content, UnixFileMode Mode, int Uid, int Gid, DateTimeOffset Time);
}
