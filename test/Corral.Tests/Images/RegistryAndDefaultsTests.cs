using System.Text;
using Corral.Common;
using Corral.Images;
using Shouldly;
using Xunit;

namespace Corral.Tests.Images;

public sealed class RegistryClientTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void ParsesABearerChallenge()
    {
        var parameters = RegistryClient.ParseChallenge("realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull\"");

        parameters["realm"].ShouldBe("https://auth.example/token");
        parameters["service"].ShouldBe("registry.example");
        parameters["scope"].ShouldBe("repository:a/b:pull");
    }

    [Theory]
    [InlineData("127.0.0.1:5000", true)]
    [InlineData("localhost:5000", true)]
    [InlineData("[::1]:5000", true)]
    [InlineData("registry.example:5000", false)]
    [InlineData("insecure.example", true)]
    [InlineData("docker.io", false)]
    public void UsesPlainHttpOnlyForLoopbackAndListedRegistries(string registry, bool plain)
    {
        var client = new RegistryClient(new HttpClient(), new RegistryOptions { InsecureRegistries = ["insecure.example"] });

        client.IsPlainHttp(registry).ShouldBe(plain);
        client.BaseUri(registry).Scheme.ShouldBe(plain ? "http" : "https");
    }

    [Fact]
    public void ReadsCredentialsFromADockerConfig()
    {
        var path = _temp.Combine("config.json");
        var encoded = Convert.ToBase64String(Encoding.UTF8.GetBytes("u:p"));
        File.WriteAllText(path, "{\"auths\":{\"https://registry.example:5000/v1/\":{\"auth\":\"" + encoded + "\"},\"other.example\":{\"username\":\"a\",\"password\":\"b\"}}}");
        var client = new RegistryClient(new HttpClient(), new RegistryOptions { AuthFile = path });

        client.Credentials("registry.example:5000").ShouldBe(encoded);
        client.Credentials("other.example").ShouldBe(Convert.ToBase64String(Encoding.UTF8.GetBytes("a:b")));
        client.Credentials("unknown.example").ShouldBeNull();
    }

    [Fact]
    public void AMissingAuthFileThatWasAskedForIsAnError()
    {
        var client = new RegistryClient(new HttpClient(), new RegistryOptions { AuthFile = _temp.Combine("nope.json") });

        Should.Throw<CorralException>(() => client.Credentials("x.example")).Message.ShouldContain("does not exist");
    }
}

public sealed class ImageRunDefaultsTests
{
    private static readonly ContainerConfig Config = new()
    {
        Entrypoint = ["/entry"],
        Cmd = ["default", "args"],
        Env = ["PATH=/image/bin", "A=image", "NOEQUALS"],
        WorkingDir = "/app",
    };

    [Fact]
    public void ArgumentsReplaceCmdAndKeepTheEntrypoint()
    {
        ImageRunDefaults.Command(Config, ["mine"]).ShouldBe(["/entry", "mine"]);
        ImageRunDefaults.Command(Config, []).ShouldBe(["/entry", "default", "args"]);
        ImageRunDefaults.Command(Config with { Entrypoint = null }, []).ShouldBe(["default", "args"]);
        ImageRunDefaults.Command(null, ["x"]).ShouldBe(["x"]);
    }

    [Fact]
    public void TheCallersEnvironmentAndWorkdirWin()
    {
        var env = ImageRunDefaults.Env(Config, [new("A", "mine")]);

        env.ShouldBe([new("PATH", "/image/bin"), new("A", "image"), new("A", "mine")]);
        Corral.Oci.SpecBuilder.BuildEnv(env).ShouldContain("A=mine");
        Corral.Oci.SpecBuilder.BuildEnv(env).ShouldContain("PATH=/image/bin");
        ImageRunDefaults.Workdir(Config, null).ShouldBe("/app");
        ImageRunDefaults.Workdir(Config, "/tmp").ShouldBe("/tmp");
        ImageRunDefaults.Workdir(Config with { WorkingDir = "" }, null).ShouldBeNull();
    }
}

public sealed class PlatformSelectorTests
{
    private static Descriptor Manifest(string os, string arch, string hex) => new()
    {
        MediaType = MediaTypes.OciManifest,
        Digest = "sha256:" + new string(hex[0], 64),
        Platform = new Platform { Os = os, Architecture = arch },
    };

    [Fact]
    public void PicksLinuxAmd64()
    {
        var index = new ImageIndex { Manifests = [Manifest("linux", "arm64", "a"), Manifest("linux", "amd64", "b"), Manifest("windows", "amd64", "c")] };

        PlatformSelector.Select(index, "test", "linux", "amd64").Digest.ShouldBe("sha256:" + new string('b', 64));
    }

    [Fact]
    public void SaysWhichPlatformsThereAreWhenNoneFits()
    {
        var index = new ImageIndex { Manifests = [Manifest("linux", "arm64", "a"), Manifest("linux", "s390x", "b")] };

        Should.Throw<CorralException>(() => PlatformSelector.Select(index, "image x", "linux", "amd64")).Message.ShouldBe("image x has no image for linux/amd64 (it has: linux/arm64, linux/s390x)");
    }
}
