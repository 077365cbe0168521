using Corral.Common;
using Corral.Daemon.Hosting;

try
{
    return await DaemonHost.RunAsync(args).ConfigureAwait(false);
}
catch (CorralException ex)
{
    Console.Error.WriteLine($"corral serve: {ex.Message}");
    return ex.ExitCode;
}
