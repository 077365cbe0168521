using System.CommandLine;
using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Runtimes;
using Corral.Shim;
using Corral.Supervision;
using Microsoft.Extensions.Logging;

namespace Corral.Cli;

/// <summary>
/// `corral shim DIR`: what the daemon starts for each sandbox (not for people). Supervises one
/// container as `corral run` would and reports through the sandbox's directory, so the sandbox
/// keeps running and keeps being supervised while the daemon is down.
/// </summary>
internal static class ShimCommand
{
    public static Command Create()
    {
        var dirArgument = new Argument<string>("DIR") { Description = "The sandbox's directory, holding spec.json" };
        var command = new Command("shim", "Supervise one daemon sandbox (started by `corral serve`)") { dirArgument };
        command.Hidden = true;
        command.SetAction(async (parse, ct) =>
        {
            var dir = new ShimDirectory(Path.GetFullPath(parse.GetValue(dirArgument)!));
            using var shimLock = dir.AcquireShimLock(TimeSpan.FromSeconds(2));
            ShimRunner.DetachFromDaemon(dir);
            var spec = dir.ReadSpec();
            if (spec is null)
            {
                dir.WriteFailure($"no readable spec.json in {dir.Path}");
                return 1;
            }

            var ctx = new CorralContext(spec.SupervisorStateDir, "/var/lib/corral", Enum.TryParse<LogLevel>(spec.LogLevel, ignoreCase: true, out var level) ? level : LogLevel.Information, new RuntimeOptions
            {
                RuncPath = spec.RuncPath,
                RunscPath = spec.RunscPath,
                CrunPath = spec.CrunPath,
                RuncRoot = spec.RuncRoot,
                RunscRoot = spec.RunscRoot,
                CrunRoot = spec.CrunRoot,
                RunscPlatform = spec.RunscPlatform,
            })
            {
                LogFormat = spec.LogFormat == "json" ? Corral.Logging.LogFormat.Json : Corral.Logging.LogFormat.Text,
            };
            var supervisor = ctx.CreateSupervisor(new SupervisorOptions
            {
                StateDir = spec.SupervisorStateDir,
                CancelGrace = TimeSpan.FromSeconds(spec.CancelGraceSeconds),
                StartTimeout = TimeSpan.FromSeconds(spec.StartTimeoutSeconds),
            });

            // SIGTERM or SIGINT: stop the container (SIGTERM, SIGKILL after the grace) and report how it ended.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
            return await ShimRunner.RunAsync(dir, spec, supervisor, ctx.Loggers.CreateLogger("Corral.Shim"), stop.Token).ConfigureAwait(false);

            void Stop(PosixSignalContext context)
            {
                context.Cancel = true;
                stop.Cancel();
            }
        });
        return command;
    }
}
