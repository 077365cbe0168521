using System.Text;
using System.Text.Json;
using Corral.Common;
using Corral.Oci;
using Corral.Runtimes;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Supervision;

/// <summary>
/// The exec plumbing against a stand-in runtime (a shell script that records the process.json it
/// is given, writes the pid file, echoes stdin and exits 3). Real runc and runsc execs are the
/// integration tests' (Daemon/DaemonExecTests).
/// </summary>
public sealed class ContainerExecutorTests : IDisposable
{
    private const string Id = "exec-unit";
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("corral-exec-unit-");

    public ContainerExecutorTests()
    {
        Directory.CreateDirectory(Rootfs);
        Directory.CreateDirectory(Path.Combine(Rootfs, "bin"));
        Directory.CreateDirectory(Path.Combine(Rootfs, "work"));
        foreach (var tool in new[] { "sh", "cat" })
        {
            var path = Path.Combine(Rootfs, "bin", tool);
            File.WriteAllText(path, string.Empty);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        }

        File.WriteAllText(FakeRuntime, """
            #!/bin/sh
            # --root R exec --process F --pid-file P ID
            cp "$5" "$(dirname "$0")/seen-process.json"
            echo $$ > "$7"
            cat
            echo "to stderr" >&2
            exit 3
            """);
        File.SetUnixFileMode(FakeRuntime, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var bundle = Path.Combine(StateDir, "bundles", Id);
        Directory.CreateDirectory(bundle);
        var spec = SpecBuilder.Build(new SpecInput
        {
            RootfsPath = Rootfs,
            Args = ["sleep", "100"],
            Env = [new("PATH", "/bin"), new("KEEP", "sandbox"), new("OVERRIDE", "sandbox")],
            Workdir = "/work",
        });
        File.WriteAllText(Path.Combine(bundle, "config.json"), SpecBuilder.ToJson(spec));
    }

    private string StateDir => Path.Combine(_root.FullName, "state");

    private string Rootfs => Path.Combine(_root.FullName, "rootfs");

    private string FakeRuntime => Path.Combine(_root.FullName, "fake-runc");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task RunsTheCommandWithTheContainersProcessSettingsAndReportsHowItEnded()
    {
        Claim(pid: 4242);
        using var stdout = new MemoryStream();
        using var stderr = new MemoryStream();

        var exec = await Executor().StartAsync(
            new ExecRequest { ContainerId = Id, Command = ["cat", "-"], Env = [new("OVERRIDE", "exec"), new("ADDED", "1")] },
            new ExecIo(new MemoryStream(Encoding.UTF8.GetBytes("from stdin\n")), stdout, stderr),
            Ct);
        var result = await exec.Completion.WaitAsync(TimeSpan.FromSeconds(30), Ct);

        result.ExitCode.ShouldBe(3);
        result.Signal.ShouldBeNull();
        Encoding.UTF8.GetString(stdout.ToArray()).ShouldBe("from stdin\n");
        result.StdoutTail.ShouldBe("from stdin\n");
        Encoding.UTF8.GetString(stderr.ToArray()).ShouldBe("to stderr\n");
        exec.Pid.ShouldNotBeNull();
        using var seen = JsonDocument.Parse(File.ReadAllText(Path.Combine(_root.FullName, "seen-process.json")));
        var process = seen.RootElement;
        process.GetProperty("args").EnumerateArray().Select(a => a.GetString()).ShouldBe(["cat", "-"]);
        process.GetProperty("env").EnumerateArray().Select(a => a.GetString()).ShouldBe(["PATH=/bin", "HOME=/root", "KEEP=sandbox", "OVERRIDE=exec", "ADDED=1"]);
        process.GetProperty("cwd").GetString().ShouldBe("/work");
        process.GetProperty("noNewPrivileges").GetBoolean().ShouldBeTrue();
        process.GetProperty("capabilities").GetProperty("bounding").GetArrayLength().ShouldBeGreaterThan(0);
        Directory.GetFiles(Path.Combine(StateDir, "bundles", Id), "exec-*").ShouldBeEmpty();
    }

    [Fact]
    public async Task BadRequestsAreRefusedBeforeAnythingRuns()
    {
        var executor = Executor();
        async Task<CorralException> Refused(ExecRequest request) =>
            await Should.ThrowAsync<CorralException>(() => executor.StartAsync(request, new ExecIo(null, null, null), Ct));

        var unknown = await Refused(new ExecRequest { ContainerId = Id, Command = ["cat"] });
        Claim(pid: null);
        var notStarted = await Refused(new ExecRequest { ContainerId = Id, Command = ["cat"] });
        Claim(pid: 4242);
        var missing = await Refused(new ExecRequest { ContainerId = Id, Command = ["python3"] });
        var empty = await Refused(new ExecRequest { ContainerId = Id, Command = [] });
        var relative = await Refused(new ExecRequest { ContainerId = Id, Command = ["cat"], Workdir = "work" });
        var absent = await Refused(new ExecRequest { ContainerId = Id, Command = ["cat"], Workdir = "/nowhere" });
        var badEnv = await Refused(new ExecRequest { ContainerId = Id, Command = ["cat"], Env = [new("A=B", "x")] });
        var badId = await Refused(new ExecRequest { ContainerId = "../etc", Command = ["cat"] });

        unknown.ExitCode.ShouldBe(1);
        unknown.Message.ShouldBe($"no such container: {Id}");
        notStarted.Message.ShouldBe($"container {Id} has not started yet");
        missing.ExitCode.ShouldBe(CorralExitCodes.CommandNotFound);
        missing.BadInput.ShouldBeTrue();
        missing.Message.ShouldBe("command not found in the container's root filesystem: python3");
        empty.Message.ShouldStartWith("no command given");
        relative.Message.ShouldContain("must be an absolute path");
        absent.Message.ShouldContain("no such directory");
        badEnv.Message.ShouldStartWith("invalid environment variable name 'A=B'");
        badId.ExitCode.ShouldBe(CorralExitCodes.CorralError);
        File.Exists(Path.Combine(_root.FullName, "seen-process.json")).ShouldBeFalse("the runtime was never called");
        Directory.GetFiles(Path.Combine(StateDir, "bundles", Id), "exec-*").ShouldBeEmpty();
    }

    public void Dispose()
    {
        _claim?.Release();
        _root.Delete(recursive: true);
    }

    private ContainerClaim? _claim;

    private ContainerExecutor Executor() =>
        new(new SupervisorOptions { StateDir = StateDir }, new RuntimeOptions { RuncPath = FakeRuntime, RuncRoot = Path.Combine(_root.FullName, "runc") }, TimeProvider.System);

    private void Claim(int? pid)
    {
        var store = new ContainerStateStore(StateDir);
        _claim?.Release();
        _claim = store.Claim(new ContainerState
        {
            Id = Id,
            Runtime = "runc",
            RuntimeRoot = Path.Combine(_root.FullName, "runc"),
            SupervisorPid = Environment.ProcessId,
            Pid = pid,
            CreatedAt = DateTimeOffset.UtcNow,
            Command = ["sleep", "100"],
        });
    }
}
