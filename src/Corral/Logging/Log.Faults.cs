using Microsoft.Extensions.Logging;

namespace Corral.Logging;

/// <summary>Faults the supervisor survives or reports (event ids 2080-2089).</summary>
internal static partial class Log
{
    [LoggerMessage(2080, LogLevel.Error, "runtime failed id={Id} runtime={Runtime} runtime_exit_code={ExitCode} error={Error}")]
    public static partial void RuntimeFailed(ILogger logger, string id, string runtime, int exitCode, string error);

    [LoggerMessage(2081, LogLevel.Warning, "container output dropped id={Id} output_dropped_bytes={DroppedBytes} error={Error}")]
    public static partial void OutputDropped(ILogger logger, string id, long droppedBytes, string error);
}
