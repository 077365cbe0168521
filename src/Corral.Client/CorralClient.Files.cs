using System.Formats.Tar;
using System.IO.Pipelines;
using Corral.Protocol.V1;
using Google.Protobuf;

namespace Corral.Client;

/// <summary>Files into and out of a sandbox's root (running, or ended and not yet removed), as tar streams.</summary>
public sealed partial class CorralClient
{
    private const int ChunkBytes = 1 << 20;

    /// <summary>
    /// Sends an uncompressed tar to <paramref name="containerPath"/>: an existing directory gets the
    /// archive's entries; a missing path takes the name of the archive's single top-level entry.
    /// Entries belong to the sandbox's user; modes and times are kept.
    /// </summary>
    public async Task<CopyInResponse> UploadAsync(string sandboxId, string containerPath, Stream tar, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tar);
        using var call = Raw.CopyIn(cancellationToken: cancellationToken);
        await call.RequestStream.WriteAsync(new CopyInRequest { Id = sandboxId, Path = containerPath }, cancellationToken).ConfigureAwait(false);
        var buffer = new byte[ChunkBytes];
        try
        {
            int read;
            while ((read = await tar.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false)) > 0)
            {
                await call.RequestStream.WriteAsync(new CopyInRequest { Data = ByteString.CopyFrom(buffer, 0, read) }, cancellationToken).ConfigureAwait(false);
            }

            await call.RequestStream.CompleteAsync().ConfigureAwait(false);
        }
        catch (InvalidOperationException)
        {
            // The daemon refused and ended the call while we still sent: its status says why (below).
        }

        return await call.ResponseAsync.ConfigureAwait(false);
    }

    /// <summary>Writes an uncompressed tar of <paramref name="containerPath"/> (a file or a tree) to <paramref name="tar"/>.</summary>
    public async Task DownloadAsync(string sandboxId, string containerPath, Stream tar, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tar);
        using var call = Raw.CopyOut(new CopyOutRequest { Id = sandboxId, Path = containerPath }, cancellationToken: cancellationToken);
        while (await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
        {
            await tar.WriteAsync(call.ResponseStream.Current.Data.Memory, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Creates or replaces the file <paramref name="containerPath"/> with <paramref name="content"/> (mode 0644 unless given).</summary>
    public async Task WriteFileAsync(string sandboxId, string containerPath, ReadOnlyMemory<byte> content, UnixFileMode mode = (UnixFileMode)0b110_100_100, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(containerPath);
        var name = containerPath.TrimEnd('/');
        name = name[(name.LastIndexOf('/') + 1)..];
        if (name.Length == 0)
        {
            throw new ArgumentException($"'{containerPath}' names no file", nameof(containerPath));
        }

        using var archive = new MemoryStream();
        using (var writer = new TarWriter(archive, TarEntryFormat.Pax, leaveOpen: true))
        {
            using var data = new MemoryStream(content.ToArray(), writable: false);
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name) { Mode = mode, ModificationTime = DateTimeOffset.UtcNow, DataStream = data });
        }

        archive.Position = 0;
        await UploadAsync(sandboxId, containerPath, archive, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The content of the regular file <paramref name="containerPath"/> (at most <paramref name="maxBytes"/>).</summary>
    public async Task<byte[]> ReadFileAsync(string sandboxId, string containerPath, long maxBytes = 256L << 20, CancellationToken cancellationToken = default)
    {
        var pipe = new Pipe();
        var download = Task.Run(async () =>
        {
            await using var sink = pipe.Writer.AsStream();
            try
            {
                await DownloadAsync(sandboxId, containerPath, sink, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                await pipe.Writer.CompleteAsync().ConfigureAwait(false);
            }
        }, cancellationToken);
        byte[]? content = null;
        try
        {
            content = await ReadSingleFileAsync(pipe.Reader.AsStream(), sandboxId, containerPath, maxBytes, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidDataException or EndOfStreamException or FormatException)
        {
            // The daemon's refusal (a missing path, a bad one) is the error to tell, not the short archive it left.
            await Task.WhenAny(download, Task.Delay(TimeSpan.FromSeconds(5), cancellationToken)).ConfigureAwait(false);
            if (download.IsFaulted)
            {
                await download.ConfigureAwait(false);
            }

            throw;
        }

        await download.ConfigureAwait(false);
        return content ?? throw new InvalidDataException($"'{containerPath}' is not a regular file in sandbox {sandboxId}");
    }

    private static async Task<byte[]?> ReadSingleFileAsync(Stream stream, string sandboxId, string containerPath, long maxBytes, CancellationToken cancellationToken)
    {
        byte[]? content = null;
        await using (var source = stream)
        {
            using var reader = new TarReader(source);
            while (await reader.GetNextEntryAsync(copyData: false, cancellationToken).ConfigureAwait(false) is { } entry)
            {
                if (content is not null || entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile))
                {
                    throw new InvalidDataException($"'{containerPath}' is not a regular file in sandbox {sandboxId}");
                }

                if (entry.Length > maxBytes)
                {
                    throw new InvalidDataException($"'{containerPath}' has {entry.Length} bytes, more than the {maxBytes} asked for");
                }

                content = new byte[entry.Length];
                if (entry.DataStream is { } data)
                {
                    await data.ReadExactlyAsync(content, cancellationToken).ConfigureAwait(false);
                }
            }

            // The rest of the stream (tar's padding) is read so the download ends cleanly.
            await source.CopyToAsync(Stream.Null, cancellationToken).ConfigureAwait(false);
        }

        return content;
    }
}
