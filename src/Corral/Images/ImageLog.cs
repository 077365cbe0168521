using Microsoft.Extensions.Logging;

namespace Corral.Images;

/// <summary>The image store's log lines (event ids 3000-3099).</summary>
internal static partial class ImageLog
{
    [LoggerMessage(3000, LogLevel.Information, "blob stored digest={Digest} size={Size}")]
    public static partial void BlobStored(ILogger logger, string digest, long size);

    [LoggerMessage(3001, LogLevel.Information, "layer unpacked digest={Digest} diff_id={DiffId} ms={Ms:0.0}")]
    public static partial void LayerUnpacked(ILogger logger, string digest, string diffId, double ms);

    [LoggerMessage(3002, LogLevel.Information, "image tagged ref={Ref} manifest={Manifest}")]
    public static partial void Tagged(ILogger logger, string @ref, string manifest);

    [LoggerMessage(3003, LogLevel.Information, "image removed ref={Ref} blobs_deleted={Blobs} layers_deleted={Layers}")]
    public static partial void Removed(ILogger logger, string @ref, int blobs, int layers);

    [LoggerMessage(3010, LogLevel.Information, "registry request method={Method} url={Url} status={Status}")]
    public static partial void RegistryRequest(ILogger logger, string method, string url, int status);

    [LoggerMessage(3011, LogLevel.Information, "registry token fetched realm={Realm} scope={Scope}")]
    public static partial void TokenFetched(ILogger logger, string realm, string? scope);

    [LoggerMessage(3012, LogLevel.Information, "blob download resumed digest={Digest} offset={Offset}")]
    public static partial void Resumed(ILogger logger, string digest, long offset);

    [LoggerMessage(3013, LogLevel.Information, "platform selected manifest={Manifest} platform={Platform}")]
    public static partial void PlatformSelected(ILogger logger, string manifest, string platform);

    [LoggerMessage(3014, LogLevel.Warning, "cleanup after a failed import or pull failed error={Error}")]
    public static partial void DiscardFailed(ILogger logger, string error);

    [LoggerMessage(3015, LogLevel.Information, "released layers collected layers_deleted={Layers}")]
    public static partial void ReleasedLayersCollected(ILogger logger, int layers);
}
