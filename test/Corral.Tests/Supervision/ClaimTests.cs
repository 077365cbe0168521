using Corral.Common;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Supervision;

/// <summary>Claims of container names (flock held by the owner) and the per-state-dir layout.</summary>
public sealed class ClaimTests : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("corral-claims-");

    private ContainerStateStore Store => new(_root.FullName);

    [Fact]
    public void SecondClaimOfAHeldNameIsRefusedAndTouchesNothing()
    {
        using var first = Store.Claim(State("same"));
        var before = File.ReadAllText(Store.PathOf("same"));

        var refused = Should.Throw<CorralException>(() => Store.Claim(State("same") with { SupervisorPid = 1 }));

        refused.Kind.ShouldBe(ErrorKind.AlreadyExists);
        refused.Message.ShouldBe($"a container named 'same' is already running (supervised by pid {Environment.ProcessId})");
        File.ReadAllText(Store.PathOf("same")).ShouldBe(before);
        Store.IsOwned("same").ShouldBeTrue();
    }

    [Fact]
    public void ReleaseRemovesRecordAndLockAndFreesTheName()
    {
        var claim = Store.Claim(State("free"));
        claim.Release();

        File.Exists(Store.PathOf("free")).ShouldBeFalse();
        File.Exists(Store.LockPathOf("free")).ShouldBeFalse();
        Store.IsOwned("free").ShouldBeFalse();
        using var again = Store.Claim(State("free"));
        Store.IsOwned("free").ShouldBeTrue();
    }

    [Fact]
    public void ARecordWhoseLockIsFreeIsOrphanedAndCanBeTakenOver()
    {
        // A supervisor that died: its record and lock file stay, its lock is gone.
        Store.Claim(State("dead") with { Status = "running" }).Dispose();

        Store.IsOwned("dead").ShouldBeFalse();
        Store.List().Single().Status.ShouldBe(ContainerStateStore.OrphanedStatus);
        Store.Ids().ShouldBe(["dead"]);

        using var takeover = Store.TryTakeOver("dead");
        takeover.ShouldNotBeNull();
        Store.TryTakeOver("dead").ShouldBeNull("a live owner (the reclaimer) holds it now");
        Store.List().Single().Status.ShouldBe("running");
    }

    [Fact]
    public void ANewRunDoesNotTakeOverWhatADeadSupervisorLeft()
    {
        Store.Claim(State("left")).Dispose();

        var refused = Should.Throw<CorralException>(() => Store.Claim(State("left")));

        refused.Kind.ShouldBe(ErrorKind.AlreadyExists);
        refused.Message.ShouldBe("container 'left' was left behind by a supervisor that died; remove it with `corral kill left` or `corral gc`");
        Store.IsOwned("left").ShouldBeFalse();
    }

    [Fact]
    public void AHalfWrittenRecordIsNeverTakenForStale()
    {
        using var owner = Store.Claim(State("partial"));
        File.WriteAllText(Store.PathOf("partial"), "{\"id\":"); // as if still being written

        Should.Throw<CorralException>(() => Store.Claim(State("partial"))).Kind.ShouldBe(ErrorKind.AlreadyExists);
    }

    [Fact]
    public void StateDirsGetTheirOwnRuntimeRootsAndCgroupParent()
    {
        StateLayout.CgroupParent("/run/corral").ShouldBe("corral");
        StateLayout.CgroupParent("/run/corral/").ShouldBe("corral");
        StateLayout.RuncRoot("/run/corral").ShouldBe("/run/corral/runc");
        StateLayout.RunscRoot("/run/corral").ShouldBe("/run/corral/runsc");

        var other = StateLayout.CgroupParent("/tmp/a");
        other.ShouldMatch("^corral-[0-9a-f]{12}$");
        StateLayout.CgroupParent("/tmp/b").ShouldNotBe(other);
        StateLayout.CgroupParent("/tmp/a/").ShouldBe(other);
        StateLayout.RuncRoot("/tmp/a").ShouldBe("/tmp/a/runc");
    }

    public void Dispose() => _root.Delete(recursive: true);

    private static ContainerState State(string id) => new()
    {
        Id = id,
        Runtime = "runc",
        RuntimeRoot = "/run/corral/runc",
        SupervisorPid = Environment.ProcessId,
        CreatedAt = DateTimeOffset.UtcNow,
        Command = ["true"],
    };
}
