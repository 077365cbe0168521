namespace Corral.Common;

/// <summary>
/// What kind of failure an error is: decided once where it is thrown, mapped once to a gRPC status
/// (<c>Corral.Daemon.Api.ErrorMapping</c>) and to the CLI's exit code (<see cref="CorralException.ExitCode"/>).
/// </summary>
public enum ErrorKind
{
    /// <summary>Not classified yet: treated as <see cref="InvalidArgument"/> (the historical default).</summary>
    Unspecified = 0,

    /// <summary>The request itself is wrong: a bad name, size, path, flag. Nothing was created.</summary>
    InvalidArgument,

    /// <summary>What the request names does not exist (a sandbox, an image, an exec).</summary>
    NotFound,

    /// <summary>The name is taken (a sandbox or container id in use).</summary>
    AlreadyExists,

    /// <summary>The object exists but is in the wrong state for this (remove a running sandbox).</summary>
    FailedPrecondition,

    /// <summary>Not enough of something: capacity, disk, pids.</summary>
    ResourceExhausted,

    /// <summary>Another party holds it (a daemon already serves this state dir) or it is shutting down.</summary>
    Unavailable,

    /// <summary>The host failed Corral: a missing binary, a cgroup that cannot be made, an I/O error.</summary>
    HostFault,

    /// <summary>The container runtime (runc, runsc) failed, not the workload.</summary>
    RuntimeFailure,
}

/// <summary>An error a person can act on; <see cref="ExitCode"/> is what the CLI exits with.</summary>
public class CorralException(string message, int exitCode = CorralExitCodes.CorralError, Exception? inner = null)
    : Exception(message, inner)
{
    public CorralException(ErrorKind kind, string message, int exitCode = CorralExitCodes.CorralError, Exception? inner = null)
        : this(message, exitCode, inner) => Kind = kind;

    public int ExitCode { get; } = exitCode;

    public ErrorKind Kind { get; init; }

    /// <summary>The request itself is wrong (found once the image's root filesystem was mounted), not the host.</summary>
    public bool BadInput
    {
        get => Kind is ErrorKind.InvalidArgument;
        init => Kind = value ? ErrorKind.InvalidArgument : (Kind is ErrorKind.InvalidArgument ? ErrorKind.Unspecified : Kind);
    }

    public static CorralException Invalid(string message, int exitCode = CorralExitCodes.CorralError) => new(ErrorKind.InvalidArgument, message, exitCode);

    public static CorralException NotFound(string message) => new(ErrorKind.NotFound, message);

    public static CorralException Conflict(string message) => new(ErrorKind.AlreadyExists, message);

    public static CorralException Precondition(string message) => new(ErrorKind.FailedPrecondition, message);

    public static CorralException Host(string message, Exception? inner = null) => new(ErrorKind.HostFault, message, CorralExitCodes.CorralError, inner);

    public static CorralException Runtime(string message, Exception? inner = null) => new(ErrorKind.RuntimeFailure, message, CorralExitCodes.CorralError, inner);
}

public static class CorralExitCodes
{
    /// <summary>Corral itself failed or was given bad input (docker run's convention).</summary>
    public const int CorralError = 125;

    /// <summary>The command could not be executed.</summary>
    public const int CannotExecute = 126;

    /// <summary>The command was not found.</summary>
    public const int CommandNotFound = 127;
}
