using System.Diagnostics;
using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using Corral.Client;
using Corral.Interop;
using Corral.IntegrationTests.Daemon;
using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Rootfs;

/// <summary>
/// Files in and out of daemon sandboxes (`corral cp`, CopyIn/CopyOut, the .NET client), on runc and
/// gVisor: running and ended ones, byte for byte, visible inside at once, hostile archives and paths
/// refused with nothing written outside the sandbox's root, and nothing left after removal or a crash.
/// </summary>
public sealed class CopyTests(ITestOutputHelper output)
{
    public static TheoryData<string> Runtimes => new("runc", "gvisor");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Cp_copies_a_file_a_tree_of_1000_files_and_a_200_MB_file_in_and_out_byte_for_byte(string runtime)
    {
        await using var daemon = await DaemonProcess.StartAsync();
        var work = Directory.CreateTempSubdirectory("corral-cp-").FullName;
        try
        {
            var id = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, [], r => r.Idle = true), Ct);
            await new Sandbox(daemon.Client, id).WaitRunningAsync(Ct);
            string[] host = ["--host", "unix://" + daemon.SocketPath];

            // A tree: 1,000 files in 10 directories, varied sizes, modes and times; a symlink; an empty dir.
            var tree = Path.Combine(work, "tree");
            for (var i = 0; i < 1000; i++)
            {
                var file = Path.Combine(tree, $"d{i % 10}", $"f{i}.txt");
                Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                await File.WriteAllTextAsync(file, new string((char)('a' + (i % 26)), i * 7), Ct);
                File.SetUnixFileMode(file, i % 3 == 0 ? (UnixFileMode)0b111_101_101 : (UnixFileMode)0b110_100_000);
                File.SetLastWriteTimeUtc(file, new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddMinutes(i));
            }

            File.CreateSymbolicLink(Path.Combine(tree, "link"), "d1/f1.txt");
            Directory.CreateDirectory(Path.Combine(tree, "empty"));

            var big = Path.Combine(work, "big.bin");
            await WriteRandomAsync(big, 200L << 20);
            var single = Path.Combine(work, "one.txt");
            await File.WriteAllTextAsync(single, "just one file\n", Ct);

            var watch = Stopwatch.StartNew();
            (await CliAsync([.. host, "cp", tree, $"{id}:/srv/tree"])).ShouldBe(0);
            var treeIn = watch.Elapsed;
            watch.Restart();
            (await CliAsync([.. host, "cp", big, $"{id}:/srv/"])).ShouldBe(0);
            var bigIn = watch.Elapsed;
            (await CliAsync([.. host, "cp", single, $"{id}:/etc/renamed.txt"])).ShouldBe(0);

            // Seen inside, as the sandbox sees it.
            var inside = await daemon.Client.ExecAsync(id, ["sh", "-c", "find /srv/tree -type f | wc -l; sha256sum /srv/big.bin | cut -d' ' -f1; cat /etc/renamed.txt; readlink /srv/tree/link"], cancellationToken: Ct);
            inside.ExitCode.ShouldBe(0, inside.Stderr);
            inside.Stdout.ShouldBe($"1000\n{Sha256(big)}\njust one file\nd1/f1.txt\n");

            var back = Path.Combine(work, "back");
            Directory.CreateDirectory(back);
            watch.Restart();
            (await CliAsync([.. host, "cp", $"{id}:/srv/tree", back])).ShouldBe(0);
            var treeOut = watch.Elapsed;
            watch.Restart();
            (await CliAsync([.. host, "cp", $"{id}:/srv/big.bin", Path.Combine(back, "big-copy.bin")])).ShouldBe(0);
            var bigOut = watch.Elapsed;

            SameTree(tree, Path.Combine(back, "tree"));
            Sha256(Path.Combine(back, "big-copy.bin")).ShouldBe(Sha256(big));
            output.WriteLine($"{runtime}: tree of 1000 in {treeIn.TotalMilliseconds:0} ms, out {treeOut.TotalMilliseconds:0} ms; 200 MiB in {bigIn.TotalMilliseconds:0} ms ({200 / bigIn.TotalSeconds:0} MiB/s), out {bigOut.TotalMilliseconds:0} ms ({200 / bigOut.TotalSeconds:0} MiB/s)");

