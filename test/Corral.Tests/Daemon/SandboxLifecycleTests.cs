using Corral.Daemon.Sandboxes;
using Corral.Shim;
using Corral.Supervision;
using Shouldly;
using Xunit;

namespace Corral.Tests.Daemon;

/// <summary>The sandbox state machine: the pure table, and the sandbox that derives its flags and completion from it.</summary>
public sealed class SandboxLifecycleTests
{
    /// <summary>Every (state, trigger) pair, with the state it leads to; null: it does not apply there and nothing changes.</summary>
    public static TheoryData<SandboxState, SandboxTrigger, SandboxState?> Table => new()
    {
        { SandboxState.Created, SandboxTrigger.Start, SandboxState.Running },
        { SandboxState.Created, SandboxTrigger.Stop, SandboxState.Stopping },
        { SandboxState.Created, SandboxTrigger.Exit, SandboxState.Exited },
        { SandboxState.Created, SandboxTrigger.Fail, SandboxState.Failed },
        { SandboxState.Created, SandboxTrigger.Remove, null },
        { SandboxState.Running, SandboxTrigger.Start, SandboxState.Running },
        { SandboxState.Running, SandboxTrigger.Stop, SandboxState.Stopping },
        { SandboxState.Running, SandboxTrigger.Exit, SandboxState.Exited },
        { SandboxState.Running, SandboxTrigger.Fail, SandboxState.Failed },
        { SandboxState.Running, SandboxTrigger.Remove, null },
        { SandboxState.Stopping, SandboxTrigger.Start, SandboxState.Stopping },
        { SandboxState.Stopping, SandboxTrigger.Stop, null },
        { SandboxState.Stopping, SandboxTrigger.Exit, SandboxState.Exited },
        { SandboxState.Stopping, SandboxTrigger.Fail, SandboxState.Failed },
        { SandboxState.Stopping, SandboxTrigger.Remove, null },
        { SandboxState.Exited, SandboxTrigger.Start, null },
        { SandboxState.Exited, SandboxTrigger.Stop, null },
        { SandboxState.Exited, SandboxTrigger.Exit, null },
        { SandboxState.Exited, SandboxTrigger.Fail, null },
        { SandboxState.Exited, SandboxTrigger.Remove, SandboxState.Removed },
        { SandboxState.Failed, SandboxTrigger.Start, null },
        { SandboxState.Failed, SandboxTrigger.Stop, null },
        { SandboxState.Failed, SandboxTrigger.Exit, null },
        { SandboxState.Failed, SandboxTrigger.Fail, null },
        { SandboxState.Failed, SandboxTrigger.Remove, SandboxState.Removed },
        { SandboxState.Removed, SandboxTrigger.Start, null },
        { SandboxState.Removed, SandboxTrigger.Stop, null },
        { SandboxState.Removed, SandboxTrigger.Exit, null },
        { SandboxState.Removed, SandboxTrigger.Fail, null },
        { SandboxState.Removed, SandboxTrigger.Remove, null },
    };

    [Theory]
    [MemberData(nameof(Table))]
    public void EachTriggerLeadsWhereTheTableSays(SandboxState from, SandboxTrigger trigger, SandboxState? to) =>
        SandboxLifecycle.Next(from, trigger).ShouldBe(to);

    [Fact]
    public void TheTableCoversEveryStateAndTrigger() =>
        Table.Count.ShouldBe(Enum.GetValues<SandboxState>().Length * Enum.GetValues<SandboxTrigger>().Length);

    [Fact]
    public void OnlyExitedFailedAndRemovedHaveEnded()
    {
        Enum.GetValues<SandboxState>().Where(SandboxLifecycle.HasEnded)
            .ShouldBe([SandboxState.Exited, SandboxState.Failed, SandboxState.Removed], ignoreOrder: true);
    }

    [Fact]
    public void ARecordShowsAStopInProgressAsRunning()
    {
        SandboxLifecycle.ToStatus(SandboxState.Created).ShouldBe(SandboxStatus.Created);
        SandboxLifecycle.ToStatus(SandboxState.Running).ShouldBe(SandboxStatus.Running);
        SandboxLifecycle.ToStatus(SandboxState.Stopping).ShouldBe(SandboxStatus.Running);
        SandboxLifecycle.ToStatus(SandboxState.Exited).ShouldBe(SandboxStatus.Exited);
        SandboxLifecycle.ToStatus(SandboxState.Failed).ShouldBe(SandboxStatus.Failed);
    }

    [Theory]
    [InlineData(SandboxStatus.Created, SandboxState.Created)]
    [InlineData(SandboxStatus.Running, SandboxState.Running)]
    [InlineData(SandboxStatus.Exited, SandboxState.Running)]
    [InlineData(SandboxStatus.Failed, SandboxState.Running)]
    public void ARestartedDaemonTakesUpEndedRecordsAsRunningSoTheShimsFilesEndThemAgain(SandboxStatus status, SandboxState state)
    {
        SandboxLifecycle.Restored(status).ShouldBe(state);
        var sandbox = NewSandbox(status);
        sandbox.HasEnded.ShouldBeFalse();
        sandbox.Exited(Exit(sandbox.Id), _ => { }).ShouldBeTrue();
        sandbox.Completion.IsCompletedSuccessfully.ShouldBeTrue();
    }

