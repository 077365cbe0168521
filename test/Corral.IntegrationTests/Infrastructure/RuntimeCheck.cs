namespace Corral.IntegrationTests.Infrastructure;

/// <summary>Integration tests never skip: a missing runtime is a failure, in CI and out of it.</summary>
public static class RuntimeCheck
{
    public static void Require(string binary)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? string.Empty;
        if (!path.Split(':').Any(dir => File.Exists(Path.Combine(dir, binary))))
        {
            throw new InvalidOperationException($"{binary} is not installed: integration tests need it (./test.sh installs it)");
        }
    }
}
