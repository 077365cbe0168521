using System.Text.Json;
using Corral.Cgroups;
using Corral.IntegrationTests.Infrastructure;
using Corral.IntegrationTests.Supervision;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Cgroups;

/// <summary>
/// The cgroup v2 lane's own cases (`./test.sh --cgroup2` runs every test with the trait Lane=cgroup2
/// in a pure-v2 guest, or natively on a pure-v2 host); they run on any host in the main suite too.
/// </summary>
[Trait("Lane", "cgroup2")]
public sealed class Cgroup2LaneTests
{
    private const string Allocate300Mb = "b = b'\\x01' * (300 << 20); print('survived')";

    public static TheoryData<string> Runtimes => new() { "runc", "gvisor" };

    /// <summary>Set by scripts/cgroup2-guest.sh and test.sh's lane: the lane must not pass on a hybrid host.</summary>
    private static bool InLane => Environment.GetEnvironmentVariable("CORRAL_CGROUP2_LANE") == "1";

    [Fact]
    public void TheLaneRunsOnAPureCgroupV2Host()
    {
        var mounts = File.ReadAllLines("/proc/self/mountinfo")
            .Select(l => l.Split(" - ", 2))
            .Where(p => p.Length == 2)
            .Select(p => p[1].Split(' ')[0])
            .ToList();
        var driver = CgroupDetector.DetectHost().ShouldNotBeNull("no usable cgroup memory controller");
        if (InLane)
        {
            mounts.ShouldNotContain("cgroup", "a cgroup v1 hierarchy is mounted: the lane must run on pure cgroup v2");
            mounts.ShouldContain("cgroup2");
            driver.Version.ShouldBe(CgroupVersion.V2);
        }
        else
        {
            driver.Version.ShouldBe(mounts.Contains("cgroup") ? CgroupVersion.V1 : CgroupVersion.V2);
        }
    }

    [Theory]
    [MemberData(nameof(Runtimes))]
    public async Task CreepingAllocationIsOomKilledAtTheLimit(string runtime)
    {
        // 1 MiB at a time with pauses: the kill comes from the limit, not from one huge request.
        var script = "import time\nchunks = []\nfor i in range(400):\n    chunks.append(b'\\x01' * (1 << 20))\n    if i % 8 == 0: time.sleep(0.01)\nprint('survived', flush=True)";
        var run = await ExitDetectionTests.RunAsync(runtime, ["--memory", "64Mi", "--timeout", "120s"], "python3", "-c", script);

        run.Result.ExitCode.ShouldBe(137, run.Result.Stderr);
        run.Result.Stdout.ShouldNotContain("survived");
        var record = run.Record!.RootElement;
        record.GetProperty("timedOut").GetBoolean().ShouldBeFalse("memory, not the timeout, must end it");
        record.GetProperty("oomKilled").GetBoolean().ShouldBeTrue();
        record.GetProperty("oomReason").GetString().ShouldBe("kernel");
        record.GetProperty("oomKills").GetInt64().ShouldBeGreaterThanOrEqualTo(1);
        record.GetProperty("peakMemoryBytes").GetInt64().ShouldBeGreaterThan(48L << 20);
        (await TestHost.LeaksAsync(run.Id)).ShouldBeEmpty();
    }

    [Fact]
    public async Task EightConcurrentOomsAreAllReported()
    {
        // One round of OomEndToEndTests' 8 x 10 (that one is too slow under software emulation, where
        // eight sandboxes starting at once on two emulated CPUs can take longer than the default 60 s
        // start deadline: this is about OOM reports, so the deadline is generous).
        var rootfs = await TestHost.RootfsAsync();
        var runs = Enumerable.Range(0, 8).Select(async i =>
        {
            var runtime = TestRuntimes.Rotation(i);
            var id = TestHost.NewId($"oom8x{i}");
            var file = Path.Combine(Path.GetTempPath(), id + ".json");
            var result = await CorralProcess.RunAsync(
                ["run", "--runtime", runtime, "--rootfs", rootfs, "--name", id, "--memory", "64Mi", "--start-timeout", "240s", "--result-file", file, "--", "python3", "-c", Allocate300Mb],
                TimeSpan.FromSeconds(400));
            File.Exists(file).ShouldBeTrue($"{runtime} {id} wrote no exit record (exit {result.ExitCode}): {result.Stderr}");
            using var record = JsonDocument.Parse(await File.ReadAllTextAsync(file));
            File.Delete(file);
            return (id, runtime, result, oom: record.RootElement.GetProperty("oomKilled").GetBoolean(), kills: record.RootElement.GetProperty("oomKills").GetInt64());
        }).ToList();

        foreach (var (id, runtime, result, oom, kills) in await Task.WhenAll(runs))
        {
            result.ExitCode.ShouldBe(137, $"{runtime} {id}: {result.Stderr}");
            oom.ShouldBeTrue($"{runtime} {id}");
            kills.ShouldBeGreaterThanOrEqualTo(1, $"{runtime} {id}");
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }
}
