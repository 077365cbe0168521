using System.Diagnostics;
using System.Text.Json;
using Corral.Client;
using Corral.IntegrationTests.Infrastructure;
using Corral.IntegrationTests.Supervision;
using Corral.Protocol.V1;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>
/// Hardening issue #10 through the daemon's API: bad input is INVALID_ARGUMENT with nothing created,
/// host faults are INTERNAL, a missing sandbox NOT_FOUND; a daemon under umask 000 keeps its files
/// private; `corral wait` prints the --result-file record's shape.
/// </summary>
[Collection(DaemonCollection.Name)]
public sealed class DaemonInputHardeningTests(DaemonFixture fixture)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static TheoryData<string, string> BadCreates => new()
    {
        { "nul-command", "invalid command" },
        { "nul-argument", "invalid argument" },
        { "nul-workdir", "invalid --workdir" },
        { "nul-env-value", "invalid value of environment variable K" },
        { "space-env-name", "invalid environment variable name 'A B'" },
        { "newline-env-name", "invalid environment variable name 'A\\x0a'" },
        { "control-env-name", "invalid environment variable name 'A\\x01'" },
        { "newline-name", "invalid container name" },
        { "huge-timeout", "invalid timeout" },
        { "year-and-a-day-timeout", "invalid timeout" },
        { "huge-pids", "invalid limits" },
        { "huge-memory", "invalid limits" },
        { "infinite-cpus", "invalid limits" },
        { "host-root-gvisor", "is the host's root filesystem" },
        { "host-root-runc", "is the host's root filesystem" },
        { "nul-rootfs", "invalid rootfs" },
    };

    [Theory]
    [MemberData(nameof(BadCreates))]
    public async Task Bad_creates_are_invalid_argument_and_create_nothing(string what, string expected)
    {
        var name = fixture.Track(TestHost.NewId("apibad"));
        var request = new CreateRequest { Rootfs = fixture.Rootfs, Runtime = Runtime.Runc, Name = name };
        request.Command.AddRange(["sh", "-c", "echo ran"]);
        switch (what)
        {
            case "nul-command": request.Command[0] = "s\0h"; break;
            case "nul-argument": request.Command[2] = "echo\0ran"; break;
            case "nul-workdir": request.Workdir = "/tmp\0x"; break;
            case "nul-env-value": request.Env["K"] = "v\0w"; break;
            case "space-env-name": request.Env["A B"] = "1"; break;
            case "newline-env-name": request.Env["A\n"] = "1"; break;
            case "control-env-name": request.Env["A\u0001"] = "1"; break;
            case "newline-name": request.Name = name + "\n"; break;
            case "huge-timeout": request.Timeout = new Google.Protobuf.WellKnownTypes.Duration { Seconds = 315576000000 }; break;
            case "year-and-a-day-timeout": request.Timeout = new Google.Protobuf.WellKnownTypes.Duration { Seconds = 366L * 86400 }; break;
            case "huge-pids": request.Pids = 2147483648; break;
            case "huge-memory": request.MemoryBytes = long.MaxValue; break;
            case "infinite-cpus": request.Cpus = double.PositiveInfinity; break;
            case "host-root-gvisor": request.Rootfs = "/"; request.Runtime = Runtime.Gvisor; break;
            case "host-root-runc": request.Rootfs = "/"; break;
            case "nul-rootfs": request.Rootfs = "/tmp\0x"; break;
        }

        var before = Entries(fixture.Daemon.StateDir);
        var ex = await Should.ThrowAsync<RpcException>(() => fixture.Client.CreateAsync(request, Ct));

        ex.StatusCode.ShouldBe(StatusCode.InvalidArgument, ex.Status.Detail);
        ex.Status.Detail.ShouldContain(expected);
        ex.Status.Detail.ShouldNotContain("\n");
        Entries(fixture.Daemon.StateDir).ShouldBe(before);
        (await fixture.Client.ListAsync(cancellationToken: Ct)).ShouldNotContain(s => s.Id == name);
        (await TestHost.LeaksAsync(name)).ShouldBeEmpty();
    }

    [Fact]
    public async Task A_kill_grace_out_of_range_is_invalid_and_a_missing_sandbox_not_found()
    {
        var grace = await Should.ThrowAsync<RpcException>(() => fixture.Client.Raw.KillAsync(new KillRequest { Id = "t-apibad-none", Grace = new Google.Protobuf.WellKnownTypes.Duration { Seconds = 315576000000 } }, cancellationToken: Ct).ResponseAsync);
        grace.StatusCode.ShouldBe(StatusCode.InvalidArgument);

        var missing = await Should.ThrowAsync<RpcException>(() => fixture.Client.InspectAsync("t-apibad-none", Ct));
        missing.StatusCode.ShouldBe(StatusCode.NotFound);
    }

    [Fact]
    public async Task A_missing_runtime_binary_is_a_host_fault_not_bad_input()
    {
        await using var daemon = await DaemonProcess.StartAsync("--runc-path", "/nonexistent/runc");
        var request = new CreateRequest { Rootfs = fixture.Rootfs, Runtime = Runtime.Runc, Name = TestHost.NewId("apibad") };
        request.Command.Add("true");

        var ex = await Should.ThrowAsync<RpcException>(() => daemon.Client.CreateAsync(request, Ct));

        ex.StatusCode.ShouldBe(StatusCode.Internal, ex.Status.Detail);
        ex.Status.Detail.ShouldContain("'/nonexistent/runc'");
        (await Should.ThrowAsync<RpcException>(() => daemon.Client.WaitAsync(request.Name, Ct))).StatusCode.ShouldBe(StatusCode.NotFound);
    }

    [Fact]
    public async Task A_daemon_under_umask_000_keeps_its_state_private_and_wait_prints_the_result_file_shape()
    {
        var root = Directory.CreateTempSubdirectory("corral-umask-daemon-").FullName;
        var socket = Path.Combine(root, "corral.sock");
        var state = Path.Combine(root, "state");
        var info = new ProcessStartInfo("sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { "-c", "umask 000; exec dotnet \"$0\" \"$@\"", DaemonProcess.DaemonDll, "--socket", socket, "--state-dir", state, "--shim", CorralProcess.Cli })
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var output = Task.WhenAll(process.StandardOutput.ReadToEndAsync(Ct), process.StandardError.ReadToEndAsync(Ct));
        var id = fixture.Track(TestHost.NewId("umaskd"));
        try
        {
            await using var client = CorralClient.Connect(socket);
            var watch = Stopwatch.StartNew();
            while (!await client.IsServingAsync(Ct))
            {
                process.HasExited.ShouldBeFalse("the daemon exited");
                watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(60));
                await Task.Delay(50, Ct);
            }

            var request = new CreateRequest { Rootfs = fixture.Rootfs, Runtime = Runtime.Runc, Name = id };
            request.Command.AddRange(["sh", "-c", "echo hello; sleep 3"]);
            request.Env["API_KEY"] = "s3cret";
            await client.CreateAsync(request, Ct);
            var bundleConfig = Path.Combine("/run/corral/bundles", id, "config.json");
            while (!File.Exists(bundleConfig) && watch.Elapsed < TimeSpan.FromSeconds(120))
            {
                await Task.Delay(20, Ct);
            }

            InputHardeningTests.ModeOf(bundleConfig).ShouldBe("600");
            InputHardeningTests.ModeOf(Path.GetDirectoryName(bundleConfig)!).ShouldBe("700");
            (await InputHardeningTests.ShAsync($"setpriv --reuid=65534 --regid=65534 --clear-groups cat {bundleConfig} >/dev/null 2>&1")).ShouldNotBe(0);

            var wait = await CorralProcess.RunAsync(["--host", "unix://" + socket, "wait", id]);
            wait.ExitCode.ShouldBe(0, wait.Stderr);

            var dir = Path.Combine(state, "sandboxes", id);
            InputHardeningTests.ModeOf(state).ShouldBe("700");
            InputHardeningTests.ModeOf(Path.Combine(state, "sandboxes")).ShouldBe("700");
            InputHardeningTests.ModeOf(dir).ShouldBe("700");
            foreach (var file in new[] { "sandbox.json", "spec.json", "status.json", "exit.json", "output.log", "shim.log" })
            {
                InputHardeningTests.ModeOf(Path.Combine(dir, file)).ShouldBe("600", file);
            }

            File.ReadAllText(Path.Combine(dir, "spec.json")).ShouldContain("s3cret");
            (await InputHardeningTests.ShAsync($"setpriv --reuid=65534 --regid=65534 --clear-groups cat {Path.Combine(dir, "spec.json")} >/dev/null 2>&1")).ShouldNotBe(0);
            InputHardeningTests.ModeOf(socket).ShouldBe("600");

            // One record, one shape: wait's JSON has the --result-file record's fields, int64 as numbers, false and null present.
            var resultFile = Path.Combine(root, "result.json");
            var run = await CorralProcess.RunAsync(["run", "--runtime", "runc", "--rootfs", fixture.Rootfs, "--result-file", resultFile, "--", "true"]);
            run.ExitCode.ShouldBe(0, run.Stderr);
            using var waited = JsonDocument.Parse(wait.Stdout);
            using var written = JsonDocument.Parse(File.ReadAllText(resultFile));
            Fields(waited).ShouldBe(Fields(written));
            waited.RootElement.GetProperty("signal").ValueKind.ShouldBe(JsonValueKind.Null);
            waited.RootElement.GetProperty("timedOut").ValueKind.ShouldBe(JsonValueKind.False);
            waited.RootElement.GetProperty("oomKills").ValueKind.ShouldBe(JsonValueKind.Number);
            waited.RootElement.GetProperty("exitCode").GetInt32().ShouldBe(0);
            waited.RootElement.GetProperty("stdoutTail").GetString().ShouldBe("hello\n");
        }
        finally
        {
            if (!process.HasExited)
            {
                _ = Corral.Interop.LibC.kill(process.Id, 15);
            }

            await process.WaitForExitAsync(Ct);
            await output;
            Directory.Delete(root, recursive: true);
        }
    }

    private static string Fields(JsonDocument document) => string.Join(',', document.RootElement.EnumerateObject().Select(p => p.Name).Order());

    private static string Entries(string stateDir)
    {
        var sandboxes = Path.Combine(stateDir, "sandboxes");
        return Directory.Exists(sandboxes) ? string.Join('\n', Directory.EnumerateFileSystemEntries(sandboxes).Order()) : string.Empty;
    }
}
