using Corral.IntegrationTests.Infrastructure;
using Corral.IntegrationTests.Supervision;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Oom;

/// <summary>CPU and pids limits are enforced by the kernel on the whole container, sandbox included.</summary>
public sealed class LimitTests
{
    public static TheoryData<string> Runtimes => new() { "runc", "gvisor" };

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task HalfACpuGetsAboutHalfTheCpuTime(string runtime)
    {
        // Busy-loop for 3 s of wall time: unlimited this burns ~3 s of CPU, with --cpus 0.5 ~1.5 s.
        var run = await ExitDetectionTests.RunAsync(runtime, ["--cpus", "0.5"], "python3", "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass");

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        var cpuSeconds = run.Record!.RootElement.GetProperty("cpuUsageNs").GetInt64() / 1e9;
        cpuSeconds.ShouldBeLessThan(2.2, "the CFS quota caps the container at half a core");
        cpuSeconds.ShouldBeGreaterThan(0.8);
    }

    [Fact]
    public async Task PidsLimitStopsAForkFlood()
    {
        var script = "import subprocess\nok = 0\nfor i in range(60):\n    try:\n        subprocess.Popen(['sleep', '30']); ok += 1\n    except OSError:\n        break\nprint('started', ok, flush=True)";
        var run = await ExitDetectionTests.RunAsync("runc", ["--pids", "20"], "python3", "-c", script);

        run.Result.ExitCode.ShouldBe(0, run.Result.Stderr);
        var started = int.Parse(run.Result.Stdout.Trim().Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        started.ShouldBeLessThan(20);
        started.ShouldBeGreaterThan(5);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task GpuOnAHostWithoutOneIsRefused()
    {
        var id = TestHost.NewId("gpu");
        var rootfs = await TestHost.RootfsAsync();
        var result = await CorralProcess.RunAsync(["run", "--runtime", "gvisor", "--gpu", "--rootfs", rootfs, "--name", id, "--", "true"]);

        if (File.Exists("/dev/nvidiactl"))
        {
            result.ExitCode.ShouldBe(0, result.Stderr);
        }
        else
        {
            result.ExitCode.ShouldBe(125);
            result.Stderr.Trim().ShouldStartWith("corral: --gpu: no NVIDIA GPU on this host");
        }

        (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
    }
}
