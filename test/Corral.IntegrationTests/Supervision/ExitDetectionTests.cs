using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Supervision;

/// <summary>The foundation's exit cases, end to end through the real CLI on both runtimes.</summary>
public sealed class ExitDetectionTests
{
    public static TheoryData<string> Runtimes => TestRuntimes.All;

    private static TimeSpan ReturnBound(string runtime) => TestHost.Scaled(runtime == "gvisor" ? TimeSpan.FromSeconds(2) : TimeSpan.FromSeconds(1));

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task OsExitZeroReturnsPromptlyWithCompleteOutput(string runtime)
    {
        var run = await RunAsync(runtime, "python3", "-c", "import os, time; print('Exiting now', flush=True); print('T=%.6f' % time.time(), flush=True); os._exit(0)");

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.ShouldStartWith("Exiting now\n");
        ShouldReturnPromptly(run, runtime);
        run.Record!.RootElement.GetProperty("exitCode").GetInt32().ShouldBe(0);
        run.Record.RootElement.GetProperty("signal").ValueKind.ShouldBe(JsonValueKind.Null);
        run.Record.RootElement.GetProperty("runtime").GetString().ShouldBe(runtime);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task SysExitZero(string runtime)
    {
        var run = await RunAsync(runtime, "python3", "-c", "import sys, time; print('Exiting normally'); print('T=%.6f' % time.time()); sys.exit(0)");

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.ShouldStartWith("Exiting normally\n");
        ShouldReturnPromptly(run, runtime);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task UncaughtExceptionExitsOneWithTracebackOnStderr(string runtime)
    {
        var run = await RunAsync(runtime, "python3", "-c", "import time; print('T=%.6f' % time.time(), flush=True); raise RuntimeError('Something went wrong')");

        run.Result.ExitCode.ShouldBe(1);
        run.Result.Stderr.ShouldContain("Traceback (most recent call last)");
        run.Result.Stderr.ShouldContain("RuntimeError: Something went wrong");
        run.Result.Stdout.ShouldNotContain("Traceback");
        (run.Record!.RootElement.GetProperty("stderrTail").GetString() ?? "").ShouldContain("RuntimeError: Something went wrong");
        ShouldReturnPromptly(run, runtime);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task SigtermFromInsideRunsTheHandler(string runtime)
    {
        var run = await RunAsync(
            runtime,
            "python3",
            "-c",
            "import os, signal, sys, time\nsignal.signal(signal.SIGTERM, lambda s, f: (print('T=%.6f' % time.time(), flush=True), os._exit(42)))\nos.kill(1, signal.SIGTERM)\ntime.sleep(30)");

        run.Result.ExitCode.ShouldBe(42, run.Result.Stderr);
        ShouldReturnPromptly(run, runtime);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task CorralKillFromOutsideEndsWith143(string runtime)
    {
        var id = TestHost.NewId("kill");
        var script = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))\nprint('ready', flush=True)\ntime.sleep(60)";
        var (running, watch) = await StartDetachedAsync(runtime, id, "python3", "-c", script);

        var kill = await CorralProcess.RunAsync(["kill", id, "--grace", "10s"]);
        kill.ExitCode.ShouldBe(0, kill.Stderr);
        var result = await CorralProcess.CollectAsync(running, watch, TimeSpan.FromSeconds(60));

        result.ExitCode.ShouldBe(143, result.Stderr);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task Pid1IgnoringSigtermIsKilledAfterTheGrace(string runtime)
    {
        var id = TestHost.NewId("ignore");
        var script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)";
        var (running, watch) = await StartDetachedAsync(runtime, id, "python3", "-c", script);

        var killWatch = Stopwatch.StartNew();
        var kill = await CorralProcess.RunAsync(["kill", id, "--grace", "1s"]);
        kill.ExitCode.ShouldBe(0, kill.Stderr);
        var result = await CorralProcess.CollectAsync(running, watch, TimeSpan.FromSeconds(60));

        result.ExitCode.ShouldBe(137, result.Stderr);
        killWatch.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromSeconds(0.9));
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task InterruptingCorralRunStopsTheContainerAndCleansUp(string runtime)
    {
        var id = TestHost.NewId("sigint");
        var script = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))\nprint('ready', flush=True)\ntime.sleep(60)";
        var (running, watch) = await StartDetachedAsync(runtime, id, "python3", "-c", script);

        Interop.Kill(running.Id, 2);
        var result = await CorralProcess.CollectAsync(running, watch, TimeSpan.FromSeconds(60));

        result.ExitCode.ShouldBe(143, result.Stderr);
        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task ChildOutlivingPid1DoesNotHoldTheExit(string runtime)
    {
        var run = await RunAsync(runtime, "sh", "-c", "sleep 1000 & python3 -c \"import time; print('T=%.6f' % time.time())\"; exit 3");

        run.Result.ExitCode.ShouldBe(3, run.Result.Stderr);
        ShouldReturnPromptly(run, runtime);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task DetachedGrandchildHoldingStdoutDoesNotHoldTheExit(string runtime)
    {
        var script = "import subprocess, sys, time\n" +
                     "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n" +
                     "print('parent done', flush=True)\nprint('T=%.6f' % time.time(), flush=True)\nsys.exit(0)";
        var run = await RunAsync(runtime, "python3", "-c", script);

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.ShouldStartWith("parent done\n");
        ShouldReturnPromptly(run, runtime);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task OutputIsStreamedByteForByteAndSeparately(string runtime)
    {
        var script = "import os, sys\nos.write(1, bytes(range(256)) * 64)\nos.write(2, b'err-line\\n')\nos.write(1, b'\\xff\\x00end')";
        var run = await RunAsync(runtime, "python3", "-c", script);

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stderr.ShouldContain("err-line");
        run.Result.Stdout.ShouldNotContain("err-line");
        var bytes = run.RawStdout!;
        bytes.Length.ShouldBe((256 * 64) + 5);
        bytes[..256].ShouldBe(Enumerable.Range(0, 256).Select(i => (byte)i).ToArray());
        bytes[^5..].ShouldBe(new byte[] { 0xff, 0x00, (byte)'e', (byte)'n', (byte)'d' });
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task EnvAndWorkdirReachTheProcess(string runtime)
    {
        var run = await RunAsync(runtime, ["--env", "GREETING=hello sandbox", "--env", "EMPTY=", "--workdir", "/usr/lib"], "python3", "-c", "import os; print(os.environ['GREETING'], repr(os.environ['EMPTY']), os.getcwd())");

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        run.Result.Stdout.Trim().ShouldBe("hello sandbox '' /usr/lib");
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task MissingCommandIs127WithAClearError(string runtime)
    {
        var run = await RunAsync(runtime, "no-such-command-xyz");

        run.Result.ExitCode.ShouldBe(127);
        run.Result.Stderr.Trim().ShouldBe("corral: command not found in the container's root filesystem: no-such-command-xyz");
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Trait("Lane", "cgroup2")]
    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task TimeoutKillsTheContainer(string runtime)
    {
        var run = await RunAsync(runtime, ["--timeout", "1s"], "sleep", "60");

        run.Result.ExitCode.ShouldBe(137, run.Result.Stderr);
        run.Result.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30));
        run.Record!.RootElement.GetProperty("timedOut").GetBoolean().ShouldBeTrue();
        run.Record.RootElement.GetProperty("signal").GetString().ShouldBe("SIGKILL");
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task RuntimeThatNeverStartsTheWorkloadHitsTheStartDeadline()
    {
        // Measured here: runsc on the kvm platform spins in this nested VM and never starts PID 1.
        var id = TestHost.NewId("spin");
        var rootfs = await TestHost.RootfsAsync();
        var result = await CorralProcess.RunAsync(
            ["--runsc-platform", "kvm", "run", "--runtime", "gvisor", "--rootfs", rootfs, "--name", id, "--start-timeout", "3s", "--", "true"]);

        result.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30));
        if (File.Exists("/dev/kvm"))
        {
            result.ExitCode.ShouldBe(125, result.Stderr);
            result.Stderr.Trim().ShouldEndWith("corral: the gvisor runtime did not start the workload within 3s");
        }
        else
        {
            // Without /dev/kvm runsc fails at once instead of spinning: Corral passes that on, promptly.
            result.ExitCode.ShouldNotBe(0, result.Stderr);
        }

        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        Directory.EnumerateFiles(TestHost.RunscRoot, id + "*").ShouldBeEmpty("runsc left a lock file of a sandbox that never started; Corral removes it");
    }

    [Fact]
    public async Task RuntimeThatHangsBeforeStartingIsKilledAtTheStartDeadline()
    {
        // Deterministic twin of the kvm case: a "runtime" that never writes its pid file and never exits.
        var dir = Directory.CreateTempSubdirectory("corral-hang-");
        try
        {
            var fake = Path.Combine(dir.FullName, "runsc");
            await File.WriteAllTextAsync(fake, "#!/bin/sh\nsleep 1000 &\nexec sleep 1000\n", TestContext.Current.CancellationToken);
            File.SetUnixFileMode(fake, UnixFileMode.UserRead | UnixFileMode.UserExecute);
            var id = TestHost.NewId("hang");
            var rootfs = await TestHost.RootfsAsync();

            var result = await CorralProcess.RunAsync(["--runsc-path", fake, "run", "--runtime", "gvisor", "--rootfs", rootfs, "--name", id, "--start-timeout", "2s", "--", "true"]);

            result.ExitCode.ShouldBe(125, result.Stderr);
            result.Stderr.Trim().ShouldEndWith("corral: the gvisor runtime did not start the workload within 2s");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            Directory.EnumerateDirectories("/proc").Where(p => int.TryParse(Path.GetFileName(p), out _))
                .Select(p => SafeRead(Path.Combine(p, "cmdline")))
                .Where(c => c.Contains(dir.FullName, StringComparison.Ordinal))
                .ShouldBeEmpty("the hung runtime and its child are killed");
        }
        finally
        {
            dir.Delete(recursive: true);
        }

        static string SafeRead(string path)
        {
            try
            {
                return File.ReadAllText(path);
            }
            catch (IOException)
            {
                return string.Empty;
            }
        }
    }

    [Fact]
    public async Task TwentyContainersAtOnceEachGetTheirOwnCode()
    {
        var rootfs = await TestHost.RootfsAsync();
        var runs = Enumerable.Range(0, 20).Select(async i =>
        {
            var runtime = TestRuntimes.Rotation(i);
            var id = TestHost.NewId($"many{i}");
            var result = await CorralProcess.RunAsync(
                // Twenty boots at once beside the parallel suite on two cores: a generous start deadline, only to catch a hang.
                ["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--start-timeout", "150s", "--", "python3", "-c", $"import sys; print('container {i}'); sys.exit({i + 10})"],
                TimeSpan.FromSeconds(180));
            return (i, id, result);
        }).ToList();

        foreach (var (i, id, result) in await Task.WhenAll(runs))
        {
            result.ExitCode.ShouldBe(i + 10, result.Stderr);
            result.Stdout.ShouldBe($"container {i}\n");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }

    internal static void ShouldReturnPromptly(RunOutcome run, string runtime)
    {
        var line = run.Result.Stdout.Split('\n').LastOrDefault(l => l.StartsWith("T=", StringComparison.Ordinal));
        line.ShouldNotBeNull("the workload prints its death time as T=<unix seconds>");
        var died = DateTimeOffset.FromUnixTimeMilliseconds((long)(double.Parse(line[2..], CultureInfo.InvariantCulture) * 1000));
        var lag = run.Result.ExitedAt - died;
        lag.ShouldBeLessThan(ReturnBound(runtime), $"corral returned {lag.TotalMilliseconds:0} ms after PID 1 died");
    }

    internal static Task<RunOutcome> RunAsync(string runtime, params string[] command) => RunAsync(runtime, [], command);

    internal static async Task<RunOutcome> RunAsync(string runtime, string[] options, params string[] command)
    {
        RuntimeCheck.Require(TestRuntimes.Binary(runtime));
        var id = TestHost.NewId(runtime);
        var resultFile = Path.Combine(Path.GetTempPath(), id + ".json");
        var rootfs = await TestHost.RootfsAsync();
        var watch = Stopwatch.StartNew();
        using var process = CorralProcess.Start(["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--result-file", resultFile, .. ScaledStartTimeout(options), .. options, "--", .. command]);
        var stdoutBytes = new MemoryStream();
        var copy = process.StandardOutput.BaseStream.CopyToAsync(stdoutBytes);
        var stderrTask = process.StandardError.ReadToEndAsync();
        var exited = new TaskCompletionSource<DateTimeOffset>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => exited.TrySetResult(DateTimeOffset.UtcNow);
        if (process.HasExited)
        {
            exited.TrySetResult(DateTimeOffset.UtcNow);
        }

        if (await Task.WhenAny(exited.Task, Task.Delay(TestHost.Scaled(TimeSpan.FromSeconds(90)))) != exited.Task)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("corral run hung");
        }

        var exitedAt = await exited.Task;
        var elapsed = watch.Elapsed;
        await process.WaitForExitAsync();
        await copy;
        var result = new CorralResult(process.ExitCode, System.Text.Encoding.UTF8.GetString(stdoutBytes.ToArray()), await stderrTask, exitedAt, elapsed);
        JsonDocument? record = null;
        if (File.Exists(resultFile))
        {
            record = JsonDocument.Parse(await File.ReadAllTextAsync(resultFile));
            File.Delete(resultFile);
        }

        return new RunOutcome(id, result, record, stdoutBytes.ToArray());
    }

    /// <summary>The CLI's 60 s start deadline, scaled where the host is slower (the emulated v2 guest), unless the test sets one.</summary>
    private static string[] ScaledStartTimeout(string[] options) =>
        TestHost.TimeScale > 1 && !options.Contains("--start-timeout")
            ? ["--start-timeout", $"{(int)(60 * TestHost.TimeScale)}s"]
            : [];

    private static async Task<(Process Process, Stopwatch Watch)> StartDetachedAsync(string runtime, string id, params string[] command)
    {
        RuntimeCheck.Require(TestRuntimes.Binary(runtime));
        var rootfs = await TestHost.RootfsAsync();
        var watch = Stopwatch.StartNew();
        var process = CorralProcess.Start(["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, .. ScaledStartTimeout([]), "--", .. command]);
        var ready = await process.StandardOutput.ReadLineAsync().WaitAsync(TestHost.Scaled(TimeSpan.FromSeconds(60)));
        ready.ShouldBe("ready");
        return (process, watch);
    }
}

internal static partial class Interop
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    private static partial int KillNative(int pid, int signal);

    public static void Kill(int pid, int signal) => KillNative(pid, signal).ShouldBe(0);
}

public sealed record RunOutcome(string Id, CorralResult Result, JsonDocument? Record, byte[]? RawStdout);
