using Xunit;

namespace Corral.IntegrationTests.Infrastructure;

/// <summary>
/// The runtimes the runtime-parameterised end-to-end tests run on: each is a row of the same test
/// method, so it carries the same traits (and lanes) as the others.
/// </summary>
public static class TestRuntimes
{
    private static readonly string[] Every = ["runc", "gvisor", "crun"];

    /// <summary>The runtimes with a host process per container process (not gVisor's sandbox): runc and crun.</summary>
    public static TheoryData<string> Native => new("runc", "crun");

    /// <summary>The runtime of the <paramref name="i"/>th of many containers started at once: every runtime in turn.</summary>
    public static string Rotation(int i) => Every[i % Every.Length];

    /// <summary>
    /// Every runtime, or those named in $CORRAL_TEST_RUNTIMES (comma-separated, e.g. "crun": run one
    /// runtime's rows while developing; the theories are not enumerated at discovery, so a name filter
    /// cannot pick them).
    /// </summary>
    public static TheoryData<string> All
    {
        get
        {
            var only = Environment.GetEnvironmentVariable("CORRAL_TEST_RUNTIMES")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var data = new TheoryData<string>();
            foreach (var runtime in only is { Length: > 0 } ? only : Every)
            {
                data.Add(Every.Contains(runtime) ? runtime : throw new InvalidOperationException($"CORRAL_TEST_RUNTIMES names an unknown runtime '{runtime}'"));
            }

            return data;
        }
    }

    /// <summary>The binary behind a runtime name as `--runtime` takes it.</summary>
    public static string Binary(string runtime) => runtime == "gvisor" ? "runsc" : runtime;

    /// <summary>The runtime's state root under the default state dir.</summary>
    public static string Root(string runtime) => Path.Combine(TestHost.StateDir, Binary(runtime));

    /// <summary>runc and crun run the workload as host processes in the cgroup; gVisor inside its sentry.</summary>
    public static bool HostProcesses(string runtime) => runtime is "runc" or "crun";

    public static Protocol.V1.Runtime Proto(string runtime) => runtime switch
    {
        "runc" => Protocol.V1.Runtime.Runc,
        "crun" => Protocol.V1.Runtime.Crun,
        _ => Protocol.V1.Runtime.Gvisor,
    };
}
