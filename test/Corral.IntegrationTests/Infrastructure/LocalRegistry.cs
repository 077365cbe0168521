using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Corral.Images;

namespace Corral.IntegrationTests.Infrastructure;

/// <summary>Debian's docker-registry on 127.0.0.1 at a free port, its storage in a temp dir; stopped and deleted on dispose.</summary>
public sealed class LocalRegistry : IAsyncDisposable
{
    private Process? _process;

    private LocalRegistry(string dir, int port)
    {
        Dir = dir;
        Port = port;
    }

    public string Dir { get; }

    public int Port { get; }

    public string Host => $"127.0.0.1:{Port}";

    /// <param name="extraConfig">YAML appended to the config (an auth: section).</param>
    public static async Task<LocalRegistry> StartAsync(string? extraConfig = null)
    {
        RuntimeCheck.Require("docker-registry");
        var dir = Directory.CreateTempSubdirectory("corral-registry-").FullName;
        var port = FreePort();
        var registry = new LocalRegistry(dir, port);
        try
        {
            var config = Path.Combine(dir, "config.yml");
            await File.WriteAllTextAsync(config, $"""
                version: 0.1
                log:
                  level: error
                  accesslog:
                    disabled: true
                storage:
                  filesystem:
                    rootdirectory: {dir}/storage
                http:
                  addr: 127.0.0.1:{port}
                  secret: corral-test
                {extraConfig}
                """);
            var info = new ProcessStartInfo("docker-registry") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            info.ArgumentList.Add("serve");
            info.ArgumentList.Add(config);
            registry._process = Process.Start(info)!;
            registry._process.OutputDataReceived += (_, _) => { };
            registry._process.ErrorDataReceived += (_, _) => { };
            registry._process.BeginOutputReadLine();
            registry._process.BeginErrorReadLine();
            using var http = new HttpClient();
            var deadline = Stopwatch.StartNew();
            while (true)
            {
                try
                {
                    using var response = await http.GetAsync(new Uri($"http://127.0.0.1:{port}/v2/"));
                    if (response.StatusCode is HttpStatusCode.OK or HttpStatusCode.Unauthorized)
                    {
                        return registry;
                    }
                }
                catch (HttpRequestException) when (deadline.Elapsed < TimeSpan.FromSeconds(20) && !registry._process.HasExited)
                {
                }

                if (registry._process.HasExited || deadline.Elapsed > TimeSpan.FromSeconds(20))
                {
                    throw new InvalidOperationException($"docker-registry did not start on port {port}");
                }

                await Task.Delay(100);
            }
        }
        catch
        {
            await registry.DisposeAsync();
            throw;
        }
    }

    /// <summary>Pushes an OCI layout's image with skopeo.</summary>
    public async Task PushAsync(string layout, string tag, string repository, string? credentials = null)
    {
        RuntimeCheck.Require("skopeo");
        var args = new List<string> { "copy", "--quiet", "--dest-tls-verify=false" };
        if (credentials is not null)
        {
            args.Add("--dest-creds");
            args.Add(credentials);
        }

        args.Add($"oci:{layout}:{tag}");
        args.Add($"docker://{Host}/{repository}");
        var (code, output) = await Tool.RunAsync("skopeo", args);
        if (code != 0)
        {
            throw new InvalidOperationException($"skopeo copy failed ({code}): {output}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is { } process)
        {
            try
            {
                if (!process.HasExited)
                {
                    process.Kill(entireProcessTree: true);
                    await process.WaitForExitAsync();
                }
            }
            catch (InvalidOperationException)
            {
            }

            process.Dispose();
        }

        if (Directory.Exists(Dir))
        {
            Directory.Delete(Dir, recursive: true);
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>Runs a helper tool and returns its exit code and combined output.</summary>
public static class Tool
{
    public static async Task<(int Code, string Output)> RunAsync(string file, IEnumerable<string> args, TimeSpan? timeout = null)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} did not finish");
        }

        return (process.ExitCode, await stdout + await stderr);
    }

    public static async Task ShellAsync(string script)
    {
        var (code, output) = await RunAsync("/bin/sh", ["-c", script]);
        if (code != 0)
        {
            throw new InvalidOperationException($"'{script}' failed ({code}): {output}");
        }
    }
}

/// <summary>
/// A TCP forwarder to a registry that cuts the connection once, after <see cref="CutAfterBytes"/>
/// bytes of responses on one connection: an interrupted download.
/// </summary>
public sealed class CuttingProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly int _target;
    private readonly Task _accepting;
    private int _cuts;

    public CuttingProxy(int targetPort, long cutAfterBytes)
    {
        _target = targetPort;
        CutAfterBytes = cutAfterBytes;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public long CutAfterBytes { get; }

    public int Cuts => Volatile.Read(ref _cuts);

    public string Host => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = ForwardAsync(client);
        }
    }

    private async Task ForwardAsync(TcpClient client)
    {
        using (client)
        using (var server = new TcpClient())
        {
            await server.ConnectAsync(IPAddress.Loopback, _target);
            var up = client.GetStream().CopyToAsync(server.GetStream(), _stop.Token);
            var down = Task.Run(async () =>
            {
                var buffer = new byte[16384];
                long total = 0;
                var from = server.GetStream();
                var to = client.GetStream();
                int n;
                while ((n = await from.ReadAsync(buffer, _stop.Token)) > 0)
                {
                    total += n;
                    if (total > CutAfterBytes && Interlocked.CompareExchange(ref _cuts, 1, 0) == 0)
                    {
                        client.Client.LingerState = new LingerOption(true, 0);
                        client.Close();
                        return;
                    }

                    await to.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                }
            });
            try
            {
                await Task.WhenAny(up, down);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (OperationCanceledException)
        {
        }

        _stop.Dispose();
    }
}

/// <summary>The test images, as OCI layouts: the default rootfs as one gzip layer ("debian", tag 1), and a hostile one ("hostile", tag 1).</summary>
public static class TestImages
{
    public static async Task BuildAsync(string dir)
    {
        var rootfs = await TestHost.RootfsAsync();
        var layer = Path.Combine(dir, "debian.tar.gz");
        await Tool.ShellAsync($"tar -C '{rootfs}' --exclude='./dev/*' --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale --exclude=./var/cache/apt --exclude=./var/lib/apt/lists -cf - . | gzip -1 > '{layer}'");
        OciLayoutWriter.Write(Path.Combine(dir, "debian"), "1", [layer], new ContainerConfig
        {
            Cmd = ["python3", "-c", "import os; print('hello from the image cmd', os.getcwd(), os.environ.get('FROM_IMAGE'))"],
            Env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=yes"],
            WorkingDir = "/root",
        });

        var hostile = Path.Combine(dir, "hostile.tar");
        await using (var file = File.Create(hostile))
        await using (var writer = new System.Formats.Tar.TarWriter(file, System.Formats.Tar.TarEntryFormat.Pax))
        {
            await writer.WriteEntryAsync(new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.RegularFile, "ok.txt") { DataStream = new MemoryStream(Encoding.UTF8.GetBytes("fine")) });
            await writer.WriteEntryAsync(new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.SymbolicLink, "escape") { LinkName = "../../../../../../tmp" });
            await writer.WriteEntryAsync(new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.RegularFile, $"../../../../../../tmp/corral-hostile-{Environment.ProcessId}") { DataStream = new MemoryStream(Encoding.UTF8.GetBytes("escaped")) });
        }

        OciLayoutWriter.Write(Path.Combine(dir, "hostile"), "1", [hostile]);
    }
}
