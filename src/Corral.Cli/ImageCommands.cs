using System.CommandLine;
using System.Text.Json;
using Corral.Common;
using Corral.Images;
using Spectre.Console;

namespace Corral.Cli;

/// <summary>`corral pull`, `corral images`, `corral rmi`, `corral import`.</summary>
internal static class ImageCommands
{
    public static readonly Option<string[]> InsecureRegistry = new("--insecure-registry")
    {
        Description = "Registry (host:port) to reach over plain http; loopback registries always are (repeatable)",
        AllowMultipleArgumentsPerToken = false,
    };

    public static readonly Option<string> AuthFile = new("--auth-file") { Description = "docker-style config.json with registry credentials (auths)" };

    public static readonly Option<string> MaxLayerSize = new("--max-layer-size") { Description = $"Most a layer may unpack to (default 8Gi, or ${UnpackLimits.LayerVariable}; also at most ${UnpackLimits.RatioVariable} = 50 times its compressed size, 256Mi at least)" };

    public static readonly Option<string> MaxImageSize = new("--max-image-size") { Description = $"Most an image's layers together may unpack to (default 32Gi, or ${UnpackLimits.ImageVariable})" };

    /// <summary>Applies --max-layer-size and --max-image-size to the context's image store.</summary>
    public static void ApplyLimits(CorralContext ctx, ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(parse);
        var layer = parse.GetValue(MaxLayerSize);
        var image = parse.GetValue(MaxImageSize);
        if (layer is not null || image is not null)
        {
            ctx.Limits = UnpackLimits.From(layer, image);
        }
    }

    public static Command Pull()
    {
        var reference = new Argument<string>("REF") { Description = "Image reference: [registry/]name[:tag][@sha256:...]" };
        var command = new Command("pull", "Pull an image from a registry into the image store") { reference, InsecureRegistry, AuthFile, MaxLayerSize, MaxImageSize };
        command.SetAction(async (parse, ct) =>
        {
            var ctx = CorralCli.Context(parse);
            ApplyLimits(ctx, parse);
            var image = await PullAsync(ctx, parse, ImageReference.Parse(parse.GetValue(reference)!), ct).ConfigureAwait(false);
            Console.WriteLine($"{image.Ref} {image.ManifestDigest}");
            return 0;
        });
        return command;
    }

    public static Command Images()
    {
        var json = new Option<bool>("--json") { Description = "Print JSON instead of a table" };
        var command = new Command("images", "List the images in the store") { json };
        command.SetAction(parse =>
        {
            var ctx = CorralCli.Context(parse);
            var refs = ctx.Images().ReadRefs();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(refs, ImageJsonContext.Default.RefIndex));
                return 0;
            }

            var table = new Table().Border(TableBorder.Simple);
            foreach (var header in new[] { "REFERENCE", "MANIFEST", "SIZE", "CREATED" })
            {
                table.AddColumn(header);
            }

            foreach (var (name, record) in refs.Refs)
            {
                var digest = record.Manifest.StartsWith("sha256:", StringComparison.Ordinal) ? record.Manifest[7..19] : record.Manifest;
                table.AddRow(Markup.Escape(name), digest, $"{record.Size / 1048576.0:0.0} MiB", record.CreatedAt.ToString("u", System.Globalization.CultureInfo.InvariantCulture));
            }

            if (Console.IsOutputRedirected)
            {
                AnsiConsole.Profile.Width = 1000;
            }

            AnsiConsole.Write(table);
            return 0;
        });
        return command;
    }

    public static Command Rmi()
    {
        var reference = new Argument<string[]>("REF") { Description = "Images to remove", Arity = ArgumentArity.OneOrMore };
        var command = new Command("rmi", "Remove images; blobs and layers no other image uses are deleted") { reference };
        command.SetAction(parse =>
        {
            var store = CorralCli.Context(parse).Images();
            foreach (var name in parse.GetValue(reference)!)
            {
                if (!store.Remove(name))
                {
                    throw new CorralException($"no such image: {name}", 1);
                }

                Console.WriteLine($"removed {name}");
            }

            return 0;
        });
        return command;
    }

    public static Command Import()
    {
        var path = new Argument<string>("PATH") { Description = "OCI image layout directory, or a tar of one, or a `docker save` archive" };
        var tag = new Option<string>("--tag", "-t") { Description = "Reference to store the image under (default: from the archive)" };
        var command = new Command("import", "Import an OCI image layout or a docker-save archive into the image store") { path, tag, MaxLayerSize, MaxImageSize };
        command.SetAction(async (parse, ct) =>
        {
            var ctx = CorralCli.Context(parse);
            ApplyLimits(ctx, parse);
            var refs = await new ImageImporter(ctx.Images()).ImportAsync(parse.GetValue(path)!, parse.GetValue(tag), ct).ConfigureAwait(false);
            foreach (var name in refs)
            {
                var image = ctx.Images().Find(name)!;
                await ctx.Images().EnsureLayersAsync(image, ct).ConfigureAwait(false);
                Console.WriteLine($"{name} {image.ManifestDigest}");
            }

            return 0;
        });
        return command;
    }

    /// <summary>Pulls with a progress bar per layer on a terminal, plain lines otherwise (both on stderr).</summary>
    public static async Task<StoredImage> PullAsync(CorralContext ctx, ParseResult parse, ImageReference reference, CancellationToken cancellationToken)
    {
        var puller = ctx.Puller(parse.GetValue(InsecureRegistry) ?? [], parse.GetValue(AuthFile));
        if (Console.IsErrorRedirected)
        {
            Console.Error.WriteLine($"corral: pulling {reference}");
            return await puller.PullAsync(reference, new PlainObserver(), cancellationToken).ConfigureAwait(false);
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        return await console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn())
            .StartAsync(async progress =>
            {
                var observer = new ProgressObserver(progress);
                return await puller.PullAsync(reference, observer, cancellationToken).ConfigureAwait(false);
            }).ConfigureAwait(false);
    }

    private static string Short(Descriptor layer) => layer.Digest.Length > 19 ? layer.Digest[7..19] : layer.Digest;

    private sealed class PlainObserver : IPullObserver
    {
        public void OnBlob(Descriptor layer, bool cached)
        {
            if (cached)
            {
                Console.Error.WriteLine($"corral: layer {Short(layer)} already present");
            }
        }

        public void OnBlobDone(Descriptor layer) => Console.Error.WriteLine($"corral: layer {Short(layer)} {layer.Size / 1048576.0:0.0} MiB done");
    }

    private sealed class ProgressObserver(ProgressContext progress) : IPullObserver
    {
        private readonly Dictionary<string, ProgressTask> _tasks = new(StringComparer.Ordinal);

        public void OnBlob(Descriptor layer, bool cached)
        {
            var task = progress.AddTask($"layer {Short(layer)}", maxValue: Math.Max(1, layer.Size));
            if (cached)
            {
                task.Value = task.MaxValue;
            }

            _tasks[layer.Digest] = task;
        }

        public void OnProgress(Descriptor layer, long bytes)
        {
            if (_tasks.TryGetValue(layer.Digest, out var task))
            {
                task.Value = bytes;
            }
        }

        public void OnBlobDone(Descriptor layer)
        {
            if (_tasks.TryGetValue(layer.Digest, out var task))
            {
                task.Value = task.MaxValue;
                task.StopTask();
            }
        }

        public void OnUnpacking(Descriptor layer)
        {
            if (_tasks.TryGetValue(layer.Digest, out var task))
            {
                task.Description = $"layer {Short(layer)} (unpacking)";
            }
        }
    }
}
