using Corral.Cli;

return await CorralCli.RunAsync(args).ConfigureAwait(false);
