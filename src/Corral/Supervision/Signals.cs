namespace Corral.Supervision;

public static class Signals
{
    private static readonly string[] Names =
    [
        "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
        "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];

    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    /// <summary>The signal an exit code reports by the 128+S convention, or null.</summary>
    public static string? FromExitCode(int exitCode) =>
        exitCode is > 128 and < 128 + 32 ? Names[exitCode - 128] : null;

    public static string NameOf(int signal) => signal is > 0 and < 32 ? Names[signal] : $"SIG{signal}";

    /// <summary>Parses "TERM", "SIGTERM", "sigkill" or "15".</summary>
    public static bool TryParse(string? text, out int signal)
    {
        signal = 0;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        if (int.TryParse(text, out signal))
        {
            return signal is > 0 and < 65;
        }

        var name = text.ToUpperInvariant();
        name = name.StartsWith("SIG", StringComparison.Ordinal) ? name : "SIG" + name;
        signal = Array.IndexOf(Names, name);
        return signal > 0;
    }
}
