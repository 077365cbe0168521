using System.Diagnostics;
using Corral.IntegrationTests.Infrastructure;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Ecosystem;

/// <summary>What an operator touches: help text, bash completion, the systemd unit.</summary>
public sealed class OperatingTests
{
    [Theory]
    [InlineData("--help", "corral [command] [options]")]
    [InlineData("import --help", "corral import <PATH> [options]")]
    [InlineData("run --help", "corral run [<CMD>...] [options]")]
    [InlineData("completion --help", "corral completion <SHELL> [options]")]
    public async Task Help_and_usage_lines_say_corral(string args, string usage)
    {
        var result = await CorralProcess.RunAsync(args.Split(' '));

        result.ExitCode.ShouldBe(0, result.Stderr);
        result.Stdout.Contains("Usage:\n  " + usage, StringComparison.Ordinal).ShouldBeTrue(result.Stdout);
        result.Stdout.Contains("Corral.Cli", StringComparison.Ordinal).ShouldBeFalse(result.Stdout);
        var lines = result.Stdout.Split('\n');
        var usageLine = lines[Array.IndexOf(lines, "Usage:") + 1];
        usageLine.StartsWith("  corral ", StringComparison.Ordinal).ShouldBeTrue(usageLine);
    }

    [Theory]
    [InlineData("ru", "run", "rm")]
    [InlineData("run --me", "--memory", "--cpus")]
    public async Task Bash_completion_completes_commands_and_options(string typed, string expected, string notExpected)
    {
        var script = await CorralProcess.RunAsync(["completion", "bash"]);
        script.ExitCode.ShouldBe(0, script.Stderr);
        var file = Path.Combine(Path.GetTempPath(), $"corral-completion-{Guid.NewGuid():N}.bash");
        await File.WriteAllTextAsync(file, script.Stdout, TestContext.Current.CancellationToken);
        try
        {
            // What bash does on TAB after `corral <typed>`: the words, the line, the cursor at its end.
            var words = typed.Split(' ');
            var line = $"{CorralProcess.Cli} {typed}";
            var driver = $"""
                source '{file}'
                COMP_WORDS=('{CorralProcess.Cli}' {string.Join(' ', words.Select(w => $"'{w}'"))})
                COMP_CWORD={words.Length}
                COMP_LINE='{line}'
                COMP_POINT=${"{#COMP_LINE}"}
                _corral_complete
                printf '%s\n' "${"{COMPREPLY[@]}"}"
                complete -p corral
                """;
            var result = await RunAsync("bash", ["-c", driver]);

            result.ExitCode.ShouldBe(0, result.Stderr);
            var suggestions = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            suggestions.ShouldContain(expected);
            suggestions.ShouldNotContain(notExpected);
            suggestions[^1].ShouldContain("-F _corral_complete");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Completion_for_another_shell_is_refused_in_one_line()
    {
        var result = await CorralProcess.RunAsync(["completion", "fish"]);

        result.ExitCode.ShouldBe(125);
        result.Stderr.Trim().Split('\n').Length.ShouldBe(1);
        result.Stdout.ShouldBeEmpty();
    }

    [Fact]
    public async Task The_systemd_unit_installs_with_this_checkout_and_passes_systemd_analyze_verify()
    {
        RuntimeCheck.Require("systemd-analyze");
        var dest = Directory.CreateTempSubdirectory("corral-unit-").FullName;
        try
        {
            var install = await RunAsync(Path.Combine(CorralProcess.RepoRoot, "scripts", "install-service.sh"), ["--dest", dest, "--no-reload", "--", "--metrics-listen", "127.0.0.1:9464"]);
            install.ExitCode.ShouldBe(0, install.Stderr);
            var unit = await File.ReadAllTextAsync(Path.Combine(dest, "corral.service"), TestContext.Current.CancellationToken);
            unit.ShouldContain($"ExecStart={CorralProcess.RepoRoot}/corral serve --log-format json --metrics-listen 127.0.0.1:9464\n");
            unit.ShouldContain("KillMode=process");
            unit.ShouldNotContain("@");

            var verify = await RunAsync("systemd-analyze", ["verify", Path.Combine(dest, "corral.service")]);
            verify.ExitCode.ShouldBe(0, verify.Stderr);
            verify.Stderr.ShouldNotContain("corral.service:", customMessage: verify.Stderr);

            // The check can fail: the same unit pointing at a binary that is not there does not verify.
            await File.WriteAllTextAsync(Path.Combine(dest, "corral.service"), unit.Replace($"{CorralProcess.RepoRoot}/corral", "/nonexistent/corral", StringComparison.Ordinal), TestContext.Current.CancellationToken);
            (await RunAsync("systemd-analyze", ["verify", Path.Combine(dest, "corral.service")])).ExitCode.ShouldNotBe(0);

            var refused = await RunAsync(Path.Combine(CorralProcess.RepoRoot, "scripts", "install-service.sh"), ["--dest", dest, "--no-reload", "--", "--socket", "/tmp/a b"]);
            refused.ExitCode.ShouldBe(125);
        }
        finally
        {
            Directory.Delete(dest, recursive: true);
        }
    }

    private static async Task<CorralResult> RunAsync(string file, IEnumerable<string> args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        process.StandardInput.Close();
        return await CorralProcess.CollectAsync(process, Stopwatch.StartNew(), TimeSpan.FromSeconds(60));
    }
}
