using Corral.Common;

namespace Corral.Images;

/// <summary>
/// How much an image may unpack to. A layer may unpack to at most <see cref="MaxLayerBytes"/>, and
/// to at most <see cref="MaxRatio"/> times its compressed size (never less than
/// <see cref="RatioFloorBytes"/>); an image's layers together to <see cref="MaxImageBytes"/>.
/// Measured on real images (README): 2-4x is typical, so the defaults leave a wide margin and
/// still stop a gzip of zeros (about 1000x) early.
/// </summary>
public sealed record UnpackLimits
{
    public const string LayerVariable = "CORRAL_MAX_LAYER_SIZE";
    public const string ImageVariable = "CORRAL_MAX_IMAGE_SIZE";
    public const string RatioVariable = "CORRAL_MAX_UNPACK_RATIO";

    public static UnpackLimits Default { get; } = new();

    public long MaxLayerBytes { get; init; } = 8L << 30;

    public long MaxImageBytes { get; init; } = 32L << 30;

    /// <summary>0: no ratio cap.</summary>
    public int MaxRatio { get; init; } = 50;

    public long RatioFloorBytes { get; init; } = 256L << 20;

    public int MaxEntries { get; init; } = 1_000_000;

    /// <summary>The defaults, overridden by $CORRAL_MAX_LAYER_SIZE, $CORRAL_MAX_IMAGE_SIZE, $CORRAL_MAX_UNPACK_RATIO, then by the given options.</summary>
    public static UnpackLimits From(string? maxLayer = null, string? maxImage = null, string? maxRatio = null)
    {
        var limits = Default;
        maxLayer ??= Environment.GetEnvironmentVariable(LayerVariable);
        maxImage ??= Environment.GetEnvironmentVariable(ImageVariable);
        maxRatio ??= Environment.GetEnvironmentVariable(RatioVariable);
        if (!string.IsNullOrEmpty(maxLayer))
        {
            limits = limits with { MaxLayerBytes = Size(maxLayer, "--max-layer-size") };
        }

        if (!string.IsNullOrEmpty(maxImage))
        {
            limits = limits with { MaxImageBytes = Size(maxImage, "--max-image-size") };
        }

        if (!string.IsNullOrEmpty(maxRatio))
        {
            limits = limits with
            {
                MaxRatio = int.TryParse(maxRatio, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var ratio)
                    ? ratio
                    : throw CorralException.Invalid($"invalid unpack ratio '{maxRatio}': a whole number, 0 for none"),
            };
        }

        return limits;
    }

    /// <summary>The budget of one layer of <paramref name="compressedSize"/> bytes with <paramref name="imageLeft"/> bytes left to its image.</summary>
    public UnpackBudget LayerBudget(long? compressedSize, long imageLeft)
    {
        var max = MaxLayerBytes;
        var option = "--max-layer-size";
        if (MaxRatio > 0 && compressedSize is { } compressed)
        {
            var byRatio = Math.Max(RatioFloorBytes, compressed > long.MaxValue / MaxRatio ? long.MaxValue : compressed * MaxRatio);
            if (byRatio < max)
            {
                max = byRatio;
                option = $"{RatioVariable} (now {MaxRatio}x the compressed size)";
            }
        }

        if (imageLeft < max)
        {
            max = Math.Max(0, imageLeft);
            option = "--max-image-size";
        }

        return new UnpackBudget(max, MaxEntries, option);
    }

    private static long Size(string text, string option) =>
        ByteSize.TryParse(text, out var bytes, out var error) && bytes > 0
            ? bytes
            : throw CorralException.Invalid($"invalid {option} '{text}': {error}");
}
