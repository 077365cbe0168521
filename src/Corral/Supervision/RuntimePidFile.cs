using System.Globalization;

namespace Corral.Supervision;

/// <summary>The pid file a runtime writes (`--pid-file`, runsc's `--internal-pid-file`).</summary>
internal static class RuntimePidFile
{
    /// <summary>The pid it holds; null while it is missing, unreadable or not (yet) a positive number.</summary>
    public static int? TryRead(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 0 ? pid : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
