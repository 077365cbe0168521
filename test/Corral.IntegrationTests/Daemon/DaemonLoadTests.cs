using Corral.IntegrationTests.Infrastructure;
using Corral.Protocol.V1;
using Shouldly;
using Xunit;

namespace Corral.IntegrationTests.Daemon;

/// <summary>Many sandboxes at once through one daemon, with execs in each.</summary>
[Collection(DaemonLoadCollection.Name)]
public sealed class DaemonLoadTests(DaemonFixture fixture)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task FiftySandboxesAtOnceWithExecsInEach()
    {
        const int Count = 50;
        var tag = Guid.NewGuid().ToString("N")[..8];
        var ids = new List<string>();
        try
        {
            // Half runc, half gVisor, started ten at a time (fifty boots at once on two cores can outlast
            // the 60 s start deadline); then all fifty run at once and each takes three execs at once.
            const int Wave = 10;
            for (var i = 0; i < Count; i += Wave)
            {
                var wave = await Task.WhenAll(Enumerable.Range(i, Wave).Select(n => fixture.Client.CreateAsync(
                    DaemonSandboxTests.Request(n % 2 == 0 ? "runc" : "gvisor", [], r => r.Labels["fifty"] = tag, fixture.Rootfs), Ct)));
                ids.AddRange(wave.Select(fixture.Track));
                await Task.WhenAll(wave.Select(id => new Corral.Client.Sandbox(fixture.Client, id).WaitRunningAsync(Ct)));
            }

            var results = await Task.WhenAll(ids.Select(async id =>
            {
                var execs = await Task.WhenAll(
                    fixture.Client.ExecAsync(id, ["sh", "-c", $"echo {id}"], cancellationToken: Ct),
                    fixture.Client.ExecAsync(id, ["cat"], $"stdin of {id}\n", Ct),
                    fixture.Client.ExecAsync(id, ["sh", "-c", "exit 42"], cancellationToken: Ct));
                return (Id: id, Execs: execs);
            }));

            // Every exec's outcome is judged, and all that went wrong are reported together, with the runtime.
            var failures = new List<string>();
            foreach (var (id, execs) in results)
            {
                var runtime = ids.IndexOf(id) % 2 == 0 ? "runc" : "gvisor";
                if (execs[0].Stdout != $"{id}\n")
                {
                    failures.Add($"{id} ({runtime}) echo: exit {execs[0].ExitCode}, stdout '{execs[0].Stdout}', stderr '{execs[0].Stderr}'");
                }

                if (execs[1].Stdout != $"stdin of {id}\n")
                {
                    failures.Add($"{id} ({runtime}) cat: exit {execs[1].ExitCode}, stdout '{execs[1].Stdout}', stderr '{execs[1].Stderr}'");
                }

                if (execs[2].ExitCode != 42)
                {
                    failures.Add($"{id} ({runtime}) exit 42: exit {execs[2].ExitCode}, stderr '{execs[2].Stderr}'");
                }
            }

            failures.ShouldBeEmpty();
            (await fixture.Client.ListAsync(new Dictionary<string, string> { ["fifty"] = tag }, [SandboxState.Running], Ct)).Count.ShouldBe(Count);
        }
        finally
        {
            await Task.WhenAll(ids.Select(id => fixture.Client.RemoveAsync(id, Ct, force: true)));
        }

        foreach (var id in ids)
        {
            (await TestHost.LeaksAsync(id)).ShouldBeEmpty();
        }
    }
}
