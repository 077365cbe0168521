using System.Diagnostics;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Bench;

/// <summary>
/// The benchmark harness itself (bench/corral_bench.py): a quick run of one experiment produces its
/// tables and plot. Timing is never asserted here.
/// </summary>
public sealed class BenchHarnessTests
{
    [Fact]
    public async Task QuickLifecycleRunWritesItsTableWithRatiosAndAPlot()
    {
        var outDir = Directory.CreateTempSubdirectory("corral-bench-test-").FullName;
        try
        {
            var info = new ProcessStartInfo("python3")
            {
                WorkingDirectory = CorralProcess.RepoRoot,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var arg in new[] { "bench/corral_bench.py", "--quick", "--only", "lifecycle", "--out", outDir })
            {
                info.ArgumentList.Add(arg);
            }

            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            var stderr = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            using (var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(5)))
            {
                try
                {
                    await process.WaitForExitAsync(deadline.Token);
                }
                catch (OperationCanceledException)
                {
                    process.Kill(entireProcessTree: true);
                    throw new TimeoutException("the quick lifecycle benchmark did not finish within 5 minutes");
                }
            }

            var output = await stdout + await stderr;
            process.ExitCode.ShouldBe(0, output);

            var markdown = Path.Combine(outDir, "lifecycle.md");
            File.Exists(markdown).ShouldBeTrue(output);
            var text = await File.ReadAllTextAsync(markdown, TestContext.Current.CancellationToken);
            var header = text.Split('\n').FirstOrDefault(l => l.StartsWith("| runtime |", StringComparison.Ordinal));
            header.ShouldNotBeNull(text);
            header.ShouldContain("ratio");
            text.ShouldContain("| runc |");
            text.ShouldContain("| gvisor |");
            text.ShouldContain("(reference)");

            Directory.GetFiles(outDir, "*.png").ShouldNotBeEmpty();
            var index = await File.ReadAllTextAsync(Path.Combine(outDir, "README.md"), TestContext.Current.CancellationToken);
            index.ShouldContain("## Machine");
            index.ShouldContain("runsc");
        }
        finally
        {
            Directory.Delete(outDir, recursive: true);
        }
    }
}
