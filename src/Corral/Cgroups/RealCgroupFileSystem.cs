using System.Text;

namespace Corral.Cgroups;

/// <summary>The only class that touches the cgroup filesystem directly.</summary>
public sealed class RealCgroupFileSystem : ICgroupFileSystem
{
    public static RealCgroupFileSystem Instance { get; } = new();

    public bool FileExists(string path) => File.Exists(path);

    public bool DirectoryExists(string path) => Directory.Exists(path);

    public string ReadAllText(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"read {path} failed: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// One write() of the whole value: the kernel parses each write on its own, so a value split
    /// across writes would be misread; the kernel's refusal comes back as an exception naming the path.
    /// </summary>
    public void WriteAllText(string path, string contents)
    {
        var bytes = Encoding.UTF8.GetBytes(contents);
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
            RandomAccess.Write(handle, bytes, 0);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"write '{contents.Trim()}' to {path} failed: {ex.Message}", ex);
        }
    }

    public void CreateDirectory(string path)
    {
        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"mkdir {path} failed: {ex.Message}", ex);
        }
    }

    public void DeleteDirectory(string path)
    {
        try
        {
            Directory.Delete(path, recursive: false);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"rmdir {path} failed: {ex.Message}", ex);
        }
    }

    public IEnumerable<string> EnumerateDirectories(string path) =>
        Directory.Exists(path) ? Directory.EnumerateDirectories(path) : [];
}