            await daemon.Client.RemoveAsync(id, Ct, force: true);
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Files_copied_into_a_running_sandbox_are_seen_at_once_and_its_writes_are_read_at_once(string runtime)
    {
        await using var daemon = await DaemonProcess.StartAsync();

        // It reads the file once it appears, and again once its content changed: a cached view would hang.
        const string Script = """
            ls /srv > /dev/null; cat /etc/hostname > /dev/null
            echo made-inside > /srv/inside.txt; echo written
            while [ ! -f /srv/note ]; do sleep 0.05; done; echo "first=$(cat /srv/note)"
            while [ "$(cat /srv/note)" = one ]; do sleep 0.05; done; echo "second=$(cat /srv/note)"
            """;
        var id = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, ["sh", "-c", Script]), Ct);
        var sandbox = new Sandbox(daemon.Client, id);
        await WaitForOutputAsync(daemon.Client, id, "written");

        (await sandbox.ReadFileAsync("/srv/inside.txt", cancellationToken: Ct)).ShouldBe("made-inside\n"u8.ToArray(), "the sandbox's own writes are read from outside at once");
        await sandbox.WriteFileAsync("/srv/note", "one"u8.ToArray(), cancellationToken: Ct);
        await WaitForOutputAsync(daemon.Client, id, "first=one");
        await sandbox.WriteFileAsync("/srv/note", "two"u8.ToArray(), cancellationToken: Ct);
        var exit = await daemon.Client.WaitAsync(id, Ct).WaitAsync(TestHost.Scaled(TimeSpan.FromSeconds(30)), Ct);
        exit.ExitCode.ShouldBe(0);
        exit.StdoutTail.ShouldBe("written\nfirst=one\nsecond=two\n", "a changed file is seen changed inside, not a cached copy");

        await daemon.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task An_ended_sandbox_keeps_its_files_for_copying_out_until_it_is_removed(string runtime)
    {
        await using var daemon = await DaemonProcess.StartAsync("--disk", "64Mi");
        var id = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, ["sh", "-c", "mkdir -p /results && seq 1 1000 > /results/numbers.txt && echo done > /results/status; exit 3"]), Ct);
        var exit = await daemon.Client.WaitAsync(id, Ct).WaitAsync(TestHost.Scaled(TimeSpan.FromSeconds(60)), Ct);
        exit.ExitCode.ShouldBe(3);

        var numbers = await daemon.Client.ReadFileAsync(id, "/results/numbers.txt", cancellationToken: Ct);
        Encoding.ASCII.GetString(numbers).ShouldBe(string.Concat(Enumerable.Range(1, 1000).Select(i => i + "\n")));

        using var tar = new MemoryStream();
        await daemon.Client.DownloadAsync(id, "/results", tar, Ct);
        tar.Position = 0;
        var names = new List<string>();
        using (var reader = new TarReader(tar))
        {
            while (await reader.GetNextEntryAsync(cancellationToken: Ct) is { } entry)
            {
                names.Add(entry.Name.TrimEnd('/'));
            }
        }

        names.Order().ShouldBe(["results", "results/numbers.txt", "results/status"]);

        // Files go in too, until it is removed.
        await daemon.Client.WriteFileAsync(id, "/results/added", "late"u8.ToArray(), cancellationToken: Ct);
        (await daemon.Client.ReadFileAsync(id, "/results/added", cancellationToken: Ct)).ShouldBe("late"u8.ToArray());

        await daemon.Client.RemoveAsync(id, Ct);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        Directory.Exists(Path.Combine(daemon.StateDir, "sandboxes", id)).ShouldBeFalse();
        var gone = await Should.ThrowAsync<RpcException>(() => daemon.Client.ReadFileAsync(id, "/results/status", cancellationToken: Ct));
        gone.StatusCode.ShouldBe(StatusCode.NotFound);
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Hostile_archives_and_paths_write_nothing_outside_the_sandbox_root(string runtime)
    {
        await using var daemon = await DaemonProcess.StartAsync();
        var canary = Directory.CreateTempSubdirectory("corral-cp-canary-").FullName;
        try
        {
            // The sandbox plants links to the host's view of things: /escape -> /, /canary -> the host dir's path, /leak -> /etc/shadow.
            var id = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, [], r => r.Idle = true), Ct);
            await new Sandbox(daemon.Client, id).WaitRunningAsync(Ct);
            var plant = await daemon.Client.ExecAsync(id, ["sh", "-c", $"mkdir -p {canary} && ln -s / /escape && ln -s {canary} /canary && ln -s ../../../../../../{canary.TrimStart('/')} /canary-rel && ln -s /etc/shadow /leak && echo sandbox-shadow > /etc/shadow"], cancellationToken: Ct);
            plant.ExitCode.ShouldBe(0, plant.Stderr);

            // Archives: "..", an absolute name, a symlink out then a file through it, a device node.
            foreach (var (what, archive) in new (string, byte[])[]
            {
                ("dotdot", Archive(w => Add(w, TarEntryType.RegularFile, $"../../../../../../{canary.TrimStart('/')}/dotdot"))),
                ("absolute", Archive(w => Add(w, TarEntryType.RegularFile, $"{canary}/absolute"))),
                ("symlink-out", Archive(w =>
                {
                    Add(w, TarEntryType.SymbolicLink, "out", link: "../../../../../../../../");
                    Add(w, TarEntryType.RegularFile, $"out/{canary.TrimStart('/')}/through-link");
                })),
                ("device", Archive(w => w.WriteEntry(new PaxTarEntry(TarEntryType.CharacterDevice, "null") { DeviceMajor = 1, DeviceMinor = 3 }))),
            })
            {
                var refused = await Should.ThrowAsync<RpcException>(() => daemon.Client.UploadAsync(id, "/srv", new MemoryStream(archive), Ct), what);
                refused.StatusCode.ShouldBe(StatusCode.InvalidArgument, what);
                refused.Status.Detail.ShouldNotContain("\n", customMessage: what);
            }

            // Paths through the sandbox's own links resolve inside its root, never on the host.
            await daemon.Client.WriteFileAsync(id, "/canary/via-abs-link", "x"u8.ToArray(), cancellationToken: Ct);
            await daemon.Client.WriteFileAsync(id, "/canary-rel/via-rel-link", "x"u8.ToArray(), cancellationToken: Ct);
            await daemon.Client.WriteFileAsync(id, $"/escape/{canary.TrimStart('/')}/via-root-link", "x"u8.ToArray(), cancellationToken: Ct);
            // A shell glob, not ls: runsc 20221219's statx fails here (EINVAL), which ls would need.
            var landed = await daemon.Client.ExecAsync(id, ["sh", "-c", $"cd {canary} && for f in *; do echo $f; done"], cancellationToken: Ct);
            landed.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order().ToList().ShouldBe(["via-abs-link", "via-rel-link", "via-root-link"], "they land in the sandbox's own copy of that path");

            (await daemon.Client.ReadFileAsync(id, "/leak", cancellationToken: Ct)).ShouldBe("sandbox-shadow\n"u8.ToArray(), "a link is followed inside the sandbox's root: its /etc/shadow, not the host's");

            Directory.EnumerateFileSystemEntries(canary).ShouldBeEmpty("nothing was written in the host's directory");
            File.Exists("/dotdot").ShouldBeFalse();

            // Bad paths: relative, "..", and a missing one.
            foreach (var path in new[] { "relative", "/srv/../etc" })
            {
                (await Should.ThrowAsync<RpcException>(() => daemon.Client.ReadFileAsync(id, path, cancellationToken: Ct))).StatusCode.ShouldBe(StatusCode.InvalidArgument, path);
            }

            var missing = await Should.ThrowAsync<RpcException>(() => daemon.Client.ReadFileAsync(id, "/no/such/file", cancellationToken: Ct));
            missing.StatusCode.ShouldBeOneOf(StatusCode.NotFound, StatusCode.InvalidArgument);

            await daemon.Client.RemoveAsync(id, Ct, force: true);
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
        finally
        {
            Directory.Delete(canary, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Execs_and_copied_files_follow_the_sandbox_user_and_two_sandboxes_of_one_image_do_not_share_writes(string runtime)
    {
        await using var daemon = await DaemonProcess.StartAsync();
        var nobody = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, [], r => { r.Idle = true; r.User = "nobody"; }), Ct);
        var other = await daemon.Client.CreateAsync(DaemonSandboxTests.Request(runtime, [], r => r.Idle = true), Ct);
        await new Sandbox(daemon.Client, nobody).WaitRunningAsync(Ct);
        await new Sandbox(daemon.Client, other).WaitRunningAsync(Ct);

        await daemon.Client.WriteFileAsync(nobody, "/tmp/given", "x"u8.ToArray(), cancellationToken: Ct);
        var check = await daemon.Client.ExecAsync(nobody, ["python3", "-c", "import os; s = os.stat('/tmp/given'); print(os.getuid(), os.getgid(), s.st_uid, s.st_gid, oct(s.st_mode & 0o7777)); open('/tmp/mine', 'w').write('n')"], cancellationToken: Ct);
        check.ExitCode.ShouldBe(0, check.Stderr);
        check.Stdout.ShouldBe("65534 65534 65534 65534 0o644\n", "the exec runs as the sandbox's user, and the copied file is that user's");

        // Written at the same time in both, at one path: each sees its own.
        var a = daemon.Client.ExecAsync(nobody, ["sh", "-c", "echo from-nobody > /tmp/shared; sleep 0.5; cat /tmp/shared"], cancellationToken: Ct);
        var b = daemon.Client.ExecAsync(other, ["sh", "-c", "echo from-other > /tmp/shared; sleep 0.5; cat /tmp/shared; test ! -e /tmp/mine && echo no-mine"], cancellationToken: Ct);
        (await a).Stdout.ShouldBe("from-nobody\n");
        (await b).Stdout.ShouldBe("from-other\nno-mine\n");

        foreach (var id in new[] { nobody, other })
        {
            await daemon.Client.RemoveAsync(id, Ct, force: true);
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }

    [Fact]
    public async Task Read_only_sandboxes_tmpfs_mounts_and_read_only_binds_refuse_copies_in_with_a_reason()
    {
        var host = Directory.CreateTempSubdirectory("corral-cp-bind-").FullName;
        await using var daemon = await DaemonProcess.StartAsync("--allow-mounts-under", host);
        try
        {
            await File.WriteAllTextAsync(Path.Combine(host, "from-host"), "h", Ct);
            var readOnly = await daemon.Client.CreateAsync(DaemonSandboxTests.Request("runc", [], r => { r.Idle = true; r.ReadOnly = true; }), Ct);
            var mounted = await daemon.Client.CreateAsync(DaemonSandboxTests.Request("runc", [], r =>
            {
                r.Idle = true;
                r.Mounts.Add(new Mount { Type = Mount.Types.Type.Tmpfs, Target = "/scratch" });
                r.Mounts.Add(new Mount { Type = Mount.Types.Type.Bind, Source = host, Target = "/data", ReadOnly = true });
            }), Ct);
            await new Sandbox(daemon.Client, readOnly).WaitRunningAsync(Ct);
            await new Sandbox(daemon.Client, mounted).WaitRunningAsync(Ct);

            foreach (var (id, path, reason) in new[] { (readOnly, "/srv/x", "read-only root"), (mounted, "/scratch/x", "tmpfs"), (mounted, "/data/x", "read-only bind mount") })
            {
                var refused = await Should.ThrowAsync<RpcException>(() => daemon.Client.WriteFileAsync(id, path, "x"u8.ToArray(), cancellationToken: Ct));
                refused.StatusCode.ShouldBe(StatusCode.FailedPrecondition, path);
                refused.Status.Detail.ShouldContain(reason);
            }

            // A read-only bind mount still gives its files out: from the host directory it names.
            (await daemon.Client.ReadFileAsync(mounted, "/data/from-host", cancellationToken: Ct)).ShouldBe("h"u8.ToArray());
            File.Exists(Path.Combine(host, "x")).ShouldBeFalse();

            // Bind mounts outside --allow-mounts-under are refused at create.
            var outside = await Should.ThrowAsync<RpcException>(() => daemon.Client.CreateAsync(DaemonSandboxTests.Request("runc", ["true"], r =>
                r.Mounts.Add(new Mount { Type = Mount.Types.Type.Bind, Source = "/etc", Target = "/hostetc" })), Ct));
            outside.StatusCode.ShouldBe(StatusCode.FailedPrecondition);
            outside.Status.Detail.ShouldContain("--allow-mounts-under");

            foreach (var id in new[] { readOnly, mounted })
            {
                await daemon.Client.RemoveAsync(id, Ct, force: true);
                (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            }
        }
        finally
        {
            Directory.Delete(host, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task After_kill_9_of_the_shim_and_the_daemon_nothing_of_the_root_is_left_once_removed(string runtime)
    {
        var first = await DaemonProcess.StartAsync("--disk", "64Mi");
        DaemonProcess? second = null;
        try
        {
            var id = await first.Client.CreateAsync(DaemonSandboxTests.Request(runtime, ["sh", "-c", "echo data > /kept; echo written; sleep 1000"]), Ct);
            await new Sandbox(first.Client, id).WaitRunningAsync(Ct);

            // Killed only once the file is written: running is not yet having run the first command.
            await WaitForOutputAsync(first.Client, id, "written");
            File.ReadAllText("/proc/self/mountinfo").ShouldContain(id, customMessage: "its root is mounted while it runs");

            var shim = DaemonOwnershipTests.ShimPid(first, id);
            await first.KillHardAsync();
            LibC.kill(shim, 9).ShouldBe(0);
            await Task.Delay(TimeSpan.FromSeconds(1), Ct);

            second = await DaemonProcess.StartInAsync(first.Root);
            var info = await second.Client.InspectAsync(id, Ct);
            var deadline = DateTime.UtcNow + TestHost.Scaled(TimeSpan.FromSeconds(30));
            while (info.State is not (SandboxState.Failed or SandboxState.Exited) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100, Ct);
                info = await second.Client.InspectAsync(id, Ct);
            }

            info.State.ShouldBe(SandboxState.Failed);
            File.ReadAllText("/proc/self/mountinfo").ShouldNotContain(id, customMessage: "the reclaim unmounts its root (its files stay until it is removed)");
            (await second.Client.ReadFileAsync(id, "/kept", cancellationToken: Ct)).ShouldBe("data\n"u8.ToArray(), "its files can still be copied out");
            await second.Client.RemoveAsync(id, Ct);
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            LoopDevicesOf(id).ShouldBeEmpty();
            Directory.Exists(Path.Combine(second.StateDir, "sandboxes", id)).ShouldBeFalse("its layer and disk image go with it");
        }
        finally
        {
            if (second is not null)
            {
                await second.DisposeAsync();
            }

            await first.DisposeAsync();
        }
    }

    /// <summary>Loop devices whose backing file names <paramref name="id"/> (a --disk left attached).</summary>
    internal static List<string> LoopDevicesOf(string id) =>
        Directory.Exists("/sys/block")
            ? Directory.EnumerateDirectories("/sys/block", "loop*")
                .Select(d => Path.Combine(d, "loop", "backing_file"))
                .Where(f => File.Exists(f) && File.ReadAllText(f).Contains(id, StringComparison.Ordinal))
                .ToList()
            : [];

    private static async Task<int> CliAsync(string[] args)
    {
        var result = await CorralProcess.RunAsync(args, TimeSpan.FromSeconds(300));
        result.ExitCode.ShouldBe(0, $"corral {string.Join(' ', args)}: {result.Stderr}");
        return result.ExitCode;
    }

    private static async Task WaitForOutputAsync(CorralClient client, string id, string text)
    {
        var deadline = DateTime.UtcNow + TestHost.Scaled(TimeSpan.FromSeconds(60));
        while (DateTime.UtcNow < deadline)
        {
            var stdout = new StringBuilder();
            await foreach (var chunk in client.LogsAsync(id, follow: false, Ct))
            {
                stdout.Append(chunk.Data.ToStringUtf8());
            }

            if (stdout.ToString().Contains(text, StringComparison.Ordinal))
            {
                return;
            }

            await Task.Delay(50, Ct);
        }

        throw new TimeoutException($"{id} did not print '{text}'");
    }

    private static async Task WriteRandomAsync(string path, long bytes)
    {
        var block = new byte[1 << 20];
        await using var file = File.Create(path);
        for (long written = 0; written < bytes; written += block.Length)
        {
            RandomNumberGenerator.Fill(block);
            await file.WriteAsync(block, Ct);
        }
    }

    private static string Sha256(string path)
    {
        using var file = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(file));
    }

    /// <summary>Same names, kinds, contents, modes and modification times (seconds).</summary>
    private static void SameTree(string expected, string actual)
    {
        var want = Directory.EnumerateFileSystemEntries(expected, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(expected, p)).Order().ToList();
        var got = Directory.EnumerateFileSystemEntries(actual, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(actual, p)).Order().ToList();
        got.ShouldBe(want);
        foreach (var relative in want)
        {
            var a = new FileInfo(Path.Combine(expected, relative));
            var b = new FileInfo(Path.Combine(actual, relative));
            if (a.LinkTarget is { } link)
            {
                b.LinkTarget.ShouldBe(link, relative);
                continue;
            }

            b.UnixFileMode.ShouldBe(a.UnixFileMode, relative);
            if (a.Attributes.HasFlag(FileAttributes.Directory))
            {
                continue;
            }

            File.ReadAllBytes(b.FullName).ShouldBe(File.ReadAllBytes(a.FullName), relative);
            ((long)(b.LastWriteTimeUtc - a.LastWriteTimeUtc).TotalSeconds).ShouldBe(0, relative);
        }
    }

    private static byte[] Archive(Action<TarWriter> write)
    {
        using var stream = new MemoryStream();
        using (var writer = new TarWriter(stream, TarEntryFormat.Pax, leaveOpen: true))
        {
            write(writer);
        }

        return stream.ToArray();
    }

    private static void Add(TarWriter writer, TarEntryType type, string name, string? link = null)
    {
        var entry = new PaxTarEntry(type, name);
        if (link is not null)
        {
            entry.LinkName = link;
        }

        if (type == TarEntryType.RegularFile)
        {
            entry.DataStream = new MemoryStream("hostile"u8.ToArray());
        }

        writer.WriteEntry(entry);
    }
}
