using System.Collections.Concurrent;
using System.Diagnostics;
using Corral.Common;

namespace Corral.Daemon.Sandboxes;

/// <summary>
/// Shim processes started ahead of need, so that a Create does not wait for one to start (about 10 ms of
/// exec and runtime start on the dev machine). Each waits on its stdin for the id of the sandbox it is to
/// supervise (`corral shim SANDBOXES_DIR`) and exits at end of input, so the ones never used end with the
/// daemon, however it ends. A taken shim is replaced in the background. With a size of 0 every shim is
/// started when its sandbox is created.
/// </summary>
public sealed class ShimPool(string shimPath, string sandboxesDir, int size) : IDisposable
{
    private readonly ConcurrentQueue<Process> _ready = new();
    private readonly Lock _gate = new();
    private int _starting;
    private volatile bool _disposed;

    /// <summary>Fills the pool in the background.</summary>
    public void Fill()
    {
        lock (_gate)
        {
            while (!_disposed && _starting + _ready.Count < size)
            {
                _starting++;
                _ = Task.Run(StartOne);
            }
        }
    }

    private void StartOne()
    {
        try
        {
            var shim = Start();
            _ready.Enqueue(shim);
            if (_disposed && _ready.TryDequeue(out var drop))
            {
                Drop(drop);
            }
        }
        catch (CorralException)
        {
            // Not startable now: a Create starts its own and says why.
        }
        finally
        {
            lock (_gate)
            {
                _starting--;
            }
        }
    }

    /// <summary>Hands a sandbox its shim: a ready one when there is one, else one started now. The pool refills after.</summary>
    public Process Assign(string id)
    {
        try
        {
            while (!_disposed && _ready.TryDequeue(out var ready))
            {
                if (TryTell(ready, id))
                {
                    return ready;
                }
            }

            var started = Start();
            return TryTell(started, id)
                ? started
                : throw CorralException.Host($"the sandbox shim '{shimPath}' exited as it started (run it by hand to see why)");
        }
        finally
        {
            Fill();
        }
    }

    /// <summary>Ends the shims never used: their input closes and they exit.</summary>
    public void Dispose()
    {
        _disposed = true;
        while (_ready.TryDequeue(out var shim))
        {
            Drop(shim);
        }
    }

    private static bool TryTell(Process shim, string id)
    {
        try
        {
            if (shim.HasExited)
            {
                shim.Dispose();
                return false;
            }

            shim.StandardInput.Write(id + "\n");
            shim.StandardInput.Close();
            return true;
        }
        catch (IOException)
        {
            // It died meanwhile (a broken pipe).
            shim.Dispose();
            return false;
        }
    }

    private static void Drop(Process shim)
    {
        try
        {
            shim.StandardInput.Close();
        }
        catch (IOException)
        {
            // Gone already.
        }

        shim.Dispose();
    }

    private Process Start()
    {
        var info = new ProcessStartInfo(shimPath)
        {
            UseShellExecute = false,

            // Its stdin carries the sandbox's id; once it has one it points its stdout and stderr at its
            // shim.log, so these two pipes only keep it off the daemon's.
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.ArgumentList.Add("shim");
        info.ArgumentList.Add(sandboxesDir);
        Process process;
        try
        {
            process = Process.Start(info) ?? throw CorralException.Host($"could not start the shim {shimPath}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw CorralException.Host($"cannot start the sandbox shim '{shimPath}': {ex.Message} (see corral serve --shim)");
        }

        process.StandardOutput.Close();
        process.StandardError.Close();
        return process;
    }
}
