using Corral.Common;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Common;

/// <summary>Corral's own files: 0600/0700 set explicitly, deletes never through a symlink, result files checked first.</summary>
public sealed class PrivateFilesTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("corral-private-").FullName;

    private readonly List<string> _canaries = [];

    public void Dispose()
    {
        Directory.Delete(_root, recursive: true);
        _canaries.ForEach(c => Directory.Delete(c, recursive: true));
    }

    [Fact]
    public void Directories_are_0700_and_files_0600()
    {
        var dir = PrivateFiles.CreateDirectory(Path.Combine(_root, "a", "b"));
        PrivateFiles.WriteAtomically(Path.Combine(dir, "x.json"), "{}");
        using (PrivateFiles.Open(Path.Combine(dir, "log"), FileMode.Create, FileAccess.Write))
        {
        }

        File.GetUnixFileMode(Path.Combine(_root, "a")).ShouldBe(PrivateFiles.DirectoryMode);
        File.GetUnixFileMode(dir).ShouldBe(PrivateFiles.DirectoryMode);
        File.GetUnixFileMode(Path.Combine(dir, "x.json")).ShouldBe(PrivateFiles.FileMode);
        File.GetUnixFileMode(Path.Combine(dir, "log")).ShouldBe(PrivateFiles.FileMode);
    }

    [Fact]
    public void An_existing_world_readable_file_is_made_private_when_rewritten()
    {
        var file = Path.Combine(_root, "old.json");
        File.WriteAllText(file, "old");
        File.SetUnixFileMode(file, (UnixFileMode)0b110_110_110);

        PrivateFiles.WriteAllText(file, "new");

        File.GetUnixFileMode(file).ShouldBe(PrivateFiles.FileMode);
        File.ReadAllText(file).ShouldBe("new");
    }

    [Fact]
    public void A_symlink_where_a_directory_belongs_is_refused()
    {
        var canary = Canary();
        File.CreateSymbolicLink(Path.Combine(_root, "bundles"), canary);

        Should.Throw<CorralException>(() => PrivateFiles.CreateDirectory(Path.Combine(_root, "bundles"))).Kind.ShouldBe(ErrorKind.HostFault);
    }

    [Fact]
    public void A_delete_through_a_symlinked_parent_is_refused_and_the_target_survives()
    {
        var canary = Canary();
        Directory.CreateDirectory(Path.Combine(canary, "c-1"));
        File.WriteAllText(Path.Combine(canary, "c-1", "keep"), "keep");
        File.CreateSymbolicLink(Path.Combine(_root, "bundles"), canary);

        Should.Throw<CorralException>(() => PrivateFiles.DeleteTree(_root, Path.Combine(_root, "bundles", "c-1")));

        File.ReadAllText(Path.Combine(canary, "c-1", "keep")).ShouldBe("keep");
        File.Exists(Path.Combine(canary, "canary")).ShouldBeTrue();
    }

    [Fact]
    public void A_symlink_as_the_tree_itself_is_removed_as_a_link_only()
    {
        var canary = Canary();
        Directory.CreateDirectory(Path.Combine(_root, "bundles"));
        var link = Path.Combine(_root, "bundles", "c-2");
        File.CreateSymbolicLink(link, canary);

        PrivateFiles.DeleteTree(_root, link);

        Path.Exists(link).ShouldBeFalse();
        File.Exists(Path.Combine(canary, "canary")).ShouldBeTrue();
    }

    [Fact]
    public void Symlinks_inside_a_deleted_tree_are_not_followed()
    {
        var canary = Canary();
        var tree = Directory.CreateDirectory(Path.Combine(_root, "bundles", "c-3")).FullName;
        File.CreateSymbolicLink(Path.Combine(tree, "rootfs"), canary);

        PrivateFiles.DeleteTree(_root, tree);

        Directory.Exists(tree).ShouldBeFalse();
        File.Exists(Path.Combine(canary, "canary")).ShouldBeTrue();
    }

    [Theory]
    [InlineData("/dev/full", "a character device")]
    [InlineData("/dev/null", "a character device")]
    [InlineData("/tmp", "a directory")]
    [InlineData("/proc/self/status", "kernel pseudo-filesystem")]
    [InlineData("/proc/sys/kernel/hostname", "kernel pseudo-filesystem")]
    [InlineData("/no/such/dir/r.json", "its directory does not exist")]
    public void Result_files_that_are_no_regular_file_are_refused(string path, string expected)
    {
        var ex = Should.Throw<CorralException>(() => ResultFile.Resolve(path));
        ex.Kind.ShouldBe(ErrorKind.InvalidArgument);
        ex.Message.ShouldContain(expected);
    }

    [Fact]
    public void Result_files_that_are_fifos_sockets_or_links_to_devices_are_refused()
    {
        var fifo = Path.Combine(_root, "fifo");
        System.Diagnostics.Process.Start("mkfifo", fifo)!.WaitForExit();
        Should.Throw<CorralException>(() => ResultFile.Resolve(fifo)).Message.ShouldContain("a FIFO");

        var link = Path.Combine(_root, "to-full");
        File.CreateSymbolicLink(link, "/dev/full");
        Should.Throw<CorralException>(() => ResultFile.Resolve(link)).Message.ShouldContain("a character device");

        var dangling = Path.Combine(_root, "dangling");
        File.CreateSymbolicLink(dangling, Path.Combine(_root, "nothing"));
        Should.Throw<CorralException>(() => ResultFile.Resolve(dangling)).Message.ShouldContain("a symlink to nothing");
    }

    [Fact]
    public void Result_files_are_written_private_and_through_a_link_to_its_regular_file()
    {
        var fresh = ResultFile.Resolve(Path.Combine(_root, "r.json"));
        var target = Path.Combine(_root, "target.json");
        File.WriteAllText(target, "old");
        var link = Path.Combine(_root, "link.json");
        File.CreateSymbolicLink(link, target);
        var viaLink = ResultFile.Resolve(link);
        var record = new ExitRecord { Id = "c-1", Runtime = "runc", Command = ["true"], ExitCode = 0, StartedAt = DateTimeOffset.UnixEpoch, ExitedAt = DateTimeOffset.UnixEpoch, DurationMs = 1 };

        ResultFile.Write(fresh, record);
        ResultFile.Write(viaLink, record);

        File.GetUnixFileMode(fresh).ShouldBe(PrivateFiles.FileMode);
        File.ReadAllText(target).ShouldContain("\"signal\": null");
        new FileInfo(link).LinkTarget.ShouldBe(target);
    }

    private string Canary()
    {
        var canary = Directory.CreateTempSubdirectory("corral-canary-").FullName;
        File.WriteAllText(Path.Combine(canary, "canary"), "alive");
        _canaries.Add(canary);
        return canary;
    }
}
