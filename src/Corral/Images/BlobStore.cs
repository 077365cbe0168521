using Corral.Common;

namespace Corral.Images;

/// <summary>
/// Content-addressed blobs under &lt;images&gt;/blobs/sha256/&lt;hex&gt;. A blob is written to a temporary
/// file, its digest and size verified, then renamed into place: a blob that exists is complete.
/// </summary>
public sealed class BlobStore(string root)
{
    public string Root => root;

    public string PathOf(Digest digest) => Path.Combine(root, "sha256", digest.Hex);

    /// <summary>Where an interrupted download is kept to be continued.</summary>
    public string PartialPathOf(Digest digest) => PathOf(digest) + ".partial";

    /// <summary>Held while a blob downloads (kept: deleting a lock file others may hold would split the lock).</summary>
    public string LockPathOf(Digest digest) => Path.Combine(root, "locks", digest.Hex + ".lock");

    public bool Has(Digest digest) => File.Exists(PathOf(digest));

    public long? SizeOf(Digest digest) => File.Exists(PathOf(digest)) ? new FileInfo(PathOf(digest)).Length : null;

    public Stream Open(Digest digest)
    {
        try
        {
            return new FileStream(PathOf(digest), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
        }
        catch (FileNotFoundException)
        {
            throw new CorralException($"blob {digest} is not in the image store");
        }
    }

    public byte[] ReadAll(Digest digest) => Has(digest) ? File.ReadAllBytes(PathOf(digest)) : throw new CorralException($"blob {digest} is not in the image store");

    /// <summary>Copies <paramref name="content"/> in, verifying digest and (when known) size; a no-op when the blob is there.</summary>
    public async Task WriteAsync(Stream content, Digest expected, long? expectedSize, CancellationToken cancellationToken = default)
    {
        if (Has(expected))
        {
            CheckStoredSize(expected, expectedSize);
            return;
        }

        Directory.CreateDirectory(Path.Combine(root, "sha256"));
        var temp = $"{PathOf(expected)}.{Guid.NewGuid():N}.tmp";
        try
        {
            await using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
            {
                using var hashing = new HashingStream(file, leaveOpen: true);
                await CopyLimitedAsync(content, hashing, expectedSize, expected, cancellationToken).ConfigureAwait(false);
                await file.FlushAsync(cancellationToken).ConfigureAwait(false);
                Verify(expected, expectedSize, hashing.Digest(), hashing.Count);
            }

            File.Move(temp, PathOf(expected), overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    public Task WriteAsync(byte[] content, Digest expected, CancellationToken cancellationToken = default) =>
        WriteAsync(new MemoryStream(content, writable: false), expected, content.Length, cancellationToken);

    /// <summary>Verifies a finished .partial file and moves it into place; deletes it when it is wrong.</summary>
    public void CommitPartial(Digest expected, long? expectedSize)
    {
        var partial = PartialPathOf(expected);
        Digest actual;
        long size;
        using (var file = File.OpenRead(partial))
        using (var hashing = new HashingStream(file, leaveOpen: true))
        {
            hashing.Drain();
            actual = hashing.Digest();
            size = hashing.Count;
        }

        try
        {
            Verify(expected, expectedSize, actual, size);
        }
        catch (CorralException)
        {
            File.Delete(partial);
            throw;
        }

        File.Move(partial, PathOf(expected), overwrite: true);
    }

    /// <summary>A descriptor naming a stored blob must also give its size: a digest alone is not the descriptor.</summary>
    public void CheckStoredSize(Digest digest, long? expectedSize)
    {
        if (expectedSize is { } size && SizeOf(digest) is { } stored && stored != size)
        {
            throw CorralException.Invalid($"blob {digest} is stored with {stored} bytes, but its descriptor says {size}");
        }
    }

    public void Delete(Digest digest)
    {
        File.Delete(PathOf(digest));
        File.Delete(PartialPathOf(digest));
        if (File.Exists(LockPathOf(digest)))
        {
            File.Delete(LockPathOf(digest));
        }
    }

    public IEnumerable<Digest> List()
    {
        var dir = Path.Combine(root, "sha256");
        if (!Directory.Exists(dir))
        {
            yield break;
        }

        foreach (var file in Directory.EnumerateFiles(dir))
        {
            if (Digest.TryParse("sha256:" + Path.GetFileName(file), out var digest))
            {
                yield return digest;
            }
        }
    }

    internal static void Verify(Digest expected, long? expectedSize, Digest actual, long actualSize)
    {
        if (expectedSize is { } size && size != actualSize)
        {
            throw new CorralException($"blob {expected} has the wrong size: expected {size} bytes, got {actualSize}");
        }

        if (actual != expected)
        {
            throw new CorralException($"blob {expected} failed verification: its content hashes to {actual}");
        }
    }

    private static async Task CopyLimitedAsync(Stream source, Stream destination, long? limit, Digest expected, CancellationToken cancellationToken)
    {
        var buffer = new byte[1 << 16];
        long total = 0;
        int n;
        while ((n = await source.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            total += n;
            if (limit is { } max && total > max)
            {
                throw new CorralException($"blob {expected} has the wrong size: more than the {max} bytes expected");
            }

            await destination.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
        }
    }
}
