using System.Diagnostics;
using System.Text.Json;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Supervision;

/// <summary>
/// Hardening issue #10 through the real CLI: overflowing numbers, control characters, the host's root,
/// result files that are no regular file, symlinks in the state dir, private modes under umask 000.
/// Bad input: one line, exit 125, nothing created, the container never ran.
/// </summary>
public sealed class InputHardeningTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static TheoryData<string[], string> BadRunOptions => new()
    {
        { ["--memory", "99999999999999999999999999999"], "invalid --memory '99999999999999999999999999999'" },
        { ["--memory", "1.5"], "invalid --memory '1.5': not a whole number of bytes" },
        { ["--pids", "2147483648"], "invalid --pids '2147483648'" },
        { ["--timeout", "300000000h"], "invalid duration '300000000h'" },
        { ["--start-timeout", "300000000h"], "invalid duration '300000000h'" },
        { ["--env", "A B=1"], "invalid environment variable name 'A B'" },
        { ["--env", "A\u0001=1"], "invalid environment variable name 'A\\x01'" },
        { ["--env", "A\nB=1"], "invalid environment variable name 'A\\x0aB'" },
        { ["--workdir", "/tmp\nx"], "invalid --workdir '/tmp\\x0ax'" },
        { ["--result-file", "/dev/full"], "invalid --result-file '/dev/full': a character device, not a regular file" },
        { ["--result-file", "/tmp"], "invalid --result-file '/tmp': a directory" },
        { ["--result-file", "/proc/self/status"], "invalid --result-file '/proc/self/status'" },
        { ["--rootfs", "/"], "rootfs '/' is the host's root filesystem" },
    };

    [Theory]
    [MemberData(nameof(BadRunOptions))]
    public async Task Bad_run_options_are_refused_before_anything_runs(string[] options, string expected)
    {
        foreach (var runtime in new[] { "runc", "gvisor" })
        {
            var id = TestHost.NewId("harden");
            string[] rootfs = options.Contains("--rootfs") ? [] : ["--rootfs", await TestHost.RootfsAsync()];
            var result = await CorralProcess.RunAsync(["run", "--runtime", runtime, .. rootfs, "--name", id, .. options, "--", "sh", "-c", "echo ran"]);

            result.ExitCode.ShouldBe(125, $"{runtime}: {result.Stderr}");
            OneLine(result.Stderr).ShouldStartWith("corral: " + expected);
            result.Stdout.ShouldBeEmpty("the container must never run");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }

    [Fact]
    public async Task A_name_with_a_final_newline_is_refused()
    {
        // "$" matched before a final newline: "abc\n" passed the name check.
        var result = await CorralProcess.RunAsync(["run", "--runtime", "runc", "--rootfs", await TestHost.RootfsAsync(), "--name", "t-harden-abc\n", "--", "true"]);

        result.ExitCode.ShouldBe(125);
        OneLine(result.Stderr).ShouldStartWith("corral: invalid container name 't-harden-abc\\n'");
        Directory.Exists("/run/corral/bundles/t-harden-abc\n").ShouldBeFalse();
    }

    public static TheoryData<string[], string> BadOtherCommands => new()
    {
        { ["spec", "--rootfs", "/nonexistent", "--", "true"], "rootfs '/nonexistent' does not exist or is not a directory" },
        { ["spec", "--rootfs", "/", "--", "true"], "rootfs '/' is the host's root filesystem" },
        { ["kill", "t-harden-none", "--grace", "300000000h"], "invalid duration '300000000h'" },
        { ["--state-dir", "", "run", "--", "true"], "invalid --state-dir ''" },
        { ["--data-dir", "", "run", "--", "true"], "invalid --data-dir ''" },
        { ["--state-dir", "", "ps"], "invalid --state-dir ''" },
    };

    [Theory]
    [MemberData(nameof(BadOtherCommands))]
    public async Task Bad_input_to_other_commands_is_one_line_and_125(string[] args, string expected)
    {
        var result = await CorralProcess.RunAsync(args);

        result.ExitCode.ShouldBe(125, result.Stderr);
        OneLine(result.Stderr).ShouldStartWith("corral: " + expected);
        result.Stdout.ShouldBeEmpty();
    }

    [Fact]
    public async Task A_result_file_that_is_a_device_or_fifo_is_left_as_it_was()
    {
        var dir = Directory.CreateTempSubdirectory("corral-result-").FullName;
        try
        {
            var fifo = Path.Combine(dir, "fifo");
            (await ShAsync($"mkfifo {fifo}")).ShouldBe(0);
            foreach (var (path, type) in new[] { ("/dev/full", "c"), (fifo, "p") })
            {
                var id = TestHost.NewId("harden");
                var result = await CorralProcess.RunAsync(["run", "--runtime", "runc", "--rootfs", await TestHost.RootfsAsync(), "--name", id, "--result-file", path, "--", "sh", "-c", "echo ran"]);

                result.ExitCode.ShouldBe(125, result.Stderr);
                result.Stdout.ShouldBeEmpty();
                (await ShAsync($"test -{type} {path}")).ShouldBe(0, $"{path} must still be what it was");
                (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task A_symlinked_bundles_dir_is_refused_and_its_target_survives()
    {
        var root = Directory.CreateTempSubdirectory("corral-symlink-state-").FullName;
        var canary = Directory.CreateTempSubdirectory("corral-canary-").FullName;
        try
        {
            var id = TestHost.NewId("harden");
            File.WriteAllText(Path.Combine(canary, "canary"), "alive");
            Directory.CreateDirectory(Path.Combine(canary, id));
            File.WriteAllText(Path.Combine(canary, id, "keep"), "keep");
            var state = Path.Combine(root, "state");
            Directory.CreateDirectory(state);
            File.CreateSymbolicLink(Path.Combine(state, "bundles"), canary);

            var result = await CorralProcess.RunAsync(["--state-dir", state, "run", "--runtime", "runc", "--rootfs", await TestHost.RootfsAsync(), "--name", id, "--", "sh", "-c", "echo ran"]);

            result.ExitCode.ShouldBe(125, result.Stderr);

            // The refusal is the last line (the cleanup's own refusal to delete through the link is logged before it).
            result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1].ShouldStartWith($"corral: refusing to delete {Path.Combine(state, "bundles", id)}: {Path.Combine(state, "bundles")} is a symlink");
            result.Stdout.ShouldBeEmpty();
            File.ReadAllText(Path.Combine(canary, "canary")).ShouldBe("alive");
            File.ReadAllText(Path.Combine(canary, id, "keep")).ShouldBe("keep");
            TestHost.CgroupDirs(id).Where(Directory.Exists).ShouldBeEmpty();
        }
        finally
        {
            Directory.Delete(root, recursive: true);
            Directory.Delete(canary, recursive: true);
        }
    }

    [Fact]
    public async Task Under_umask_000_the_state_dir_bundle_and_records_are_private()
    {
        var root = Directory.CreateTempSubdirectory("corral-umask-").FullName;
        try
        {
            var state = Path.Combine(root, "state");
            var resultFile = Path.Combine(root, "result.json");
            var id = TestHost.NewId("umask");
            var rootfs = await TestHost.RootfsAsync();
            var info = new ProcessStartInfo("sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var arg in new[] { "-c", "umask 000; exec \"$0\" \"$@\"", CorralProcess.Cli, "--state-dir", state, "run", "--runtime", "runc", "--rootfs", rootfs, "--name", id, "--env", "API_KEY=s3cret", "--result-file", resultFile, "--", "sh", "-c", "sleep 4" })
            {
                info.ArgumentList.Add(arg);
            }

            using var process = Process.Start(info)!;
            var watch = Stopwatch.StartNew();
            var config = Path.Combine(state, "bundles", id, "config.json");
            while (!File.Exists(config) && watch.Elapsed < TimeSpan.FromSeconds(60) && !process.HasExited)
            {
                await Task.Delay(20, Ct);
            }

            File.Exists(config).ShouldBeTrue("the bundle's config.json should exist while the container runs");
            File.ReadAllText(config).ShouldContain("API_KEY=s3cret");
            ModeOf(state).ShouldBe("700");
            ModeOf(Path.Combine(state, "bundles")).ShouldBe("700");
            ModeOf(Path.Combine(state, "bundles", id)).ShouldBe("700");
            ModeOf(config).ShouldBe("600");
            ModeOf(Path.Combine(state, "containers")).ShouldBe("700");
            ModeOf(Path.Combine(state, "containers", id + ".json")).ShouldBe("600");
            (await ShAsync($"setpriv --reuid=65534 --regid=65534 --clear-groups cat {config} >/dev/null 2>&1")).ShouldNotBe(0, "nobody must not read the container's environment");

            var result = await CorralProcess.CollectAsync(process, watch, TimeSpan.FromSeconds(90));
            result.ExitCode.ShouldBe(0, result.Stderr);
            ModeOf(resultFile).ShouldBe("600");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task Commands_that_need_a_daemon_say_none_runs_and_how_to_start_one()
    {
        var socket = Path.Combine(Path.GetTempPath(), $"corral-none-{Guid.NewGuid():N}.sock");
        foreach (var args in new[] { new[] { "logs", "x" }, ["wait", "x"], ["inspect", "x"], ["rm", "x"], ["events"] })
        {
            var result = await CorralProcess.RunAsync(["--host", "unix://" + socket, .. args]);

            result.ExitCode.ShouldBe(125, result.Stderr);
            OneLine(result.Stderr).ShouldBe($"corral: no daemon is running at {socket}; start one with `corral serve` --socket {socket}");
        }
    }

    [Fact]
    public async Task Serve_refuses_to_replace_a_regular_file_with_its_socket()
    {
        var root = Directory.CreateTempSubdirectory("corral-serve-").FullName;
        try
        {
            var file = Path.Combine(root, "precious.txt");
            File.WriteAllText(file, "precious");
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var arg in new[] { Daemon.DaemonProcess.DaemonDll, "--socket", file, "--state-dir", Path.Combine(root, "state"), "--shim", CorralProcess.Cli })
            {
                info.ArgumentList.Add(arg);
            }

            using var process = Process.Start(info)!;
            var result = await CorralProcess.CollectAsync(process, Stopwatch.StartNew(), TimeSpan.FromSeconds(60));

            result.ExitCode.ShouldBe(125, result.Stderr);
            result.Stderr.ShouldContain($"invalid --socket {file}: it exists and is not a socket");
            File.ReadAllText(file).ShouldBe("precious");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    internal static string ModeOf(string path) => Convert.ToString((int)File.GetUnixFileMode(path), 8);

    internal static async Task<int> ShAsync(string command)
    {
        using var process = Process.Start(new ProcessStartInfo("sh") { ArgumentList = { "-c", command }, UseShellExecute = false })!;
        await process.WaitForExitAsync(Ct);
        return process.ExitCode;
    }

    internal static string OneLine(string stderr)
    {
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Length.ShouldBe(1, $"expected a one-line error, got: {stderr}");
        return lines[0];
    }
}
