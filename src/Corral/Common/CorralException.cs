namespace Corral.Common;

/// <summary>An error a person can act on; <see cref="ExitCode"/> is what the CLI exits with.</summary>
public class CorralException(string message, int exitCode = CorralExitCodes.CorralError, Exception? inner = null)
    : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;

    /// <summary>The request itself is wrong (found once the image's root filesystem was mounted), not the host.</summary>
    public bool BadInput { get; init; }
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
