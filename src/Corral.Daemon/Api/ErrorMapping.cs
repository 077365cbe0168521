using Corral.Common;
using Grpc.Core;

namespace Corral.Daemon.Api;

/// <summary>The one place an error's kind becomes a gRPC status.</summary>
public static class ErrorMapping
{
    public static StatusCode ToStatusCode(ErrorKind kind) => kind switch
    {
        ErrorKind.InvalidArgument or ErrorKind.Unspecified => StatusCode.InvalidArgument,
        ErrorKind.NotFound => StatusCode.NotFound,
        ErrorKind.AlreadyExists => StatusCode.AlreadyExists,
        ErrorKind.FailedPrecondition => StatusCode.FailedPrecondition,
        ErrorKind.ResourceExhausted => StatusCode.ResourceExhausted,
        ErrorKind.Unavailable => StatusCode.Unavailable,
        ErrorKind.HostFault or ErrorKind.RuntimeFailure => StatusCode.Internal,
        _ => StatusCode.Unknown,
    };
}
