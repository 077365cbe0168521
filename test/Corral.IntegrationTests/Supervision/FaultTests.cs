using System.Diagnostics;
using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Supervision;

/// <summary>
/// Faults never hang and never lie (issue #10, items 11, 15, 16): the runtime's own failures are 125
/// with one line, the workload's codes pass through, the pids limit is reported, a full state dir is
/// refused cleanly. Real runtimes, real cgroups, a real full tmpfs.
/// </summary>
public sealed class FaultTests
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNameCaseInsensitive = true };

    public static TheoryData<string> Runtimes => ["runc", "gvisor"];

    [Fact]
    public async Task RuncThatCannotStartTheContainerIs125WithItsMessage()
    {
        // pids.max 1: runc's init cannot even start the workload (runc itself exits 1).
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("pids1");
        var result = await CorralProcess.RunAsync(["run", "--runtime", "runc", "--rootfs", rootfs, "--name", id, "--pids", "1", "--", "true"]);

        result.ExitCode.ShouldBe(125, result.Stderr);
        var line = CorralLine(result.Stderr);
        line.ShouldStartWith("corral: runc failed to run the container: ");
        line.Length.ShouldBeGreaterThan("corral: runc failed to run the container: ".Length + 5);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task RunscThatCannotStartTheSandboxIs125WithItsMessage()
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("bogusplat");
        var result = await CorralProcess.RunAsync(["--runsc-platform", "bogus", "run", "--runtime", "gvisor", "--rootfs", rootfs, "--name", id, "--", "true"]);

        result.ExitCode.ShouldBe(125, result.Stderr);
        CorralLine(result.Stderr).ShouldBe("corral: runsc failed to run the container: unknown platform: bogus");
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(TestRuntimes.Native), MemberType = typeof(TestRuntimes))]
    public async Task ARuntimeThatCannotMountTheRootsDevIs125WithItsOwnMessage(string runtime)
    {
        // /dev a file: runc and crun fail to mount their tmpfs on it, before the workload runs. crun exits
        // 1 there, a code any workload can give; its JSON log in the bundle tells the two apart (crun's 1
        // was reported as the workload's, its message on stderr as the workload's output).
        var rootfs = Directory.CreateTempSubdirectory("corral-devfile-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(rootfs, "bin"));
            File.Copy("/bin/true", Path.Combine(rootfs, "bin", "true"));
            File.WriteAllBytes(Path.Combine(rootfs, "dev"), []);
            var id = TestHost.NewId("devfile");

            var result = await CorralProcess.RunAsync(["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--", "/bin/true"]);

            result.ExitCode.ShouldBe(125, result.Stderr);
            var line = CorralLine(result.Stderr);
            line.ShouldStartWith($"corral: {runtime} failed to run the container: ");
            line.ShouldContain("dev");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
        finally
        {
            Directory.Delete(rootfs, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(TestRuntimes.All), MemberType = typeof(TestRuntimes))]
    public async Task TheWorkloadsOwnCodesPassThrough(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        foreach (var code in new[] { 1, 2, 125, 126 })
        {
            var id = TestHost.NewId("code");
            var result = await CorralProcess.RunAsync(["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--", "sh", "-c", $"echo err >&2; exit {code}"]);
            result.ExitCode.ShouldBe(code, result.Stderr);
            result.Stderr.ShouldNotContain("corral:");
        }
    }

    [Fact]
    public async Task GvisorGetsAPidsAllowanceSoPythonCanForkUnderASmallLimit()
    {
        // gVisor's own threads count against the cgroup (~43 idle): without the allowance, python's
        // third fork under --pids 50 failed.
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("pids50");
        var result = await CorralProcess.RunAsync(["run", "--runtime", "gvisor", "--rootfs", rootfs, "--name", id, "--pids", "50", "--", "python3", "-c",
            "import os, time\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(1)\n        os._exit(0)\n    kids.append(pid)\n" +
            "for k in kids:\n    os.waitpid(k, 0)\nprint('forked', len(kids))"]);

        result.ExitCode.ShouldBe(0, result.Stderr);
        result.Stdout.ShouldContain("forked");
        result.Stderr.ShouldNotContain("pids limit");
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task AForkBombRecordsThatThePidsLimitWasHit(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        var id = TestHost.NewId("forkbomb");
        var resultFile = Path.Combine(Path.GetTempPath(), id + ".json");
        try
        {
            var result = await CorralProcess.RunAsync(["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--pids", "20", "--result-file", resultFile, "--", "python3", "-c",
                "import os, time\nkids = []\ntry:\n    for _ in range(200):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(2)\n            os._exit(0)\n        kids.append(pid)\n" +
                "except OSError as e:\n    print('fork failed after', len(kids), e)\nfor k in kids:\n    os.waitpid(k, 0)\n"], TimeSpan.FromSeconds(120));

            var record = JsonSerializer.Deserialize<JsonElement>(await File.ReadAllTextAsync(resultFile, TestContext.Current.CancellationToken), Json);
            record.GetProperty("pidsLimitHit").GetBoolean().ShouldBeTrue($"exit {result.ExitCode}, stdout '{result.Stdout}', stderr '{result.Stderr}'");
            record.GetProperty("pidsLimit").GetInt64().ShouldBe(20);
            result.Stderr.ShouldContain("corral: warning: the container hit its pids limit (20)");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
        finally
        {
            File.Delete(resultFile);
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task AFullStateDirIsRefusedWithOneLineAndLeavesNothing(string runtime)
    {
        var rootfs = await TestHost.RootfsAsync();
        using var disk = FullTmpfs.Mount("2m");
        var id = TestHost.NewId("fullstate");
        var watch = Stopwatch.StartNew();
        var result = await CorralProcess.RunAsync(["--state-dir", disk.Path, "run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--", "python3", "-c", "print('x' * 100000)"], TimeSpan.FromSeconds(60));

        result.ExitCode.ShouldBe(125, result.Stdout + result.Stderr);
        CorralLine(result.Stderr).ShouldContain("No space left on device");
        result.Stderr.Trim().Split('\n').Length.ShouldBe(1, result.Stderr);
        watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30));
        disk.Files().ShouldBe(["fill"], ignoreOrder: true);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    private static string CorralLine(string stderr) =>
        stderr.Split('\n').Select(l => l.Trim()).LastOrDefault(l => l.StartsWith("corral:", StringComparison.Ordinal)) ?? $"(no corral line in '{stderr}')";
}

/// <summary>A real tmpfs of a given size, filled to the last byte; unmounted and removed on dispose.</summary>
internal sealed class FullTmpfs : IDisposable
{
    private FullTmpfs(string path) => Path = path;

    public string Path { get; }

    public static FullTmpfs Mount(string size)
    {
        var path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "corral-full-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(path);
        Run("mount", "-t", "tmpfs", "-o", $"size={size}", "tmpfs", path);
        var disk = new FullTmpfs(path);
        disk.Fill();
        return disk;
    }

    /// <summary>Writes until the filesystem refuses (ENOSPC).</summary>
    public void Fill(string name = "fill")
    {
        using var fill = new FileStream(System.IO.Path.Combine(Path, name), FileMode.Append, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
        var chunk = new byte[4096];
        try
        {
            while (true)
            {
                fill.Write(chunk);
            }
        }
        catch (IOException)
        {
            // Full.
        }
    }

    /// <summary>Every file under it (empty directories aside), relative to it.</summary>
    public IReadOnlyList<string> Files() => [.. Directory.EnumerateFiles(Path, "*", SearchOption.AllDirectories).Select(f => System.IO.Path.GetRelativePath(Path, f))];

    public void Dispose()
    {
        Run("umount", "-l", Path);
        Directory.Delete(Path, recursive: true);
    }

    private static void Run(string file, params string[] args)
    {
        using var process = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, UseShellExecute = false })!;
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed: {error}");
        }
    }
}
