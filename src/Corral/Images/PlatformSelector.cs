using System.Runtime.InteropServices;
using Corral.Common;

namespace Corral.Images;

/// <summary>Picks this host's image (linux/amd64 here) out of an image index or manifest list.</summary>
public static class PlatformSelector
{
    public static string HostArchitecture => RuntimeInformation.OSArchitecture switch
    {
        Architecture.X64 => "amd64",
        Architecture.Arm64 => "arm64",
        Architecture.Arm => "arm",
        var other => other.ToString().ToLowerInvariant(),
    };

    public static Descriptor Select(ImageIndex index, string what, string os = "linux", string? architecture = null)
    {
        architecture ??= HostArchitecture;
        var manifests = index.Manifests.Where(m => MediaTypes.IsManifest(m.MediaType) || MediaTypes.IsIndex(m.MediaType) || string.IsNullOrEmpty(m.MediaType)).ToList();
        var match = manifests.FirstOrDefault(m => m.Platform is { } p && p.Os == os && p.Architecture == architecture);
        if (match is not null)
        {
            return match;
        }

        var withoutPlatform = manifests.Where(m => m.Platform is null).ToList();
        if (withoutPlatform.Count == 1 && manifests.Count == 1)
        {
            return withoutPlatform[0];
        }

        var offered = string.Join(", ", manifests.Select(m => m.Platform is { } p ? $"{p.Os}/{p.Architecture}" : "(no platform)").Distinct());
        throw new CorralException($"{what} has no image for {os}/{architecture} (it has: {(offered.Length == 0 ? "nothing" : offered)})");
    }
}
