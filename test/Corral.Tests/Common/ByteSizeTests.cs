using Corral.Common;
using Shouldly;
using Xunit;

namespace Corral.Tests.Common;

public sealed class ByteSizeTests
{
    [Theory]
    [InlineData("64Mi", 64L << 20)]
    [InlineData("1Gi", 1L << 30)]
    [InlineData("512M", 512_000_000L)]
    [InlineData("1048576", 1048576L)]
    [InlineData("1.5Gi", 3L << 29)]
    [InlineData("100k", 100_000L)]
    public void ParsesSizes(string text, long expected) => ByteSize.Parse(text).ShouldBe(expected);

    [Theory]
    [InlineData("-1")]
    [InlineData("12XB")]
    [InlineData("0")]
    [InlineData("")]
    [InlineData("Mi")]
    [InlineData("0.1")]
    public void RefusesNonsense(string text) => ByteSize.TryParse(text, out _, out var error).ShouldBeFalse(error);

    [Theory]
    [InlineData(64L << 20, "64Mi")]
    [InlineData(3L << 30, "3Gi")]
    [InlineData(1000L, "1000")]
    public void FormatsSizes(long bytes, string expected) => ByteSize.Format(bytes).ShouldBe(expected);
}
