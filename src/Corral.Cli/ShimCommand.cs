using System.CommandLine;
using System.Runtime.InteropServices;
using Corral.Common;
using Corral.Runtimes;
using Corral.Shim;
using Corral.Supervision;
using Microsoft.Extensions.Logging;

namespace Corral.Cli;

/// <summary>
/// `corral shim SANDBOXES_DIR`: what the daemon starts for its sandboxes (not for people). It may be
/// started ahead of need (the daemon keeps a few ready): it waits on stdin for one line, the id of the
/// sandbox it is to supervise in SANDBOXES_DIR/ID, and exits quietly at end of input (the daemon stopped
/// or no longer needs it). From then on it supervises one container as `corral run` would and reports
/// through the sandbox's directory (its working directory, so that ps and /proc show which sandbox it
/// serves), so the sandbox keeps running and keeps being supervised while the daemon is down.
/// </summary>
internal static class ShimCommand
{
    public static Command Create()
    {
        var dirArgument = new Argument<string>("SANDBOXES_DIR") { Description = "The daemon's sandboxes directory; the sandbox's id comes on stdin" };
        var command = new Command("shim", "Supervise one daemon sandbox (started by `corral serve`)") { dirArgument };
        command.Hidden = true;
        command.SetAction(async (parse, ct) =>
        {
            var sandboxes = Path.GetFullPath(parse.GetValue(dirArgument)!);
            var id = ShimRunner.ReadAssignment();
            if (id is null)
            {
                return 0;
            }

            var dir = new ShimDirectory(Path.Combine(sandboxes, ContainerId.Validate(id)));
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
