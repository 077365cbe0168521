using Corral.Shim;
using Shouldly;
using Xunit;

namespace Corral.Tests.Shim;

/// <summary>The shared inotify watcher against real directories.</summary>
public sealed class DirectoryWatcherTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("corral-watch-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    public async Task EverySubscriberOfOneDirectoryIsCalledAndOneLeavingKeepsTheOthers()
    {
        using var watcher = new DirectoryWatcher();
        var first = new SemaphoreSlim(0);
        var second = new SemaphoreSlim(0);
        var one = watcher.Watch(_dir.FullName, () => first.Release());
        using var two = watcher.Watch(_dir.FullName, () => second.Release());

        await File.WriteAllTextAsync(Path.Combine(_dir.FullName, "a"), "x", TestContext.Current.CancellationToken);
        (await first.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken)).ShouldBeTrue("the first subscriber was not called");
        (await second.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken)).ShouldBeTrue("the second subscriber was not called");

        // The first leaves; the directory's one inotify watch stays for the second.
        one.Dispose();
        while (first.CurrentCount > 0 || second.CurrentCount > 0)
        {
            first.Wait(0, TestContext.Current.CancellationToken);
            second.Wait(0, TestContext.Current.CancellationToken);
        }

        await File.WriteAllTextAsync(Path.Combine(_dir.FullName, "b"), "y", TestContext.Current.CancellationToken);
        (await second.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken)).ShouldBeTrue("the second subscriber lost its watch when the first left");
        await Task.Delay(100, TestContext.Current.CancellationToken);
        first.CurrentCount.ShouldBe(0, "a subscriber that left is not called");
    }

    [Fact]
    public void AMissingDirectoryIsRefusedOrNullOnTheSharedWatcher()
    {
        using var watcher = new DirectoryWatcher();
        var missing = Path.Combine(_dir.FullName, "gone");

        Should.Throw<IOException>(() => watcher.Watch(missing, () => { }));
        DirectoryWatcher.TryWatchShared(missing, () => { }).ShouldBeNull();
        using var shared = DirectoryWatcher.TryWatchShared(_dir.FullName, () => { });
        shared.ShouldNotBeNull();
    }
}
