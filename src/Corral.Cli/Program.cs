using Corral.Cli;
using Corral.Supervision;

// The parent of a detached runc exec (ExecReaper), started once per exec: it skips building the CLI.
if (args.Length > 0 && args[0] == ExecReaper.CommandName)
{
    if (args is [_, var pidFile, "--", .. var runtime] && runtime.Length > 0)
    {
        return ExecReaper.Run(pidFile, runtime, Console.Error);
    }

    await Console.Error.WriteLineAsync($"usage: corral {ExecReaper.CommandName} PIDFILE -- RUNTIME ARGS... (started by corral exec, not for people)").ConfigureAwait(false);
    return 125;
}

return await CorralCli.RunAsync(args).ConfigureAwait(false);
