using Corral.Common;
using System.Text.Json;
using System.Text.Json.Serialization;
using Corral.Interop;
using Corral.Supervision;

namespace Corral.Shim;

/// <summary>What a daemon hands the shim of one sandbox: the run, and the settings of the daemon's supervisor.</summary>
public sealed record ShimSpec
{
    public required ContainerRequest Request { get; init; }

    /// <summary>Bundles and live-container claims (the supervisor's state directory).</summary>
    public required string SupervisorStateDir { get; init; }

    public string RuncPath { get; init; } = "runc";

    public string RunscPath { get; init; } = "runsc";

    public string CrunPath { get; init; } = "crun";

    public string RuncRoot { get; init; } = "/run/corral/runc";

    public string RunscRoot { get; init; } = "/run/corral/runsc";

    public string CrunRoot { get; init; } = "/run/corral/crun";

    public string RunscPlatform { get; init; } = "ptrace";

    /// <summary>SIGTERM to the shim stops the container: SIGTERM, then SIGKILL after this.</summary>
    public double CancelGraceSeconds { get; init; } = 10;

    /// <summary>The sandbox fails when its runtime has not started the workload by then (`corral serve --start-timeout`).</summary>
    public double StartTimeoutSeconds { get; init; } = 60;

    public long LogCapBytes { get; init; } = 8L << 20;

    public string LogLevel { get; init; } = "Information";

    /// <summary>"text" (key=value lines) or "json" (JSON lines), as the daemon logs.</summary>
    public string LogFormat { get; init; } = "text";
}

/// <summary>What the shim reports while the sandbox runs; replaced atomically on every change.</summary>
public sealed record ShimStatus
{
    public required int ShimPid { get; init; }

    /// <summary>The container's PID 1 on the host, once the runtime started it.</summary>
    public int? Pid { get; init; }

    public IReadOnlyList<OomEventRecord> OomEvents { get; init; } = [];

    /// <summary>A bridged sandbox's address and published ports, once its network is up.</summary>
    public Networking.NetworkAttachment? Network { get; init; }
}

/// <summary>Why a sandbox's run did not happen: bad input found late (<paramref name="BadInput"/>), the runtime failing to start it.</summary>
public sealed record ShimFailure(string Error, bool BadInput = false);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true, UseStringEnumConverter = true)]
[JsonSerializable(typeof(ShimSpec))]
[JsonSerializable(typeof(ShimStatus))]
[JsonSerializable(typeof(ShimFailure))]
internal sealed partial class ShimJsonContext : JsonSerializerContext;

/// <summary>
/// One sandbox's directory, shared by the daemon and the sandbox's shim process: the daemon writes
/// spec.json and starts the shim; the shim holds shim.lock (flock) while it lives, writes output.log,
/// status.json, and at the end exit.json or failed.json, each atomically. Every file outlives both
/// processes, so a restarted daemon finds each sandbox where it was.
/// </summary>
public sealed class ShimDirectory(string path)
{
    public string Path { get; } = path;

    public string Id => System.IO.Path.GetFileName(Path);

    public string SpecFile => Combine("spec.json");

    public string StatusFile => Combine("status.json");

    public string ExitFile => Combine("exit.json");

    public string FailureFile => Combine("failed.json");

    public string LogFile => Combine("output.log");

    public string LockFile => Combine("shim.lock");

    public string ShimLogFile => Combine("shim.log");

    public void WriteSpec(ShimSpec spec) => WriteAtomically(SpecFile, JsonSerializer.Serialize(spec, ShimJsonContext.Default.ShimSpec));

    public ShimSpec? ReadSpec() => Read(SpecFile, ShimJsonContext.Default.ShimSpec);

    public void WriteStatus(ShimStatus status) => WriteAtomically(StatusFile, JsonSerializer.Serialize(status, ShimJsonContext.Default.ShimStatus));

    public ShimStatus? ReadStatus() => Read(StatusFile, ShimJsonContext.Default.ShimStatus);

    public void WriteExit(ExitRecord exit) => WriteAtomically(ExitFile, JsonSerializer.Serialize(exit, SupervisionJsonContext.Default.ExitRecord));

    public ExitRecord? ReadExit() => Read(ExitFile, SupervisionJsonContext.Default.ExitRecord);

    public void WriteFailure(string error, bool badInput = false) =>
        WriteAtomically(FailureFile, JsonSerializer.Serialize(new ShimFailure(error, badInput), ShimJsonContext.Default.ShimFailure));

    public ShimFailure? ReadFailure() => Read(FailureFile, ShimJsonContext.Default.ShimFailure);

    /// <summary>True while a shim process holds the lock: the sandbox is still being supervised.</summary>
    public bool IsShimAlive()
    {
        var fd = LibC.open(LockFile, LibC.O_RDONLY | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            return false;
        }

        try
        {
            if (LibC.flock(fd, LibC.LOCK_EX | LibC.LOCK_NB) == 0)
            {
                _ = LibC.flock(fd, LibC.LOCK_UN);
                return false;
            }

            return LibC.LastError == LibC.EAGAIN;
        }
        finally
        {
            _ = LibC.close(fd);
        }
    }

    /// <summary>Signals the shim process <paramref name="shimPid"/>, only while a shim still holds the lock.</summary>
    public bool SignalShim(int shimPid, int signal) => IsShimAlive() && LibC.kill(shimPid, signal) == 0;

    /// <summary>Takes the shim lock for the life of this process; throws when another shim holds it.</summary>
    public IDisposable AcquireShimLock(TimeSpan wait)
    {
        var handle = File.OpenHandle(LockFile, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
        File.SetUnixFileMode(handle, PrivateFiles.FileMode);
        var deadline = Environment.TickCount64 + (long)wait.TotalMilliseconds;
        while (LibC.flock((int)handle.DangerousGetHandle(), LibC.LOCK_EX | LibC.LOCK_NB) != 0)
        {
            if (Environment.TickCount64 >= deadline)
            {
                handle.Dispose();
                throw new IOException($"another shim supervises the sandbox in {Path}");
            }

            Thread.Sleep(20);
        }

        return handle;
    }

    /// <summary>Space the shim sets aside at start, given up only to write its records on a full disk.</summary>
    public string ReserveFile => Combine("space.reserve");

    /// <summary>Sets aside <paramref name="bytes"/> (best effort: a disk already full gets none).</summary>
    public void ReserveSpace(int bytes = 256 * 1024)
    {
        try
        {
            using var reserve = new FileStream(ReserveFile, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
            reserve.Write(new byte[bytes]);
        }
        catch (IOException)
        {
            File.Delete(ReserveFile);
        }
    }

    internal static void WriteAtomically(string file, string json)
    {
        try
        {
            PrivateFiles.WriteAtomically(file, json);
        }
        catch (IOException) when (System.IO.Path.Combine(System.IO.Path.GetDirectoryName(file)!, "space.reserve") is var reserve && File.Exists(reserve))
        {
            // A full disk: give up the reserve for this record (status, exit, failure), then write it.
            File.Delete(reserve);
            PrivateFiles.WriteAtomically(file, json);
        }
    }

    private static T? Read<T>(string file, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
        where T : class
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(file), type);
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private string Combine(string name) => System.IO.Path.Combine(Path, name);
}
