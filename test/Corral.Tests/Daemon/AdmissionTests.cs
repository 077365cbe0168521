using Corral.Common;
using Corral.Daemon.Admission;
using Shouldly;
using Xunit;

namespace Corral.Tests.Daemon;

public sealed class AdmissionTests
{
    private static readonly HostCapacity FourCpus8Gi = new(4, 8L << 30);

    [Fact]
    public void MemTotalIsReadInBytes()
    {
        var meminfo = "MemTotal:       16314444 kB\nMemFree:         1234 kB\nMemAvailable:   99 kB\n";

        HostCapacity.ParseMemTotal(meminfo).ShouldBe(16314444L * 1024);
    }

    [Fact]
    public void AMissingOrOddMemTotalIsAnError()
    {
        Should.Throw<CorralException>(() => HostCapacity.ParseMemTotal("MemFree: 1 kB\n")).Message.ShouldContain("--capacity-memory");
        Should.Throw<CorralException>(() => HostCapacity.ParseMemTotal("MemTotal: lots\n")).Message.ShouldContain("MemTotal");
    }

    [Fact]
    public void CapacityComesFromTheHostLessTheReserveUnlessGiven()
    {
        const string meminfo = "MemTotal: 1048576 kB\n";

        var detected = HostCapacity.Detect(new AdmissionOptions { MemoryReserveBytes = 256L << 20 }, () => meminfo);
        var given = HostCapacity.Detect(new AdmissionOptions { CapacityCpus = 1.5, CapacityMemoryBytes = 64L << 20, MemoryReserveBytes = 256L << 20 }, () => throw new InvalidOperationException("not read"));

        detected.ShouldBe(new HostCapacity(Environment.ProcessorCount, 768L << 20));
        given.ShouldBe(new HostCapacity(1.5, 64L << 20));
    }

    [Fact]
    public void WhatFitsNextToTheReservationsIsAdmitted()
    {
        var reserved = new Reservations(2, 3, 6L << 30);

        SandboxAdmission.Check(FourCpus8Gi, reserved, 1, 2L << 30).ShouldBeNull();
        SandboxAdmission.Check(FourCpus8Gi, reserved, 0, 0).ShouldBeNull();
        SandboxAdmission.Check(new HostCapacity(0.3, 1L << 30), new Reservations(2, 0.1 + 0.1, 0), 0.1, 0).ShouldBeNull();
    }

    [Fact]
    public void TooMuchCpuIsRefusedWithWhatIsFreeAndReserved()
    {
        var refusal = SandboxAdmission.Check(FourCpus8Gi, new Reservations(3, 3.5, 1L << 30), 1, 0);

        refusal.ShouldBe("not enough capacity for 1 cpus (free: 0.5 of 4); 3 running sandboxes reserve 3.5 cpus and 1Gi: wait until one ends, or ask for less");
    }

    [Fact]
    public void TooMuchMemoryIsRefusedAndMoreThanTheWholeCapacitySaysSo()
    {
        var refusal = SandboxAdmission.Check(FourCpus8Gi, new Reservations(0, 0, 0), 1, 9L << 30);

        refusal.ShouldNotBeNull();
        refusal.ShouldContain("9Gi memory (free: 8Gi of 8Gi)");
        refusal.ShouldContain("more than the daemon's whole capacity");
        refusal.ShouldNotContain("cpus (free");
    }
}
