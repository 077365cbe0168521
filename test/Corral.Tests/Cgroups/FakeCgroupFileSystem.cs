using Corral.Cgroups;

namespace Corral.Tests.Cgroups;

/// <summary>An in-memory cgroup tree: files, directories, a log of writes and rmdirs, and injectable failures.</summary>
internal sealed class FakeCgroupFileSystem : ICgroupFileSystem
{
    private readonly Dictionary<string, string> _files = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Exception> _writeFailures = new(StringComparer.Ordinal);

    /// <summary>Interface files the "kernel" puts into each new directory, by directory path.</summary>
    public Func<string, IEnumerable<KeyValuePair<string, string>>>? Template { get; set; }

    public List<(string Path, string Contents)> Writes { get; } = [];

    public List<string> Created { get; } = [];

    public List<string> Deleted { get; } = [];

    public string this[string path]
    {
        get => _files[path];
        set
        {
            AddDirectory(Path.GetDirectoryName(path)!);
            _files[path] = value;
        }
    }

    public void AddDirectory(string path)
    {
        for (var p = path; !string.IsNullOrEmpty(p) && p != "/"; p = Path.GetDirectoryName(p))
        {
            _dirs.Add(p);
        }
    }

    public void FailWrite(string path, string message = "Invalid argument") => _writeFailures[path] = new IOException($"write to {path} failed: {message}");

    public IEnumerable<string> WritesTo(string path) => Writes.Where(w => w.Path == path).Select(w => w.Contents);

    public bool FileExists(string path) => _files.ContainsKey(path);

    public bool DirectoryExists(string path) => _dirs.Contains(path);

    public string ReadAllText(string path) =>
        _files.TryGetValue(path, out var text) ? text : throw new FileNotFoundException($"no such file {path}");

    public void WriteAllText(string path, string contents)
    {
        if (_writeFailures.TryGetValue(path, out var failure))
        {
            throw failure;
        }

        if (!_files.ContainsKey(path))
        {
            throw new IOException($"write to {path} failed: no such file (cgroup files cannot be created)");
        }

        Writes.Add((path, contents));
        _files[path] = path.EndsWith("/cgroup.subtree_control", StringComparison.Ordinal) ? ApplySubtreeControl(_files[path], contents) : contents;
    }

    /// <summary>Like the kernel: "+memory -cpu" edits the enabled set, which reads back as "memory pids".</summary>
    private static string ApplySubtreeControl(string current, string change)
    {
        var enabled = current.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        foreach (var token in change.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            enabled.Remove(token[1..]);
            if (token[0] == '+')
            {
                enabled.Add(token[1..]);
            }
        }

        return string.Join(' ', enabled);
    }

    public void CreateDirectory(string path)
    {
        if (_dirs.Contains(path))
        {
            return;
        }

        CreateDirectory(Path.GetDirectoryName(path)!);
        _dirs.Add(path);
        Created.Add(path);
        foreach (var (name, contents) in Template?.Invoke(path) ?? [])
        {
            _files[Path.Combine(path, name)] = contents;
        }
    }

    public void DeleteDirectory(string path)
    {
        if (!_dirs.Contains(path))
        {
            throw new DirectoryNotFoundException(path);
        }

        if (EnumerateDirectories(path).Any())
        {
            throw new IOException($"rmdir {path}: Device or resource busy");
        }

        _dirs.Remove(path);
        foreach (var file in _files.Keys.Where(f => Path.GetDirectoryName(f) == path).ToList())
        {
            _files.Remove(file);
        }

        Deleted.Add(path);
    }

    /// <summary>Directories someone else (the runtime) removes just as they are listed: the listing then fails as the kernel's would.</summary>
    public HashSet<string> RemovedWhileListed { get; } = new(StringComparer.Ordinal);

    public IEnumerable<string> EnumerateDirectories(string path)
    {
        if (RemovedWhileListed.Remove(path))
        {
            _dirs.Remove(path);
            throw new DirectoryNotFoundException($"Could not find a part of the path '{path}'.");
        }

        return _dirs.Where(d => Path.GetDirectoryName(d) == path).Order(StringComparer.Ordinal).ToList();
    }
}

/// <summary>Records kills and removes the pid from every fake cgroup.procs, as the kernel would once it died.</summary>
internal sealed class FakeSignaller(FakeCgroupFileSystem fs, IEnumerable<string> procsFiles) : IProcessSignaller
{
    public List<int> Killed { get; } = [];

    public void Kill(int pid)
    {
        Killed.Add(pid);
        foreach (var file in procsFiles.Where(fs.FileExists))
        {
            var left = fs.ReadAllText(file).Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(p => p != pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
            fs[file] = string.Join('\n', left);
        }
    }

    public void Pause(TimeSpan delay)
    {
    }
}
