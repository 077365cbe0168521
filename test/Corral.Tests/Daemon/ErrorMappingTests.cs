using Corral.Common;
using Corral.Daemon.Api;
using Grpc.Core;
using Shouldly;
using Xunit;

namespace Corral.Tests.Daemon;

/// <summary>Each error kind becomes one gRPC status, in one place; host faults are never the caller's fault.</summary>
public sealed class ErrorMappingTests
{
    public static TheoryData<ErrorKind, StatusCode> Kinds => new()
    {
        { ErrorKind.Unspecified, StatusCode.InvalidArgument },
        { ErrorKind.InvalidArgument, StatusCode.InvalidArgument },
        { ErrorKind.NotFound, StatusCode.NotFound },
        { ErrorKind.AlreadyExists, StatusCode.AlreadyExists },
        { ErrorKind.FailedPrecondition, StatusCode.FailedPrecondition },
        { ErrorKind.ResourceExhausted, StatusCode.ResourceExhausted },
        { ErrorKind.Unavailable, StatusCode.Unavailable },
        { ErrorKind.HostFault, StatusCode.Internal },
        { ErrorKind.RuntimeFailure, StatusCode.Internal },
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Each_kind_maps_to_its_status(ErrorKind kind, StatusCode status) => ErrorMapping.ToStatusCode(kind).ShouldBe(status);

    [Fact]
    public void Every_kind_has_a_mapping() =>
        Enum.GetValues<ErrorKind>().ShouldAllBe(kind => ErrorMapping.ToStatusCode(kind) != StatusCode.Unknown);

    [Fact]
    public void The_factories_give_their_kinds_and_the_cli_code_125()
    {
        CorralException.Invalid("x").Kind.ShouldBe(ErrorKind.InvalidArgument);
        CorralException.NotFound("x").Kind.ShouldBe(ErrorKind.NotFound);
        CorralException.Conflict("x").Kind.ShouldBe(ErrorKind.AlreadyExists);
        CorralException.Precondition("x").Kind.ShouldBe(ErrorKind.FailedPrecondition);
        CorralException.Host("x").Kind.ShouldBe(ErrorKind.HostFault);
        CorralException.Runtime("x").Kind.ShouldBe(ErrorKind.RuntimeFailure);
        CorralException.Host("x").ExitCode.ShouldBe(125);
    }

    [Fact]
    public void A_missing_runtime_binary_is_a_host_fault_not_bad_input()
    {
        var supervisor = new Corral.Supervision.ContainerSupervisor(
            new Corral.Supervision.SupervisorOptions { StateDir = Path.Combine(Path.GetTempPath(), "corral-kind-" + Guid.NewGuid().ToString("N")[..8]) },
            new Corral.Runtimes.RuntimeOptions { RuncPath = "/nonexistent/runc" },
            cgroupDriver: null,
            oomWatchers: null,
            TimeProvider.System);
        var ex = Should.Throw<CorralException>(() => supervisor.Validate(new Corral.Supervision.ContainerRequest
        {
            Runtime = Corral.Runtimes.RuntimeKind.Runc,
            Rootfs = "/tmp",
            Command = ["true"],
        }));

        ex.Kind.ShouldBe(ErrorKind.HostFault);
        ErrorMapping.ToStatusCode(ex.Kind).ShouldBe(StatusCode.Internal);
        ex.Message.ShouldContain("/nonexistent/runc");
    }
}
