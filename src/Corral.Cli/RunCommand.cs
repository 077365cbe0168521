using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Corral.Cgroups;
using Corral.Common;
using Corral.Networking;
using Corral.Rootfs;
using Corral.Runtimes;
using Corral.Supervision;

namespace Corral.Cli;

/// <summary>`corral run [options] -- CMD [ARGS...]`: exits with the container's exit code.</summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var runtime = new Option<string>("--runtime") { Description = "gvisor (default: for untrusted code), runc or crun", DefaultValueFactory = _ => "gvisor" };
        var rootfs = new Option<string>("--rootfs") { Description = "Root filesystem directory (default: the default image)" };
        var env = new Option<string[]>("--env", "-e") { Description = "Environment variable K=V (repeatable)", AllowMultipleArgumentsPerToken = false };
        var workdir = new Option<string>("--workdir", "-w") { Description = "Working directory inside the container" };
        var timeout = new Option<string>("--timeout") { Description = "Kill the container after this long (e.g. 30s, 5m)" };
        var startTimeout = new Option<string>("--start-timeout") { Description = "Give up if the runtime has not started the workload by then (default 60s)" };
        var name = new Option<string>("--name") { Description = "Container id (default: generated)" };
        var resultFile = new Option<string>("--result-file") { Description = "Write the JSON exit record here" };
        var memory = new Option<string>("--memory", "-m") { Description = "Memory limit, enforced by the kernel (e.g. 64Mi, 1Gi, 512M)" };
        var cpus = new Option<string>("--cpus") { Description = "CPU limit in cores, fractional allowed (e.g. 0.5)" };
        var pids = new Option<string>("--pids") { Description = "Maximum number of processes" };
        var allowance = new Option<string>("--gvisor-memory-allowance") { Description = "Memory added to --memory for gVisor's own sandbox processes (default 24Mi)" };
        var pidsAllowance = new Option<string>("--gvisor-pids-allowance") { Description = "Tasks added to --pids for gVisor's own sandbox threads (default 64)" };
        var image = new Option<string>("--image") { Description = "Run from this image (pulled when missing): its layers as an overlay, its Entrypoint/Cmd/Env/WorkingDir as defaults" };
        var pull = new Option<string>("--pull") { Description = "missing (default): pull the image when the store lacks it; always; never", DefaultValueFactory = _ => "missing" };
        var gpu = new Option<bool>("--gpu") { Description = "Give the container the host's NVIDIA GPUs (gVisor: nvproxy)" };
        var detach = new Option<bool>("--detach", "-d") { Description = "Run it in the daemon (`corral serve`, see --host) and print its id; --rootfs and --image are then on the daemon's host (its store, never pulled)" };
        var labels = new Option<string[]>("--label", "-l") { Description = "Label K=V for the daemon's List (repeatable; with -d)", AllowMultipleArgumentsPerToken = false };
        var idle = new Option<bool>("--idle") { Description = "With -d: an idle PID 1 instead of the image's Cmd, for `corral exec` (no command needed)" };
        var network = new Option<string>("--network") { Description = "none (default: loopback only) or bridge (own address on Corral's bridge, NAT out, DNS)" };
        var publish = new Option<string[]>("--publish", "-p") { Description = "Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], HOST_IP 127.0.0.1 by default, HOST_PORT 0 picks one (repeatable; bridge)", AllowMultipleArgumentsPerToken = false };
        var egress = new Option<string[]>("--egress") { Description = "Egress policy: none, allow-cidr=CIDR[,CIDR] or deny-cidr=CIDR[,CIDR] (repeatable; bridge). Default: outside yes; host, 169.254/16 and other sandboxes no", AllowMultipleArgumentsPerToken = false };
        var dns = new Option<string[]>("--dns") { Description = "Nameserver for /etc/resolv.conf (repeatable; bridge; default: the host's)", AllowMultipleArgumentsPerToken = false };
        var readOnly = new Option<bool>("--read-only") { Description = "Mount the root read-only (a tmpfs /tmp) instead of giving the container its own writable layer" };
        var disk = new Option<string>("--disk") { Description = "Cap what the container writes to its root (e.g. 1Gi): writes beyond fail with ENOSPC. Default: no cap but the host disk's" };
        var volumes = new Option<string[]>("--volume", "-v") { Description = "Bind mount HOST_PATH:CONTAINER_PATH[:ro|rw][,create] (repeatable; the host path's symlinks resolved once, now)", AllowMultipleArgumentsPerToken = false };
        var tmpfs = new Option<string[]>("--tmpfs") { Description = "Mount a tmpfs at CONTAINER_PATH[:size=SIZE] (repeatable; default size 64Mi)", AllowMultipleArgumentsPerToken = false };
        var user = new Option<string>("--user", "-u") { Description = "Run as NAME or UID[:GID|GROUP], looked up in the container's /etc/passwd and /etc/group (default: the image's User, else root)" };
        var command = new Argument<string[]>("CMD") { Description = "Command and arguments, after --", Arity = ArgumentArity.ZeroOrMore };
        var run = new Command("run", "Run a command in a new container and exit with its exit code")
        {
            runtime, rootfs, image, pull, ImageCommands.InsecureRegistry, ImageCommands.AuthFile, env, workdir, timeout, startTimeout, name, resultFile, memory, cpus, pids, allowance, pidsAllowance, gpu, network, publish, egress, dns, readOnly, disk, volumes, tmpfs, user, detach, labels, idle, command,
        };

        run.SetAction(async (parse, _) =>
        {
            var ctx = CorralCli.Context(parse);
            if (!ContainerRuntimes.TryParse(parse.GetValue(runtime), out var kind))
            {
                throw new CorralException($"invalid --runtime '{parse.GetValue(runtime)}': use gvisor, runc or crun");
            }

            var id = parse.GetValue(name);
            if (id is not null)
            {
                ContainerId.Validate(id);
            }

            // Checked before anything runs: a bad path must never cost the container's exit code.
            var resultPath = parse.GetValue(resultFile) is { } rf ? ResultFile.Resolve(rf) : null;

            var limits = new ResourceLimits(
                parse.GetValue(memory) is { } m ? ParseMemory(m) : null,
                parse.GetValue(cpus) is { } c ? ParseCpus(c) : null,
                parse.GetValue(pids) is { } p ? ParsePids(p) : null);
            var request = new ContainerRequest
            {
                Id = id,
                Runtime = kind,
                Rootfs = parse.GetValue(rootfs) ?? "(default image)",
                Command = parse.GetValue(command) ?? [],
                Env = (parse.GetValue(env) ?? []).Select(ParseEnv).ToList(),
                Workdir = parse.GetValue(workdir),
                Timeout = parse.GetValue(timeout) is { } t ? Duration.Parse(t) : null,
                Limits = limits,
                Gpu = parse.GetValue(gpu),
                Network = NetworkInput.Validate(new NetworkRequest
                {
                    Mode = NetworkInput.ParseMode(parse.GetValue(network)),
                    Ports = (parse.GetValue(publish) ?? []).Select(NetworkInput.ParsePort).ToList(),
                    Egress = NetworkInput.ParseEgress(parse.GetValue(egress) ?? []),
                    Dns = parse.GetValue(dns) ?? [],
                }),
                ReadOnlyRoot = parse.GetValue(readOnly),
                DiskBytes = parse.GetValue(disk) is { } d ? ParseSize("--disk", d) : null,
                Mounts = [.. (parse.GetValue(volumes) ?? []).Select(MountInput.ParseVolume), .. (parse.GetValue(tmpfs) ?? []).Select(MountInput.ParseTmpfs)],
                User = parse.GetValue(user),
            };
            var networkGiven = parse.GetValue(network) is not null;
            if (parse.GetValue(detach))
            {
                return await RunDetachedAsync(parse, request, networkGiven, parse.GetValue(rootfs), parse.GetValue(image), parse.GetValue(labels) ?? [], parse.GetValue(idle), resultPath is not null || parse.GetValue(startTimeout) is not null || parse.GetValue(allowance) is not null || parse.GetValue(pidsAllowance) is not null).ConfigureAwait(false);
            }

            if (parse.GetValue(idle))
            {
                throw new CorralException("--idle needs -d: an idle sandbox lives in the daemon and takes `corral exec`");
            }

            if (parse.GetValue(image) is { } imageName)
            {
                if (parse.GetValue(rootfs) is not null)
                {
                    throw new CorralException("--image and --rootfs cannot be used together");
                }

                var stored = await ResolveImageAsync(ctx, parse, imageName, parse.GetValue(pull)!).ConfigureAwait(false);
                var layers = await ctx.Images().EnsureLayersAsync(stored, CancellationToken.None).ConfigureAwait(false);
                var config = stored.Config.Config;
                request = request with
                {
                    Rootfs = stored.Ref,
                    ImageLayers = layers,
                    Command = Corral.Images.ImageRunDefaults.Command(config, request.Command),
                    Env = Corral.Images.ImageRunDefaults.Env(config, request.Env),
                    Workdir = Corral.Images.ImageRunDefaults.Workdir(config, request.Workdir),
                    User = Corral.Images.ImageRunDefaults.User(config, request.User),
                };
            }

            if (request.Command.Count == 0)
            {
                throw new CorralException("no command given: corral run [options] -- CMD [ARGS...]");
            }

            if (request.Command[0].StartsWith('-'))
            {
                // Options belong before "--"; an unknown one would otherwise be taken for the command.
                throw new CorralException($"unrecognized option '{request.Command[0]}' (the command goes after --)");
            }

            if (parse.GetValue(rootfs) is null && request.ImageLayers is null)
            {
                request = request with { Rootfs = await ctx.EnsureDefaultImageAsync(CancellationToken.None).ConfigureAwait(false) };
            }

            if (parse.GetValue(labels) is { Length: > 0 })
            {
                throw new CorralException("--label needs -d: labels belong to daemon sandboxes");
            }

            var options = ctx.SupervisorOptions();
            if (parse.GetValue(startTimeout) is { } st)
            {
                options.StartTimeout = Duration.Parse(st);
            }

            if (parse.GetValue(allowance) is { } extra)
            {
                options.GvisorMemoryAllowanceBytes = extra == "0" ? 0 : ParseMemory(extra);
            }

            if (parse.GetValue(pidsAllowance) is { } extraPids)
            {
                options.GvisorPidsAllowance = extraPids == "0" ? 0 : ParsePids(extraPids);
            }

            var supervisor = ctx.CreateSupervisor(options);
            using var stop = new CancellationTokenSource();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Forward);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Forward);
            var record = await supervisor.RunAsync(request, new ContainerIo(Console.OpenStandardOutput(), Console.OpenStandardError()), new ResultWriter(resultPath), stop.Token).ConfigureAwait(false);
            if (record.PidsLimitHit)
            {
                await Console.Error.WriteLineAsync($"corral: warning: the container hit its pids limit ({record.PidsLimit}): a fork or clone failed").ConfigureAwait(false);
            }

            if (record.OutputDroppedBytes > 0)
            {
                await Console.Error.WriteLineAsync($"corral: warning: {record.OutputDroppedBytes} bytes of output could not be written and were dropped").ConfigureAwait(false);
            }

            return record.ExitCode;

            void Forward(PosixSignalContext context)
            {
                // The container is told to stop (SIGTERM, SIGKILL after a grace); Corral waits for it.
                context.Cancel = true;
                stop.Cancel();
            }
        });
        return run;
    }

    /// <summary>
    /// `run -d`: the daemon resolves the root filesystem on its own host: --rootfs as given, --image
    /// from its image store (never pulled), or its default image.
    /// </summary>
    private static async Task<int> RunDetachedAsync(ParseResult parse, ContainerRequest request, bool networkGiven, string? rootfs, string? image, string[] labels, bool idle, bool localOnlyOptions)
    {
        if (localOnlyOptions || request.Gpu)
        {
            throw new CorralException("--result-file, --start-timeout, --gvisor-memory-allowance, --gvisor-pids-allowance and --gpu are not available with -d yet: use `corral wait ID` for the exit record");
        }

        if (image is not null && rootfs is not null)
        {
            throw new CorralException("--image and --rootfs cannot be used together");
        }

        // No command: the sandbox idles and takes execs (`corral exec ID -- CMD`).
        if (request.Command.Count > 0 && request.Command[0].StartsWith('-'))
        {
            throw new CorralException($"unrecognized option '{request.Command[0]}' (the command goes after --)");
        }

        var create = ToCreateRequest(request with { Rootfs = rootfs is null ? string.Empty : Path.GetFullPath(rootfs) }, labels.Select(ParseLabel), networkGiven);
        create.Image = image ?? string.Empty;
        create.Idle = idle;
        return await DaemonCommands.RunDetachedAsync(parse, create, CancellationToken.None).ConfigureAwait(false);
    }

    private static async Task<Corral.Images.StoredImage> ResolveImageAsync(CorralContext ctx, ParseResult parse, string name, string policy)
    {
        if (policy is not ("missing" or "always" or "never"))
        {
            throw new CorralException($"invalid --pull '{policy}': use missing, always or never");
        }

        var existing = policy == "always" ? null : ctx.Images().Find(name);
        if (existing is not null)
        {
            return existing;
        }

        if (policy == "never")
        {
            throw new CorralException($"image {name} is not in the store (--pull never)");
        }

        return await ImageCommands.PullAsync(ctx, parse, Corral.Images.ImageReference.Parse(name), CancellationToken.None).ConfigureAwait(false);
    }

    private static Protocol.V1.CreateRequest ToCreateRequest(ContainerRequest request, IEnumerable<KeyValuePair<string, string>> labels, bool networkGiven)
    {
        var create = new Protocol.V1.CreateRequest
        {
            Rootfs = request.Rootfs,
            Runtime = request.Runtime switch
            {
                RuntimeKind.Runc => Protocol.V1.Runtime.Runc,
                RuntimeKind.Crun => Protocol.V1.Runtime.Crun,
                _ => Protocol.V1.Runtime.Gvisor,
            },
            Workdir = request.Workdir ?? string.Empty,
            Name = request.Id ?? string.Empty,
            Cpus = request.Limits.Cpus ?? 0,
            MemoryBytes = request.Limits.MemoryBytes ?? 0,
            Pids = request.Limits.Pids ?? 0,
            ReadOnly = request.ReadOnlyRoot,
            DiskBytes = request.DiskBytes ?? 0,
            User = request.User ?? string.Empty,
        };
        create.Mounts.AddRange(request.Mounts.Select(m => new Protocol.V1.Mount
        {
            Type = m.Kind == MountKind.Tmpfs ? Protocol.V1.Mount.Types.Type.Tmpfs : Protocol.V1.Mount.Types.Type.Bind,
            Source = m.Source ?? string.Empty,
            Target = m.Target,
            ReadOnly = m.ReadOnly,
            SizeBytes = m.SizeBytes ?? 0,
            CreateSource = m.CreateSource,
        }));
        create.Command.AddRange(request.Command);
        foreach (var (key, value) in request.Env)
        {
            create.Env[key] = value;
        }

        foreach (var (key, value) in labels)
        {
            create.Labels[key] = value;
        }

        if (request.Timeout is { } timeout)
        {
            create.Timeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(timeout);
        }

        // Without --network the daemon's default applies (`corral serve --network`).
        if (networkGiven)
        {
            var net = request.Network;
            create.Network = new Protocol.V1.NetworkSpec
            {
                Mode = net.Mode == NetworkMode.Bridge ? Protocol.V1.NetworkMode.Bridge : Protocol.V1.NetworkMode.None,
                EgressNone = net.Egress.None,
            };
            create.Network.Ports.AddRange(net.Ports.Select(p => new Protocol.V1.PortMapping
            {
                HostIp = p.HostIp,
                HostPort = (uint)p.HostPort,
                ContainerPort = (uint)p.ContainerPort,
                Protocol = p.Protocol == PortProtocol.Udp ? "udp" : "tcp",
            }));
            create.Network.EgressAllowCidrs.AddRange(net.Egress.AllowCidrs);
            create.Network.EgressDenyCidrs.AddRange(net.Egress.DenyCidrs);
            create.Network.Dns.AddRange(net.Dns);
        }

        return create;
    }

    private static KeyValuePair<string, string> ParseLabel(string text)
    {
        var eq = text.IndexOf('=', StringComparison.Ordinal);
        return eq > 0 ? new(text[..eq], text[(eq + 1)..]) : throw new CorralException($"invalid --label '{text}': expected KEY=VALUE");
    }

    private static long ParseMemory(string text) => ParseSize("--memory", text);

    private static long ParseSize(string option, string text) => ByteSize.Parse(option, text);

    private static double ParseCpus(string text)
    {
        if (!double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var cpus) || cpus <= 0 || double.IsInfinity(cpus))
        {
            throw new CorralException($"invalid --cpus '{text}': expected a positive number of cores, e.g. 0.5 or 2");
        }

        return cpus;
    }

    private static long ParsePids(string text)
    {
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var pids) || pids < 1 || pids > InputRules.MaxPids)
        {
            throw CorralException.Invalid($"invalid --pids '{text}': expected a whole number between 1 and {InputRules.MaxPids}");
        }

        return pids;
    }

    internal static KeyValuePair<string, string> ParseEnv(string text)
    {
        var eq = text.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0)
        {
            throw CorralException.Invalid($"invalid --env '{text}': expected KEY=VALUE");
        }

        InputRules.EnvName(text[..eq]);
        InputRules.NoNul($"value of --env {text[..eq]}", text[(eq + 1)..]);
        return new(text[..eq], text[(eq + 1)..]);
    }

    /// <summary>Writes the exit record atomically the moment it exists, before cleanup; a failure is one line, never the exit code.</summary>
    private sealed class ResultWriter(string? path) : IContainerObserver
    {
        /// <summary>Where a published port landed (a 0 asked for one): the user needs it to connect.</summary>
        public void OnNetwork(string id, NetworkAttachment attachment)
        {
            foreach (var port in attachment.Ports)
            {
                Console.Error.WriteLine($"corral: published {port}");
            }
        }

        public void OnExited(ExitRecord record)
        {
            if (path is null)
            {
                return;
            }

            try
            {
                ResultFile.Write(path, record);
            }
            catch (Exception ex) when (ex is CorralException or IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"corral: cannot write --result-file {path}: {ex.Message.ReplaceLineEndings(" ")}");
            }
        }
    }
}
