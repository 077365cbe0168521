using System.Formats.Tar;
using System.IO.Compression;
using System.Text;

namespace Corral.Tests.Images;

/// <summary>Builds layer tarballs in memory, hostile ones included.</summary>
internal sealed class TarBuilder
{
    private readonly List<Func<TarEntry>> _entries = [];

    public TarBuilder Dir(string name, UnixFileMode mode = (UnixFileMode)0b111_101_101)
    {
        _entries.Add(() => new PaxTarEntry(TarEntryType.Directory, name) { Mode = mode });
        return this;
    }

    public TarBuilder File(string name, string content, UnixFileMode mode = (UnixFileMode)0b110_100_100, int uid = 0, int gid = 0)
    {
        _entries.Add(() => new PaxTarEntry(TarEntryType.RegularFile, name)
        {
            Mode = mode,
            Uid = uid,
            Gid = gid,
            DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)),
            ModificationTime = new DateTimeOffset(2020, 1, 2, 3, 4, 5, TimeSpan.Zero),
        });
        return this;
    }

    public TarBuilder Symlink(string name, string target)
    {
        _entries.Add(() => new PaxTarEntry(TarEntryType.SymbolicLink, name) { LinkName = target });
        return this;
    }

    public TarBuilder HardLink(string name, string target)
    {
        _entries.Add(() => new PaxTarEntry(TarEntryType.HardLink, name) { LinkName = target });
        return this;
    }

    public TarBuilder Device(string name, TarEntryType type = TarEntryType.CharacterDevice)
    {
        _entries.Add(() => new PaxTarEntry(type, name) { DeviceMajor = 1, DeviceMinor = 3 });
        return this;
    }

    public TarBuilder Entry(TarEntry entry)
    {
        _entries.Add(() => entry);
        return this;
    }

    /// <summary>A gzip-compressed tar of one file of <paramref name="size"/> zero bytes, made without holding it in memory.</summary>
    public static byte[] GzipZeros(string name, long size)
    {
        using var buffer = new MemoryStream();
        using (var gzip = new GZipStream(buffer, CompressionLevel.SmallestSize, leaveOpen: true))
        using (var writer = new TarWriter(gzip, TarEntryFormat.Pax, leaveOpen: true))
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new ZeroStream(size) });
        }

        return buffer.ToArray();
    }

    public byte[] Tar()
    {
        using var buffer = new MemoryStream();
        using (var writer = new TarWriter(buffer, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var entry in _entries)
            {
                writer.WriteEntry(entry());
            }
        }

        return buffer.ToArray();
    }

    public byte[] Gzip() => Compress(Tar());

    public static byte[] Compress(byte[] data)
    {
        using var buffer = new MemoryStream();
        using (var gzip = new GZipStream(buffer, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(data);
        }

        return buffer.ToArray();
    }
}

/// <summary>Zeros, seekable, of a given length.</summary>
internal sealed class ZeroStream(long length) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => true;

    public override bool CanWrite => false;

    public override long Length => length;

    public override long Position { get; set; }

    public override int Read(byte[] buffer, int offset, int count)
    {
        var n = (int)Math.Min(count, length - Position);
        Array.Clear(buffer, offset, n);
        Position += n;
        return n;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => Position = origin switch
    {
        SeekOrigin.Begin => offset,
        SeekOrigin.Current => Position + offset,
        _ => length + offset,
    };

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>A temporary directory, deleted with its content.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = Directory.CreateTempSubdirectory("corral-test-").FullName;
    }

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        if (Directory.Exists(Path))
        {
            Directory.Delete(Path, recursive: true);
        }
    }
}
