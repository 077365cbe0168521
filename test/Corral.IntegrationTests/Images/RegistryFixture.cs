using Corral.IntegrationTests.Infrastructure;
using Xunit;

namespace Corral.IntegrationTests.Images;

/// <summary>A local registry holding test/debian:1 (the default rootfs) and test/hostile:1; everything removed afterwards.</summary>
public sealed class RegistryFixture : IAsyncLifetime
{
    private LocalRegistry? _registry;

    public LocalRegistry Registry => _registry ?? throw new InvalidOperationException("not started");

    public string WorkDir { get; } = Directory.CreateTempSubdirectory("corral-images-e2e-").FullName;

    public string Layouts => Path.Combine(WorkDir, "layouts");

    public string DebianRef => $"{Registry.Host}/test/debian:1";

    public string HostileRef => $"{Registry.Host}/test/hostile:1";

    /// <summary>A data dir the run tests share (the image pulled once).</summary>
    public string SharedDataDir => Path.Combine(WorkDir, "shared-data");

    public string NewDataDir() => Path.Combine(WorkDir, "data-" + Guid.NewGuid().ToString("N")[..8]);

    public async ValueTask InitializeAsync()
    {
        try
        {
            Directory.CreateDirectory(Layouts);
            await TestImages.BuildAsync(Layouts);
            _registry = await LocalRegistry.StartAsync();
            await Registry.PushAsync(Path.Combine(Layouts, "debian"), "1", "test/debian:1");
            await Registry.PushAsync(Path.Combine(Layouts, "hostile"), "1", "test/hostile:1");
        }
        catch
        {
            await DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_registry is not null)
        {
            await _registry.DisposeAsync();
        }

        if (Directory.Exists(WorkDir))
        {
            // Layer directories hold files owned by image uids; root deletes them all.
            Directory.Delete(WorkDir, recursive: true);
        }
    }
}

/// <summary>
/// The image tests run alone: their tar, gzip and unpack I/O would otherwise share the 2-core
/// machine with the OOM stress tests, whose timing it disturbs.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ImageTestsCollection
{
    public const string Name = "images";
}