    [Fact]
    public async Task AnExitEndsTheSandboxOnceAndCompletesItWithTheRecord()
    {
        var sandbox = NewSandbox();
        sandbox.Start(41, out _).ShouldBeTrue();
        var exit = Exit(sandbox.Id);

        SandboxRecord? record = null;
        var completedWhenAnnounced = true;
        sandbox.Exited(exit, kept =>
        {
            record = kept;
            completedWhenAnnounced = sandbox.Completion.IsCompleted;
        }).ShouldBeTrue();

        completedWhenAnnounced.ShouldBeFalse("the record and its event go out before a waiter is answered");
        record.ShouldNotBeNull();

        sandbox.State.ShouldBe(SandboxState.Exited);
        sandbox.HasEnded.ShouldBeTrue();
        record.Status.ShouldBe(SandboxStatus.Exited);
        sandbox.Record.ShouldBe(record);
        sandbox.Exit.ShouldBe(exit);
        (await sandbox.Completion).ShouldBe(exit);
        sandbox.Exited(exit with { ExitCode = 3 }, _ => throw new InvalidOperationException("announced twice")).ShouldBeFalse();
        sandbox.Failed("late", new InvalidOperationException("late"), _ => throw new InvalidOperationException("announced twice")).ShouldBeFalse();
        sandbox.Exit!.ExitCode.ShouldBe(0);
        sandbox.Record.Error.ShouldBeNull();
    }

    [Fact]
    public void AFailureEndsTheSandboxWithItsReasonSoRemoveAndAdmissionCanProceed()
    {
        var sandbox = NewSandbox();
        sandbox.Start(41, out _).ShouldBeTrue();
        sandbox.Removed().ShouldBeFalse("a running sandbox cannot be removed");

        var cause = new InvalidOperationException("the daemon lost track of the sandbox");
        SandboxRecord? record = null;
        var completedWhenAnnounced = true;
        sandbox.Failed("the daemon lost track of the sandbox", cause, kept =>
        {
            record = kept;
            completedWhenAnnounced = sandbox.Completion.IsCompleted;
        }).ShouldBeTrue();

        completedWhenAnnounced.ShouldBeFalse("the record and its event go out before a waiter is answered");
        record.ShouldNotBeNull();

        record.Status.ShouldBe(SandboxStatus.Failed);
        record.Error.ShouldBe("the daemon lost track of the sandbox");
        sandbox.HasEnded.ShouldBeTrue();
        sandbox.Completion.IsFaulted.ShouldBeTrue();
        sandbox.Completion.Exception!.InnerException.ShouldBeSameAs(cause);
        sandbox.Removed().ShouldBeTrue();
        sandbox.State.ShouldBe(SandboxState.Removed);
        sandbox.Removed().ShouldBeFalse("removed once");
    }

    [Fact]
    public void APidIsAnnouncedOnceAndKeptInTheRecord()
    {
        var sandbox = NewSandbox();

        sandbox.Start(41, out var first).ShouldBeTrue();
        first.ShouldNotBeNull().Status.ShouldBe(SandboxStatus.Running);
        first.Pid.ShouldBe(41);
        sandbox.State.ShouldBe(SandboxState.Running);

        sandbox.Start(41, out var again).ShouldBeFalse();
        again.ShouldBeNull();
    }

    [Fact]
    public void AnAdoptedSandboxAnnouncesItsPidAgainWithoutRewritingAnUnchangedRecord()
    {
        var sandbox = NewSandbox(SandboxStatus.Running, pid: 41);

        sandbox.Start(41, out var changed).ShouldBeTrue();

        changed.ShouldBeNull();
        sandbox.State.ShouldBe(SandboxState.Running);
    }

    [Fact]
    public void AStopBeforeTheStartKeepsTheStopAndStillAnnouncesThePid()
    {
        var sandbox = NewSandbox();
        sandbox.Stop().ShouldBeTrue();
        sandbox.Stop().ShouldBeFalse("asked once");
        sandbox.State.ShouldBe(SandboxState.Stopping);
        sandbox.HasEnded.ShouldBeFalse();
        sandbox.Record.Status.ShouldBe(SandboxStatus.Created, "no pid yet: the record still says created");

        sandbox.Start(41, out var record).ShouldBeTrue();

        sandbox.State.ShouldBe(SandboxState.Stopping);
        record.ShouldNotBeNull().Status.ShouldBe(SandboxStatus.Running);
        sandbox.Exited(Exit(sandbox.Id), _ => { }).ShouldBeTrue();
        sandbox.Stop().ShouldBeFalse("an ended sandbox has nothing to stop");
        sandbox.Start(42, out _).ShouldBeFalse("nothing starts after the end");
    }

    private static Sandbox NewSandbox(SandboxStatus status = SandboxStatus.Created, int? pid = null)
    {
        var id = "lifecycle-" + Guid.NewGuid().ToString("N")[..8];
        var record = new SandboxRecord
        {
            Id = id,
            Runtime = "runc",
            Rootfs = "/nonexistent",
            Command = ["true"],
            CreatedAt = DateTimeOffset.UnixEpoch,
            Status = status,
            Pid = pid,
        };
        return new Sandbox(record, new ShimDirectory(Path.Combine("/nonexistent", id)));
    }

    private static ExitRecord Exit(string id) => new()
    {
        Id = id,
        Runtime = "runc",
        Command = ["true"],
        ExitCode = 0,
        StartedAt = DateTimeOffset.UnixEpoch,
        ExitedAt = DateTimeOffset.UnixEpoch.AddSeconds(1),
        DurationMs = 1000,
    };
}
