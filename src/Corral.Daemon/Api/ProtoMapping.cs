using Corral.Daemon.Sandboxes;
using Corral.Shim;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Proto = Corral.Protocol.V1;

namespace Corral.Daemon.Api;

/// <summary>Between the daemon's records and their wire form.</summary>
internal static class ProtoMapping
{
    public static Proto.ExitRecord ToProto(this Corral.Supervision.ExitRecord exit)
    {
        var message = new Proto.ExitRecord
        {
            Id = exit.Id,
            Runtime = exit.Runtime,
            ExitCode = exit.ExitCode,
            StartedAt = Timestamp.FromDateTimeOffset(exit.StartedAt),
            ExitedAt = Timestamp.FromDateTimeOffset(exit.ExitedAt),
            DurationMs = exit.DurationMs,
            TimedOut = exit.TimedOut,
            OomKilled = exit.OomKilled,
            OomKills = exit.OomKills,
            OomLikely = exit.OomLikely,
            StdoutTail = exit.StdoutTail,
            StderrTail = exit.StderrTail,
            PidsLimitHit = exit.PidsLimitHit,
            OutputDroppedBytes = exit.OutputDroppedBytes,
        };
        message.Command.AddRange(exit.Command);
        if (exit.PidsLimit is { } pidsLimit)
        {
            message.PidsLimit = pidsLimit;
        }

        if (exit.ExitNote is { } note)
        {
            message.ExitNote = note;
        }

        if (exit.Signal is { } signal)
        {
            message.Signal = signal;
        }

        if (exit.Pid is { } pid)
        {
            message.Pid = pid;
        }

        if (exit.OomReason is { } reason)
        {
            message.OomReason = reason;
        }

        if (exit.OomStrategy is { } strategy)
        {
            message.OomStrategy = strategy;
        }

        if (exit.MemoryLimitBytes is { } limit)
        {
            message.MemoryLimitBytes = limit;
        }

        if (exit.PeakMemoryBytes is { } peak)
        {
            message.PeakMemoryBytes = peak;
        }

        if (exit.CpuUsageNs is { } cpu)
        {
            message.CpuUsageNs = cpu;
        }

        message.OomEvents.AddRange(exit.OomEvents.Select(e => new Proto.OomEventRecord
        {
            Kind = e.Kind,
            At = Timestamp.FromDateTimeOffset(e.At),
            OomKills = e.OomKills,
            Detail = e.Detail,
            VictimPid = e.VictimPid ?? 0,
            VictimProcess = e.VictimProcess ?? string.Empty,
        }));
        return message;
    }

    public static Proto.SandboxInfo ToProto(this Sandbox sandbox)
    {
        var record = sandbox.Record;
        var info = new Proto.SandboxInfo
        {
            Id = record.Id,
            State = record.Status.ToProto(),
            Runtime = record.Runtime,
            CreatedAt = Timestamp.FromDateTimeOffset(record.CreatedAt),
            Pid = record.Pid ?? 0,
            Error = record.Error ?? string.Empty,
        };
        info.Command.AddRange(record.Command);
        foreach (var (key, value) in record.Labels)
        {
            info.Labels[key] = value;
        }
        if (sandbox.Exit is { } exit && record.Status == SandboxStatus.Exited)
        {
            info.Exit = exit.ToProto();
        }

        if (sandbox.Network is { } network)
        {
            info.Network = new Proto.NetworkInfo { Address = network.Address, Gateway = network.Gateway };
            info.Network.Ports.AddRange(network.Ports.Select(p => p.ToProto()));
        }

        return info;
    }

    public static Proto.SandboxState ToProto(this SandboxStatus status) => status switch
    {
        SandboxStatus.Created => Proto.SandboxState.Created,
        SandboxStatus.Running => Proto.SandboxState.Running,
        SandboxStatus.Exited => Proto.SandboxState.Exited,
        _ => Proto.SandboxState.Failed,
    };

    public static Proto.Event ToProto(this SandboxEvent e)
    {
        var message = new Proto.Event
        {
            Sequence = e.Sequence,
            Type = e.Type switch
            {
                SandboxEventType.Created => Proto.EventType.Created,
                SandboxEventType.Started => Proto.EventType.Started,
                SandboxEventType.Oom => Proto.EventType.Oom,
                SandboxEventType.Exited => Proto.EventType.Exited,
                SandboxEventType.Removed => Proto.EventType.Removed,
                _ => Proto.EventType.Failed,
            },
            Id = e.Id,
            At = Timestamp.FromDateTimeOffset(e.At),
            Pid = e.Pid ?? 0,
            Detail = e.Detail ?? string.Empty,
        };
        if (e.Exit is { } exit)
        {
            message.Exit = exit.ToProto();
        }

        return message;
    }

    public static Proto.LogChunk ToProto(OutputStream stream, byte[] data) => new()
    {
        Stream = stream == OutputStream.Stdout ? Proto.LogStream.Stdout : Proto.LogStream.Stderr,
        Data = UnsafeByteOperations.UnsafeWrap(data),
    };

    public static Proto.PortMapping ToProto(this Corral.Networking.PortMapping port) => new()
    {
        HostIp = port.HostIp,
        HostPort = (uint)port.HostPort,
        ContainerPort = (uint)port.ContainerPort,
        Protocol = port.Protocol == Corral.Networking.PortProtocol.Udp ? "udp" : "tcp",
    };

    public static Proto.SandboxStats ToProto(this Corral.Cgroups.CgroupStats stats, string id)
    {
        var message = new Proto.SandboxStats
        {
            Id = id,
            MemoryCurrentBytes = stats.MemoryCurrentBytes,
            CpuUsageNs = stats.CpuUsageNs,
            PidsCurrent = stats.PidsCurrent,
            OomKills = stats.OomKills,
        };
        if (stats.MemoryPeakBytes is { } peak)
        {
            message.MemoryPeakBytes = peak;
        }

        if (stats.MemoryLimitBytes is { } limit)
        {
            message.MemoryLimitBytes = limit;
        }

        if (stats.PidsLimit is { } pids)
        {
            message.PidsLimit = pids;
        }

        return message;
    }

    public static Proto.ExecExit ToProto(this Corral.Supervision.ExecResult result)
    {
        var message = new Proto.ExecExit
        {
            ExecId = result.ExecId,
            ExitCode = result.ExitCode,
            TimedOut = result.TimedOut,
            StartedAt = Timestamp.FromDateTimeOffset(result.StartedAt),
            ExitedAt = Timestamp.FromDateTimeOffset(result.ExitedAt),
            DurationMs = result.DurationMs,
            SandboxEnded = result.SandboxEnded,
        };
        if (result.Signal is { } signal)
        {
            message.Signal = signal;
        }

        return message;
    }

    public static Proto.ExecInfo ToProto(this Corral.Supervision.ContainerExec exec)
    {
        var completion = exec.Completion;
        var message = new Proto.ExecInfo
        {
            ExecId = exec.ExecId,
            SandboxId = exec.ContainerId,
            Pid = exec.Pid ?? 0,
            State = completion.IsCompleted ? Proto.ExecState.Exited : Proto.ExecState.Running,
            StartedAt = Timestamp.FromDateTimeOffset(exec.StartedAt),
        };
        message.Command.AddRange(exec.Command);
        if (completion.IsCompletedSuccessfully)
        {
            message.Exit = completion.Result.ToProto();
        }

        return message;
    }
}
