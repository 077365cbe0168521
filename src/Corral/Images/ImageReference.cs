using System.Text.RegularExpressions;
using Corral.Common;

namespace Corral.Images;

/// <summary>An image reference: [registry/]repository[:tag][@digest], Docker's defaults applied.</summary>
public sealed partial record ImageReference(string Registry, string Repository, string? Tag, Digest? Digest)
{
    public const string DefaultRegistry = "docker.io";

    /// <summary>The key the store's ref index uses: registry/repository:tag or registry/repository@digest.</summary>
    public string Key => Digest is { } d && Tag is null ? $"{Registry}/{Repository}@{d}" : $"{Registry}/{Repository}:{Tag ?? "latest"}";

    /// <summary>What the registry is asked for: the digest when given, else the tag.</summary>
    public string ManifestReference => Digest?.ToString() ?? Tag ?? "latest";

    public override string ToString() => Key;

    public static ImageReference Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var rest = text;
        Digest? digest = null;
        var at = rest.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            digest = Images.Digest.Parse(rest[(at + 1)..]);
            rest = rest[..at];
        }

        var registry = DefaultRegistry;
        var slash = rest.IndexOf('/', StringComparison.Ordinal);
        if (slash > 0)
        {
            var first = rest[..slash];
            if (first.Contains('.', StringComparison.Ordinal) || first.Contains(':', StringComparison.Ordinal) || first == "localhost")
            {
                registry = first;
                rest = rest[(slash + 1)..];
            }
        }

        string? tag = null;
        var colon = rest.LastIndexOf(':');
        if (colon >= 0)
        {
            tag = rest[(colon + 1)..];
            rest = rest[..colon];
            if (!TagPattern().IsMatch(tag))
            {
                throw new CorralException($"invalid image reference '{text}': bad tag '{tag}'");
            }
        }

        if (rest.Length == 0 || !RepositoryPattern().IsMatch(rest))
        {
            throw new CorralException($"invalid image reference '{text}': expected [registry/]name[:tag][@sha256:...] in lowercase");
        }

        if (registry == DefaultRegistry && !rest.Contains('/', StringComparison.Ordinal))
        {
            rest = "library/" + rest;
        }

        if (tag is null && digest is null)
        {
            tag = "latest";
        }

        return new ImageReference(registry, rest, tag, digest);
    }

    [GeneratedRegex("^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")]
    private static partial Regex RepositoryPattern();

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
    private static partial Regex TagPattern();
}
