using System.CommandLine;

namespace Corral.Cli;

/// <summary>`corral gc`: removes what supervisors that died (kill -9, a crash) left behind in this state dir.</summary>
internal static class GcCommand
{
    public static Command Create()
    {
        var command = new Command(
            "gc",
            "Remove what dead supervisors left (runtime state, overlay mounts, cgroups, bundles, claims); containers whose supervisor lives are not touched");
        command.SetAction(async (parse, _) =>
        {
            var ctx = CorralCli.Context(parse);
            foreach (var id in await ctx.CreateSupervisor().CollectGarbageAsync().ConfigureAwait(false))
            {
                Console.WriteLine(id);
            }

            return 0;
        });
        return command;
    }
}
