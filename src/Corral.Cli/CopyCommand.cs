using System.CommandLine;
using System.Formats.Tar;
using System.Globalization;
using System.IO.Pipelines;
using Corral.Common;
using Corral.Files;

namespace Corral.Cli;

/// <summary>`corral cp`: files and trees between this host and a daemon sandbox, as tar streams.</summary>
internal static class CopyCommand
{
    public static Command Create()
    {
        var source = new Argument<string>("SRC") { Description = "HOST_PATH, ID:PATH, or - (a tar on stdin)" };
        var destination = new Argument<string>("DEST") { Description = "ID:PATH, HOST_PATH, or - (a tar to stdout)" };
        var command = new Command("cp", "Copy files and directory trees into or out of a daemon sandbox (running, or ended and not yet removed), modes and times kept") { source, destination };
        command.SetAction(async (parse, ct) =>
        {
            var from = parse.GetValue(source)!;
            var to = parse.GetValue(destination)!;
            var fromSandbox = SandboxPath(from);
            var toSandbox = SandboxPath(to);
            if ((fromSandbox is null) == (toSandbox is null))
            {
                throw CorralException.Invalid($"corral cp needs exactly one side in a sandbox (ID:PATH): got '{from}' and '{to}'");
            }

            using var client = DaemonCommands.Connect(parse);
            if (toSandbox is { } target)
            {
                var response = await UploadAsync(client, from, target.Id, target.Path, ct).ConfigureAwait(false);
                await Console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"corral: copied {response.Bytes} bytes ({response.Entries} entries) to {target.Id}:{target.Path}")).ConfigureAwait(false);
            }
            else
            {
                await DownloadAsync(client, fromSandbox!.Value.Id, fromSandbox.Value.Path, to, ct).ConfigureAwait(false);
            }

            return 0;
        });
        return command;
    }

    /// <summary>ID:PATH when the text names a sandbox path (an id, a colon, an absolute path); null for a host path.</summary>
    private static (string Id, string Path)? SandboxPath(string text)
    {
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || text.StartsWith('/') || text.StartsWith('.'))
        {
            return null;
        }

        var id = ContainerId.Validate(text[..colon]);
        var path = text[(colon + 1)..];
        if (!path.StartsWith('/'))
        {
            throw CorralException.Invalid($"invalid '{text}': the path in the sandbox must be absolute (ID:/path)");
        }

        return (id, path);
    }

    private static async Task<Protocol.V1.CopyInResponse> UploadAsync(Client.CorralClient client, string hostPath, string id, string path, CancellationToken ct)
    {
        if (hostPath == "-")
        {
            await using var stdin = Console.OpenStandardInput();
            return await client.UploadAsync(id, path, stdin, ct).ConfigureAwait(false);
        }

        var full = Path.GetFullPath(hostPath);
        var info = new FileInfo(full);
        var isDirectory = Directory.Exists(full) && info.LinkTarget is null;
        if (!isDirectory && !info.Exists && info.LinkTarget is null)
        {
            throw CorralException.Invalid($"no such file or directory: {hostPath}");
        }

        // The archive is made as it is sent: nothing of it is staged on disk.
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 4 << 20, resumeWriterThreshold: 2 << 20));
        var pack = Task.Run(
            () =>
            {
                using var sink = pipe.Writer.AsStream();
                try
                {
                    if (isDirectory)
                    {
                        TarFile.CreateFromDirectory(full, sink, includeBaseDirectory: true);
                    }
                    else
                    {
                        using var writer = new TarWriter(sink, TarEntryFormat.Pax, leaveOpen: true);
                        writer.WriteEntry(full, Path.GetFileName(full));
                    }
                }
                finally
                {
                    pipe.Writer.Complete();
                }
            },
            ct);
        Protocol.V1.CopyInResponse response;
        await using (var archive = pipe.Reader.AsStream())
        {
            response = await client.UploadAsync(id, path, archive, ct).ConfigureAwait(false);
        }

        await pack.ConfigureAwait(false);
        return response;
    }

    /// <summary>
    /// Unpacked here with the same hardened unpacker the daemon uses: an existing directory gets the
    /// entries, a missing path takes the top-level entry's place; nothing lands outside it.
    /// </summary>
    private static async Task DownloadAsync(Client.CorralClient client, string id, string path, string hostPath, CancellationToken ct)
    {
        if (hostPath == "-")
        {
            await using var stdout = Console.OpenStandardOutput();
            await client.DownloadAsync(id, path, stdout, ct).ConfigureAwait(false);
            return;
        }

        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(hostPath));
        var (root, inside) = Directory.Exists(full) ? (full, "/") : (Path.GetDirectoryName(full) ?? "/", "/" + Path.GetFileName(full));
        if (!Directory.Exists(root))
        {
            throw CorralException.Invalid($"cannot copy to {hostPath}: {root} is not a directory");
        }

        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 4 << 20, resumeWriterThreshold: 2 << 20));
        var owner = Environment.IsPrivilegedProcess ? new FileOwner(0, 0) : null;
        var unpack = Task.Run(
            () =>
            {
                using var source = pipe.Reader.AsStream();
                try
                {
                    return ContainerFiles.CopyIn(root, inside, source, owner, CopyLimits.Default, ct);
                }
                finally
                {
                    pipe.Reader.Complete();
                }
            },
            ct);
        try
        {
            await using var sink = pipe.Writer.AsStream();
            await client.DownloadAsync(id, path, sink, ct).ConfigureAwait(false);
        }
        catch (InvalidOperationException) when (unpack.IsCompleted)
        {
            // The unpacker refused and stopped reading: its error is the one to tell.
        }
        finally
        {
            await pipe.Writer.CompleteAsync().ConfigureAwait(false);
        }

        var result = await unpack.ConfigureAwait(false);
        await Console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"corral: copied {result.Bytes} bytes ({result.Entries} entries) to {hostPath}")).ConfigureAwait(false);
    }
}
