using Corral.Images;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Rootfs;

/// <summary>
/// The writable root, --read-only, --disk, -v and --tmpfs mounts and --user, through `corral run`, on
/// runc and gVisor: each container its own copy-on-write layer, gone with it; the lower never written.
/// </summary>
public sealed class WritableRootTests
{
    public static TheoryData<string> Runtimes => new("runc", "gvisor");

    private static Task<CorralResult> RunAsync(params string[] args) => CorralProcess.RunAsync(["run", .. args]);

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Writes_under_usr_local_succeed_and_vanish_with_the_container(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("wr");
        const string Package = "/usr/local/lib/python3.11/dist-packages/corralpkg";

        // A pip-style install: a package tree under /usr/local, imported by the interpreter afterwards.
        var write = await RunAsync(
            "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--",
            "sh", "-c", $"mkdir -p {Package} && echo 'VALUE = 42' > {Package}/__init__.py && cd / && python3 -c 'import corralpkg; print(corralpkg.VALUE)' && touch /etc/written /root/.history /tmp/t && echo ok");
        write.ExitCode.ShouldBe(0, write.Stderr);
        write.Stdout.ShouldBe("42\nok\n");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();

        Path.Exists(Path.Combine(rootfs, Package.TrimStart('/'))).ShouldBeFalse("the shared lower is never written");
        Path.Exists(Path.Combine(rootfs, "etc/written")).ShouldBeFalse();

        var next = await RunAsync("--runtime", runtime, "--rootfs", rootfs, "--", "sh", "-c", $"test ! -e {Package} && test ! -e /etc/written && echo gone");
        next.ExitCode.ShouldBe(0, next.Stderr);
        next.Stdout.ShouldBe("gone\n", "a new container starts from the image, not from the last one's writes");
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Read_only_refuses_writes_to_the_root_and_keeps_a_tmpfs_tmp(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var result = await RunAsync(
            "--runtime", runtime, "--rootfs", rootfs, "--read-only", "--",
            "sh", "-c", "echo x > /tmp/ok && cat /tmp/ok && (echo x > /usr/local/nope) 2>&1; echo rc=$?");
        result.ExitCode.ShouldBe(0, result.Stderr);
        result.Stdout.ShouldContain("x\n");
        result.Stdout.ShouldContain("Read-only file system");
        result.Stdout.ShouldNotContain("rc=0");
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Disk_cap_stops_a_writer_with_ENOSPC_while_a_neighbour_keeps_writing(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var capped = TestHost.NewId("disk");
        var neighbour = TestHost.NewId("disk-n");

        // Both write at once: 64 MiB into a 32 MiB cap, and 48 MiB next to it with no cap.
        var writer = RunAsync("--runtime", runtime, "--rootfs", rootfs, "--name", capped, "--disk", "32Mi", "--",
            "sh", "-c", "dd if=/dev/zero of=/big bs=1M count=64 2>&1; echo rc=$?; df -k / | tail -1");
        var other = RunAsync("--runtime", runtime, "--rootfs", rootfs, "--name", neighbour, "--",
            "sh", "-c", "dd if=/dev/zero of=/big bs=1M count=48 2>/dev/null && sync && wc -c < /big");
        var (w, n) = (await writer, await other);

        w.ExitCode.ShouldBe(0, w.Stderr);
        w.Stdout.ShouldContain("No space left on device");
        w.Stdout.ShouldNotContain("rc=0");
        n.ExitCode.ShouldBe(0, n.Stderr);
        n.Stdout.Trim().ShouldBe((48L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), "the neighbour's writes are untouched by the other's full disk");
        (await TestHost.LeaksAsync(capped)).ShouldBeEmpty();
        (await TestHost.LeaksAsync(neighbour)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Bind_mounts_read_only_refuse_writes_and_read_write_ones_keep_them_on_the_host(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var host = Directory.CreateTempSubdirectory("corral-bind-").FullName;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(host, "in.txt"), "from-host", TestContext.Current.CancellationToken);
            var ro = await RunAsync("--runtime", runtime, "--rootfs", rootfs, "-v", $"{host}:/data:ro", "--",
                "sh", "-c", "cat /data/in.txt; echo; (echo x > /data/out.txt) 2>&1; echo rc=$?");
            ro.ExitCode.ShouldBe(0, ro.Stderr);
            ro.Stdout.ShouldStartWith("from-host\n");
            ro.Stdout.ShouldContain("Read-only file system");
            File.Exists(Path.Combine(host, "out.txt")).ShouldBeFalse();

            var rw = await RunAsync("--runtime", runtime, "--rootfs", rootfs, "-v", $"{host}:/data", "--tmpfs", "/scratch:size=1Mi", "--",
                "sh", "-c", "echo kept > /data/out.txt && (dd if=/dev/zero of=/scratch/f bs=1M count=2) 2>&1 | grep -c 'No space'");
            rw.ExitCode.ShouldBe(0, rw.Stderr);
            rw.Stdout.Trim().ShouldBe("1", "a 1 MiB tmpfs takes no 2 MiB");
            (await File.ReadAllTextAsync(Path.Combine(host, "out.txt"), TestContext.Current.CancellationToken)).ShouldBe("kept\n");
        }
        finally
        {
            Directory.Delete(host, recursive: true);
        }
    }

    [Fact]
    public async Task A_symlinked_host_path_is_mounted_as_it_pointed_at_create()
    {
        var rootfs = await TestHost.RootfsAsync();
        var host = Directory.CreateTempSubdirectory("corral-bindlink-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(host, "a"));
            Directory.CreateDirectory(Path.Combine(host, "b"));
            await File.WriteAllTextAsync(Path.Combine(host, "a", "which"), "a", TestContext.Current.CancellationToken);
            await File.WriteAllTextAsync(Path.Combine(host, "b", "which"), "b", TestContext.Current.CancellationToken);
            var link = Path.Combine(host, "link");
            File.CreateSymbolicLink(link, Path.Combine(host, "a"));

            // The link moves while the container starts: it still gets what the link named at create.
            var run = CorralProcess.Start(["run", "--runtime", "runc", "--rootfs", rootfs, "-v", $"{link}:/data:ro", "--", "sh", "-c", "sleep 1; cat /data/which"]);
            await Task.Delay(TimeSpan.FromMilliseconds(300), TestContext.Current.CancellationToken);
            File.Delete(link);
            File.CreateSymbolicLink(link, Path.Combine(host, "b"));
            var result = await CorralProcess.CollectAsync(run, System.Diagnostics.Stopwatch.StartNew(), TestHost.Scaled(TimeSpan.FromSeconds(60)));
            result.ExitCode.ShouldBe(0, result.Stderr);
            result.Stdout.ShouldBe("a");
        }
        finally
        {
            Directory.Delete(host, recursive: true);
        }
    }

    [Theory]
    [InlineData("-v", "relative/dir:/data", "must be absolute")]
    [InlineData("-v", "/nonexistent-corral-dir:/data", "no such file or directory")]
    [InlineData("-v", "/tmp:/", "cover the container's root")]
    [InlineData("-v", "/tmp:/proc", "belongs to the runtime")]
    [InlineData("-v", "/tmp:/sys/x", "belongs to the runtime")]
    [InlineData("-v", "/tmp:/dev", "belongs to the runtime")]
    [InlineData("-v", "/tmp:/a/../b", "'..'")]
    [InlineData("-v", "/tmp:data", "absolute path")]
    [InlineData("-v", "/tmp:/data:rx", "unknown option")]
    [InlineData("-v", "/:/host", "host's root filesystem")]
    [InlineData("-v", "/dev/null:/null", "not a directory or a regular file")]
    [InlineData("--tmpfs", "/proc", "belongs to the runtime")]
    [InlineData("--tmpfs", "/x:size=lots", "size must be")]
    [InlineData("--disk", "1Ki", "at least 16Mi")]
    [InlineData("--user", "no such user!", "invalid --user")]
    [InlineData("--user", "nosuchuser", "unable to find user nosuchuser")]
    [InlineData("--user", "0:nosuchgroup", "nosuchgroup")]
    public async Task Bad_mounts_sizes_and_users_are_one_line_exit_125_and_nothing_is_created(string option, string value, string message)
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("badfs");
        var result = await RunAsync("--runtime", "runc", "--rootfs", rootfs, "--name", id, option, value, "--", "true");
        result.ExitCode.ShouldBe(125, result.Stderr);
        result.Stderr.Trim().Split('\n').Length.ShouldBe(1, result.Stderr);
        result.Stderr.ShouldContain(message, Case.Insensitive);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task Disk_with_read_only_is_refused()
    {
        var rootfs = await TestHost.RootfsAsync();
        var result = await RunAsync("--runtime", "runc", "--rootfs", rootfs, "--read-only", "--disk", "64Mi", "--", "true");
        result.ExitCode.ShouldBe(125);
        result.Stderr.ShouldContain("not with --read-only");
    }

    [Fact]
    public async Task A_missing_bind_source_is_created_only_when_asked()
    {
        var rootfs = await TestHost.RootfsAsync();
        var parent = Directory.CreateTempSubdirectory("corral-bindcreate-").FullName;
        try
        {
            var source = Path.Combine(parent, "made");
            var result = await RunAsync("--runtime", "runc", "--rootfs", rootfs, "-v", $"{source}:/out:rw,create", "--", "sh", "-c", "echo hi > /out/f");
            result.ExitCode.ShouldBe(0, result.Stderr);
            (await File.ReadAllTextAsync(Path.Combine(source, "f"), TestContext.Current.CancellationToken)).ShouldBe("hi\n");
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task User_comes_from_the_image_by_uid_or_name_and_user_overrides_it(string runtime)
    {
        using var images = await UserImages.CreateAsync();

        var byUid = await RunAsync("--data-dir", images.DataDir, "--runtime", runtime, "--image", UserImages.ByUid, "--pull", "never");
        byUid.ExitCode.ShouldBe(0, byUid.Stderr);
        byUid.Stdout.ShouldBe("uid=1000 gid=0 home=/\n", "USER 1000 without a passwd entry: gid 0 and HOME /, as docker");

        var byName = await RunAsync("--data-dir", images.DataDir, "--runtime", runtime, "--image", UserImages.ByName, "--pull", "never");
        byName.ExitCode.ShouldBe(0, byName.Stderr);
        byName.Stdout.ShouldBe("uid=1234 gid=2345 home=/home/app groups=777\n", "USER app: its passwd entry and its groups");

        var overridden = await RunAsync("--data-dir", images.DataDir, "--runtime", runtime, "--image", UserImages.ByName, "--pull", "never", "--user", "4321:55");
        overridden.ExitCode.ShouldBe(0, overridden.Stderr);
        overridden.Stdout.ShouldBe("uid=4321 gid=55 home=/\n");

        // A working directory the image lacks is made (root's, 0755), as docker does.
        var workdir = await RunAsync("--data-dir", images.DataDir, "--runtime", runtime, "--image", UserImages.ByName, "--pull", "never", "--workdir", "/srv/new/dir", "--",
            "sh", "-c", "echo $PWD");
        workdir.ExitCode.ShouldBe(0, workdir.Stderr);
        workdir.Stdout.ShouldBe("/srv/new/dir\n");
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task User_option_runs_the_rootfs_process_as_that_user(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var result = await RunAsync("--runtime", runtime, "--rootfs", rootfs, "--user", "nobody", "--",
            "sh", "-c", "echo $(id -u) $(id -g) $HOME; touch /root/x 2>&1 | grep -c 'Permission denied'");
        result.ExitCode.ShouldBe(0, result.Stderr);
        result.Stdout.ShouldBe("65534 65534 /nonexistent\n1\n");
    }

    /// <summary>
    /// Two small images in a data dir of their own: dash and libc from the default rootfs, an /etc with
    /// a user "app" (1234:2345, also in group 777), one image with `USER 1000`, one with `USER app`.
    /// Their Cmd prints the process's uid, gid, HOME and supplementary groups with dash builtins only.
    /// </summary>
    internal sealed class UserImages : IDisposable
    {
        public const string ByUid = "localhost/user-uid:1";
        public const string ByName = "localhost/user-name:1";

        private const string Report = "while read k a b c d; do case $k in Uid:) u=$a;; Gid:) g=$a;; Groups:) gs=\"$a $b $c $d\";; esac; done < /proc/self/status; gs=$(echo $gs); echo uid=$u gid=$g home=$HOME${gs:+ groups=$gs}";

        private UserImages(string root) => Root = root;

        public string Root { get; }

        public string DataDir => Path.Combine(Root, "data");

        public static async Task<UserImages> CreateAsync()
        {
            var images = new UserImages(Directory.CreateTempSubdirectory("corral-userimg-").FullName);
            var rootfs = await TestHost.RootfsAsync();
            var etc = Path.Combine(images.Root, "etc-layer", "etc");
            Directory.CreateDirectory(etc);
            await File.WriteAllTextAsync(Path.Combine(etc, "passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:App:/home/app:/bin/sh\n");
            await File.WriteAllTextAsync(Path.Combine(etc, "group"), "root:x:0:\napp:x:2345:\nextra:x:777:someone,app\nother:x:778:someone\n");
            var system = Path.Combine(images.Root, "system.tar");
            string[] entries =
            [
                "./bin", "./lib", "./lib64", "./sbin", "./usr", "./usr/bin", "./usr/lib", "./usr/lib64", "./usr/lib/x86_64-linux-gnu",
                "./usr/bin/dash", "./usr/bin/sh", "./usr/lib/x86_64-linux-gnu/libc.so.6", "./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "./usr/lib64/ld-linux-x86-64.so.2", "./root", "./tmp", "./proc", "./sys", "./dev",
            ];
            var (code, output) = await Tool.RunAsync("tar", ["-C", rootfs, "--no-recursion", "-cf", system, .. entries]);
            code.ShouldBe(0, output);
            var etcLayer = Path.Combine(images.Root, "etc.tar");
            (code, output) = await Tool.RunAsync("tar", ["-C", Path.Combine(images.Root, "etc-layer"), "-cf", etcLayer, "./etc"]);
            code.ShouldBe(0, output);

            var store = new ImageStore(images.DataDir);
            foreach (var (name, user) in new[] { (ByUid, "1000"), (ByName, "app") })
            {
                var layout = Path.Combine(images.Root, "layout-" + user);
                OciLayoutWriter.Write(layout, "1", [system, etcLayer], new ContainerConfig
                {
                    Cmd = ["sh", "-c", Report],
                    Env = ["PATH=/usr/bin:/bin"],
                    User = user,
                });
                await new ImageImporter(store).ImportAsync(layout, name);
            }

            return images;
        }

        public void Dispose()
        {
            try
            {
                Directory.Delete(Root, recursive: true);
            }
            catch (IOException)
            {
                // Best effort: a temp dir.
            }
        }
    }
}
