"""The client: a connection to the daemon, sandboxes, and processes run inside them."""
from __future__ import annotations

import datetime
import io
import os
import queue
import re
import tarfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import duration_pb2

from ._generated.corral.v1 import corral_pb2 as pb
from ._generated.corral.v1 import corral_pb2_grpc as pb_grpc
from .errors import CorralError, FailedPreconditionError, InvalidArgumentError, NotFoundError, from_rpc_error

DEFAULT_SOCKET = "/run/corral/corral.sock"

_RUNTIMES = {"gvisor": pb.RUNTIME_GVISOR, "runsc": pb.RUNTIME_GVISOR, "runc": pb.RUNTIME_RUNC}
_STATES = {
    pb.SANDBOX_STATE_CREATED: "created",
    pb.SANDBOX_STATE_RUNNING: "running",
    pb.SANDBOX_STATE_EXITED: "exited",
    pb.SANDBOX_STATE_FAILED: "failed",
}
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "b": 1}


def parse_size(size: Union[int, str, None]) -> int:
    """Bytes from 128Mi, 1Gi, 512M, 64k or a plain number; 0 for None (no limit)."""
    if size is None:
        return 0
    if isinstance(size, int):
        if size < 0:
            raise InvalidArgumentError(f"invalid size {size}: must not be negative")
        return size
    match = re.fullmatch(r"\s*(\d+)\s*([KkMmGg]i?|[Bb])?\s*", size)
    if not match:
        raise InvalidArgumentError(f"invalid size {size!r}: use bytes or a number with K, M, G, Ki, Mi or Gi")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


def _duration(seconds: Optional[float]) -> Optional[duration_pb2.Duration]:
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _time(ts) -> Optional[datetime.datetime]:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=datetime.timezone.utc)


def _optional(message, name: str):
    return getattr(message, name) if message.HasField(name) else None


@dataclass(frozen=True)
class OomEvent:
    kind: str
    at: Optional[datetime.datetime]
    oom_kills: int
    detail: str


@dataclass(frozen=True)
class ExitRecord:
    """How a sandbox ended: every field of Corral's exit record."""

    id: str
    runtime: str
    command: List[str]
    exit_code: int
    signal: Optional[str]
    pid: Optional[int]
    started_at: Optional[datetime.datetime]
    exited_at: Optional[datetime.datetime]
    duration_ms: float
    timed_out: bool
    oom_killed: bool
    oom_reason: Optional[str]
    oom_kills: int
    oom_likely: bool
    oom_strategy: Optional[str]
    oom_events: List[OomEvent] = field(default_factory=list)
    memory_limit_bytes: Optional[int] = None
    peak_memory_bytes: Optional[int] = None
    cpu_usage_ns: Optional[int] = None
    stdout_tail: str = ""
    stderr_tail: str = ""

    @staticmethod
    def from_proto(r: "pb.ExitRecord") -> "ExitRecord":
        return ExitRecord(
            id=r.id,
            runtime=r.runtime,
            command=list(r.command),
            exit_code=r.exit_code,
            signal=_optional(r, "signal"),
            pid=_optional(r, "pid"),
            started_at=_time(r.started_at),
            exited_at=_time(r.exited_at),
            duration_ms=r.duration_ms,
            timed_out=r.timed_out,
            oom_killed=r.oom_killed,
            oom_reason=_optional(r, "oom_reason"),
            oom_kills=r.oom_kills,
            oom_likely=r.oom_likely,
            oom_strategy=_optional(r, "oom_strategy"),
            oom_events=[OomEvent(e.kind, _time(e.at), e.oom_kills, e.detail) for e in r.oom_events],
            memory_limit_bytes=_optional(r, "memory_limit_bytes"),
            peak_memory_bytes=_optional(r, "peak_memory_bytes"),
            cpu_usage_ns=_optional(r, "cpu_usage_ns"),
            stdout_tail=r.stdout_tail,
            stderr_tail=r.stderr_tail,
        )


class Client:
    """A connection to a Corral daemon.

    ``host``: ``unix:///PATH`` (or a plain path), or ``tcp://HOST:PORT`` with ``token`` (the daemon's
    ``--token-file``); by default ``$CORRAL_HOST``, else the Unix socket /run/corral/corral.sock.
    ``token`` defaults to ``$CORRAL_TOKEN``. Every call raises a :class:`CorralError` subclass on refusal.
    """

    def __init__(self, host: Optional[str] = None, token: Optional[str] = None, timeout: Optional[float] = None) -> None:
        host = host or os.environ.get("CORRAL_HOST") or "unix://" + DEFAULT_SOCKET
        token = token if token is not None else os.environ.get("CORRAL_TOKEN")
        if host.startswith("/"):
            host = "unix://" + host
        if host.startswith("unix://"):
            target = host
        elif host.startswith("tcp://"):
            target = host[len("tcp://"):]
        else:
            raise InvalidArgumentError(f"invalid host {host!r}: use unix:///PATH or tcp://HOST:PORT")
        self.host = host
        self.timeout = timeout
        # Kestrel wants an ordinary :authority; gRPC's default for a Unix socket is the path.
        self._channel = grpc.insecure_channel(target, options=[("grpc.default_authority", "localhost")])
        self._metadata: Tuple[Tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.stub = pb_grpc.SandboxesStub(self._channel)

    def call(self, method, request, timeout: Optional[float] = None):
        """One unary call; gRPC errors become :class:`CorralError` subclasses."""
        try:
            return method(request, metadata=self._metadata, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def stream(self, method, request) -> Iterator:
        try:
            for item in method(request, metadata=self._metadata):
                yield item
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        return self._metadata

    def sandbox(self, sandbox_id: str) -> "Sandbox":
        """A handle on an existing sandbox (NotFoundError if there is none)."""
        info = self.call(self.stub.Inspect, pb.InspectRequest(id=sandbox_id))
        sandbox = Sandbox(client=self, runtime=info.runtime or "gvisor")
        sandbox.id = info.id
        return sandbox

    def list(self, labels: Optional[Mapping[str, str]] = None) -> List[dict]:
        response = self.call(self.stub.List, pb.ListRequest(label_selector=dict(labels or {})))
        return [{"id": s.id, "state": _STATES.get(s.state, "unknown"), "runtime": s.runtime, "labels": dict(s.labels)} for s in response.sandboxes]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default_client: Optional[Client] = None
_default_lock = threading.Lock()


def _port(text: str) -> "pb.PortMapping":
    """[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], split only: the daemon checks the values."""
    body, _, protocol = str(text).partition("/")
    parts = body.split(":")
    if len(parts) not in (2, 3) or not all(x.isdigit() for x in parts[-2:]):
        raise InvalidArgumentError(f"invalid port {text!r}: use [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]")
    host_ip = parts[0] if len(parts) == 3 else ""
    return pb.PortMapping(host_ip=host_ip, host_port=int(parts[-2]), container_port=int(parts[-1]), protocol=protocol)


def _volume(text: str) -> "pb.Mount":
    """A bind mount as the CLI's -v writes it: HOST:CONTAINER[:ro|rw][,create] (the daemon checks the paths)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidArgumentError(f"invalid volume {text!r}: expected HOST_PATH:CONTAINER_PATH[:ro|rw]")
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [o for o in options if o not in ("ro", "rw", "create")]
    if unknown:
        raise InvalidArgumentError(f"invalid volume {text!r}: unknown option {unknown[0]!r} (use ro, rw or create)")
    return pb.Mount(type=pb.Mount.BIND, source=parts[0], target=parts[1], read_only="ro" in options, create_source="create" in options)


def _tmpfs(text: str) -> "pb.Mount":
    """A tmpfs as the CLI's --tmpfs writes it: CONTAINER[:size=SIZE]."""
    target, _, options = text.partition(":")
    size = 0
    for option in filter(None, options.split(",")):
        if not option.startswith("size="):
            raise InvalidArgumentError(f"invalid tmpfs {text!r}: unknown option {option!r} (use size=SIZE)")
        size = parse_size(option[len("size="):])
    return pb.Mount(type=pb.Mount.TMPFS, target=target, size_bytes=size)


def _client() -> Client:
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client()
        return _default_client


class Sandbox:
    """A sandbox on the daemon. ``Sandbox(cpu=1, memory="128Mi", runtime="gvisor").create()`` starts
    one that idles and takes processes (``sandbox.process.exec(...)``); with ``command`` it runs that as
    PID 1 instead (``sandbox.wait()`` returns its :class:`ExitRecord`). ``image`` names an image in the
    daemon host's store; ``rootfs`` a directory there; with neither, the host's default image.
    As a context manager it is created on entry (if not yet) and terminated and removed on exit."""

    def __init__(
        self,
        cpu: Optional[float] = None,
        memory: Union[int, str, None] = None,
        image: Optional[str] = None,
        runtime: str = "gvisor",
        *,
        rootfs: Optional[str] = None,
        command: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        pids: Optional[int] = None,
        timeout: Optional[float] = None,
        labels: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        network: Optional[str] = None,
        ports: Optional[Sequence[str]] = None,
        egress: Optional[Sequence[str]] = None,
        dns: Optional[Sequence[str]] = None,
        read_only: bool = False,
        disk: Union[int, str, None] = None,
        volumes: Optional[Sequence[str]] = None,
        tmpfs: Optional[Sequence[str]] = None,
        user: Optional[str] = None,
        client: Optional[Client] = None,
    ) -> None:
        if runtime not in _RUNTIMES:
            raise InvalidArgumentError(f"invalid runtime {runtime!r}: use gvisor or runc")
        if network not in (None, "none", "bridge"):
            raise InvalidArgumentError(f"invalid network {network!r}: use none or bridge")
        self.cpu = cpu
        self.memory_bytes = parse_size(memory)
        self.image = image
        self.runtime = runtime
        self.rootfs = rootfs
        self.command = list(command or [])
        self.env = dict(env or {})
        self.workdir = workdir
        self.pids = pids
        self.timeout = timeout
        self.labels = dict(labels or {})
        self.name = name
        # network: None takes the daemon's default; ports as the CLI's -p ("8080:80", "0:53/udp",
        # "0.0.0.0:80:80"), egress as its --egress ("none", "allow-cidr=10.213.0.7/32"); the daemon checks them.
        self.network = network
        self.ports = [_port(p) for p in (ports or [])]
        self.egress = list(egress or [])
        self.dns = list(dns or [])
        # The root is the sandbox's own writable layer unless read_only; disk caps it ("1Gi"); volumes
        # as the CLI's -v ("/host:/data:ro"), tmpfs as its --tmpfs ("/scratch:size=64Mi"); user as --user.
        self.read_only = read_only
        self.disk_bytes = parse_size(disk)
        self.mounts = [_volume(v) for v in (volumes or [])] + [_tmpfs(t) for t in (tmpfs or [])]
        self.user = user
        self.client = client or _client()
        self.id: Optional[str] = None
        self._exit: Optional[ExitRecord] = None

    # -- lifecycle -----------------------------------------------------------------------------
    def create(self) -> "Sandbox":
        if self.id is not None:
            raise FailedPreconditionError(f"sandbox {self.id} was already created")
        request = pb.CreateRequest(
            rootfs=self.rootfs or "",
            command=self.command,
            env=self.env,
            workdir=self.workdir or "",
            runtime=_RUNTIMES[self.runtime],
            cpus=float(self.cpu or 0),
            memory_bytes=self.memory_bytes,
            pids=int(self.pids or 0),
            labels=self.labels,
            name=self.name or "",
            image=self.image or "",
            idle=not self.command and bool(self.image),
            read_only=self.read_only,
            disk_bytes=self.disk_bytes,
            mounts=self.mounts,
            user=self.user or "",
        )
        if self.timeout is not None:
            request.timeout.CopyFrom(_duration(self.timeout))
        if self.network is not None or self.ports or self.egress or self.dns:
            spec = request.network
            spec.mode = pb.NETWORK_MODE_BRIDGE if self.network == "bridge" else pb.NETWORK_MODE_NONE if self.network == "none" else pb.NETWORK_MODE_UNSPECIFIED
            spec.ports.extend(self.ports)
            for item in self.egress:
                if item == "none":
                    spec.egress_none = True
                elif item.startswith("allow-cidr="):
                    spec.egress_allow_cidrs.extend(item[len("allow-cidr="):].split(","))
                elif item.startswith("deny-cidr="):
                    spec.egress_deny_cidrs.extend(item[len("deny-cidr="):].split(","))
                else:
                    raise InvalidArgumentError(f"invalid egress {item!r}: use none, allow-cidr=CIDR[,CIDR] or deny-cidr=CIDR[,CIDR]")
            spec.dns.extend(self.dns)
        self.id = self.client.call(self.client.stub.Create, request).id
        return self

    def _require_id(self) -> str:
        if self.id is None:
            raise FailedPreconditionError("the sandbox was not created yet: call create() first")
        return self.id

    # -- files ---------------------------------------------------------------------------------
    def upload(self, path: str, tar: bytes) -> int:
        """Sends an uncompressed tar to ``path`` in the sandbox (an existing directory gets its entries;
        a missing path takes the name of its one top-level entry). Returns the bytes taken."""
        sandbox_id = self._require_id()

        def requests():
            yield pb.CopyInRequest(id=sandbox_id, path=path)
            for offset in range(0, len(tar), 1 << 20):
                yield pb.CopyInRequest(data=tar[offset:offset + (1 << 20)])

        return self.client.call(self.client.stub.CopyIn, requests()).bytes

    def download(self, path: str) -> bytes:
        """An uncompressed tar of ``path`` (a file or a tree) in the sandbox."""
        return b"".join(chunk.data for chunk in self.client.stream(self.client.stub.CopyOut, pb.CopyOutRequest(id=self._require_id(), path=path)))

    def write_file(self, path: str, data: Union[bytes, str], mode: int = 0o644) -> None:
        """Creates or replaces the file ``path`` in the sandbox; it belongs to the sandbox's user."""
        content = data.encode() if isinstance(data, str) else data
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise InvalidArgumentError(f"invalid path {path!r}: names no file")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            archive.addfile(info, io.BytesIO(content))
        self.upload(path, buffer.getvalue())

    def read_file(self, path: str) -> bytes:
        """The content of the regular file ``path`` in the sandbox (running, or ended and not removed)."""
        with tarfile.open(fileobj=io.BytesIO(self.download(path)), mode="r:") as archive:
            members = archive.getmembers()
            if len(members) != 1 or not members[0].isfile():
                raise InvalidArgumentError(f"{path!r} is not a regular file in sandbox {self.id}")
            return archive.extractfile(members[0]).read()

    @property
    def process(self) -> "Processes":
        """Processes inside the sandbox: ``sandbox.process.exec("python3", "-c", "...")``."""
        return Processes(self)

    def wait(self, timeout: Optional[float] = None) -> ExitRecord:
        """Blocks until the sandbox ended; its exit record."""
        if self._exit is None:
            record = self.client.call(self.client.stub.Wait, pb.WaitRequest(id=self._require_id()), timeout=timeout)
            self._exit = ExitRecord.from_proto(record)
        return self._exit

    def kill(self, signal: str = "TERM", grace: Optional[float] = None) -> None:
        request = pb.KillRequest(id=self._require_id(), signal=signal)
        if grace is not None:
            request.grace.CopyFrom(_duration(grace))
        self.client.call(self.client.stub.Kill, request)

    def remove(self, force: bool = False) -> None:
        self.client.call(self.client.stub.Remove, pb.RemoveRequest(id=self._require_id(), force=force))

    def terminate(self, grace: float = 10.0) -> Optional[ExitRecord]:
        """SIGTERM (SIGKILL after ``grace``) if it still runs, wait for its end, then remove it: nothing
        of it is left. Returns its exit record (None if it never ran)."""
        sandbox_id = self._require_id()
        try:
            self.kill("TERM", grace)
        except FailedPreconditionError:
            pass  # it had ended already
        except NotFoundError:
            return self._exit
        record: Optional[ExitRecord]
        try:
            record = self.wait()
        except CorralError:
            record = None  # it failed to start: nothing to wait for
        try:
            self.remove(force=True)
        except NotFoundError:
            pass
        return record if record is not None else self._exit if self.id == sandbox_id else None

    def info(self) -> dict:
        i = self.client.call(self.client.stub.Inspect, pb.InspectRequest(id=self._require_id()))
        return {
            "id": i.id,
            "state": _STATES.get(i.state, "unknown"),
            "runtime": i.runtime,
            "command": list(i.command),
            "labels": dict(i.labels),
            "pid": i.pid or None,
            "exit": ExitRecord.from_proto(i.exit) if i.HasField("exit") else None,
            "error": i.error or None,
            # A bridged sandbox's address and published ports (host port chosen for each 0), once up.
            "network": {
                "address": i.network.address,
                "gateway": i.network.gateway,
                "ports": [{"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port, "protocol": p.protocol}
                          for p in i.network.ports],
            } if i.HasField("network") else None,
        }

    @property
    def state(self) -> str:
        return self.info()["state"]

    def stats(self) -> dict:
        s = self.client.call(self.client.stub.Stats, pb.StatsRequest(id=self._require_id()))
        return {
            "memory_current_bytes": s.memory_current_bytes,
            "memory_peak_bytes": _optional(s, "memory_peak_bytes"),
            "memory_limit_bytes": _optional(s, "memory_limit_bytes"),
            "cpu_usage_ns": s.cpu_usage_ns,
            "pids_current": s.pids_current,
            "pids_limit": _optional(s, "pids_limit"),
            "oom_kills": s.oom_kills,
            "network_rx_bytes": _optional(s, "network_rx_bytes"),
            "network_tx_bytes": _optional(s, "network_tx_bytes"),
        }

    def logs(self, follow: bool = False) -> Iterator[Tuple[str, bytes]]:
        """Its output in write order: ("stdout" | "stderr", bytes)."""
        for chunk in self.client.stream(self.client.stub.Logs, pb.LogsRequest(id=self._require_id(), follow=follow)):
            yield ("stderr" if chunk.stream == pb.LOG_STREAM_STDERR else "stdout", chunk.data)

    def _oom_kills(self) -> Optional[int]:
        try:
            return self.stats()["oom_kills"]
        except CorralError:
            return None

    def __enter__(self) -> "Sandbox":
        if self.id is None:
            self.create()
        return self

    def __exit__(self, *exc) -> None:
        if self.id is not None:
            self.terminate(grace=2.0)

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, runtime={self.runtime!r})"


class Processes:
    """``sandbox.process``: starts processes inside a running sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def exec(
        self,
        *command: Union[str, Sequence[str]],
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        interactive: bool = False,
    ) -> "Process":
        """Starts ``command`` (``exec("ls", "-l")`` or ``exec(["ls", "-l"])``) with the sandbox's own user,
        capabilities and limits; returns once it started. ``stdin``: bytes written, then closed (none:
        closed at once). ``interactive=True`` keeps stdin open for :meth:`Process.write` until
        :meth:`Process.close_stdin`. ``timeout``: SIGKILL after this many seconds (``timed_out``)."""
        args: List[str] = list(command[0]) if len(command) == 1 and not isinstance(command[0], str) else [str(c) for c in command]
        return Process(self._sandbox, args, env or {}, workdir, timeout, stdin, interactive)


class OutputStream:
    """One of a process's output streams, as it arrives. ``read()`` blocks until the process ended and
    returns what was not read yet; iterating yields chunks live."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._chunks: List[bytes] = []
        self._read = 0
        self._closed = False
        self._cond = threading.Condition()

    def _append(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self._cond.notify_all()

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, timeout: Optional[float] = None) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed, timeout):
                raise TimeoutError(f"{self.name} still open after {timeout}s")
            data = b"".join(self._chunks[self._read:])
            self._read = len(self._chunks)
            return data

    def text(self, encoding: str = "utf-8") -> str:
        return self.read().decode(encoding, errors="replace")

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._read < len(self._chunks) or self._closed)
                if self._read < len(self._chunks):
                    chunk = self._chunks[self._read]
                    self._read += 1
                elif self._closed:
                    return
                else:
                    continue
            yield chunk


_CLOSE = object()


class Process:
    """A process inside a sandbox: its live output, stdin, and how it ended (``exit_code``,
    ``signal``, ``timed_out``, ``oom_killed``)."""

    def __init__(
        self,
        sandbox: Sandbox,
        command: List[str],
        env: Mapping[str, str],
        workdir: Optional[str],
        timeout: Optional[float],
        stdin: Union[bytes, str, None],
        interactive: bool = False,
    ) -> None:
        self.sandbox = sandbox
        self.command = command
        self.stdout = OutputStream("stdout")
        self.stderr = OutputStream("stderr")
        self.exec_id: Optional[str] = None
        self.pid: Optional[int] = None
        self.exit_code: Optional[int] = None
        self.signal: Optional[str] = None
        self.timed_out = False
        self.sandbox_ended = False
        self.oom_killed = False
        self.started_at: Optional[datetime.datetime] = None
        self.exited_at: Optional[datetime.datetime] = None
        self._requests: "queue.Queue[object]" = queue.Queue()
        self._started = threading.Event()
        self._done = threading.Event()
        self._error: Optional[CorralError] = None
        client = sandbox.client
        self._oom_baseline = sandbox._oom_kills()
        if self._oom_baseline is None and sandbox.state == "created":
            self._oom_baseline = 0  # no container (nor cgroup) yet: nothing was killed so far
        start = pb.ExecStart(sandbox_id=sandbox._require_id(), command=command, env=dict(env), workdir=workdir or "")
        if timeout is not None:
            start.timeout.CopyFrom(_duration(timeout))
        self._requests.put(pb.ExecRequest(start=start))
        if stdin is not None:
            self.write(stdin)
        if not interactive:
            self._requests.put(None)  # the request stream's end closes the process's stdin
        self._call = client.stub.Exec(self._request_iterator(), metadata=client.metadata)
        self._reader = threading.Thread(target=self._read_responses, name=f"corral-exec-{command[0] if command else ''}", daemon=True)
        self._reader.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def _request_iterator(self):
        while True:
            item = self._requests.get()
            if item is _CLOSE:
                yield pb.ExecRequest(close_stdin=True)
                # Keep the request stream open: its end would also close stdin, but ending the call
                # early is not wanted either; the server ends it with the exit.
                self._done.wait()
                return
            if item is None:
                return
            yield item

    def _read_responses(self) -> None:
        try:
            for response in self._call:
                kind = response.WhichOneof("message")
                if kind == "started":
                    self.exec_id = response.started.exec_id
                    self.pid = response.started.pid or None
                    self._started.set()
                elif kind == "output":
                    (self.stderr if response.output.stream == pb.LOG_STREAM_STDERR else self.stdout)._append(response.output.data)
                elif kind == "exit":
                    e = response.exit
                    self.exit_code = e.exit_code
                    self.signal = _optional(e, "signal")
                    self.timed_out = e.timed_out
                    self.sandbox_ended = e.sandbox_ended
                    self.started_at = _time(e.started_at)
                    self.exited_at = _time(e.exited_at)
        except grpc.RpcError as error:
            self._error = from_rpc_error(error)
        finally:
            if self.exit_code is not None and self.exit_code != 0 and not self.timed_out:
                self.oom_killed = self._was_oom_killed()
            self.stdout._close()
            self.stderr._close()
            self._done.set()
            self._requests.put(None)
            self._started.set()

    def _was_oom_killed(self) -> bool:
        """The kernel killed it for memory: the sandbox's cgroup counted a new OOM kill while it ran,
        or the sandbox itself ended OOM-killed."""
        now = self.sandbox._oom_kills()
        if now is not None and self._oom_baseline is not None and now > self._oom_baseline:
            return True
        try:
            info = self.sandbox.info()
        except CorralError:
            return False
        if info["exit"] is not None:
            return bool(info["exit"].oom_killed)
        if self.sandbox_ended:
            # The sandbox died under the exec (gVisor ends it whole on an OOM kill; the daemon reports
            # the exec 137); its exit record follows (seconds later on a busy host: the shim reaps and
            # cleans up first) and says whether memory ended it.
            try:
                return bool(self.sandbox.wait(60).oom_killed)
            except Exception:  # noqa: BLE001 - no record in time: not known to be an OOM kill
                return False
        return False

    def write(self, data: Union[bytes, str]) -> None:
        """Bytes for the process's stdin (an ``interactive`` one, or before it started)."""
        self._requests.put(pb.ExecRequest(stdin=data.encode() if isinstance(data, str) else bytes(data)))

    def close_stdin(self) -> None:
        self._requests.put(_CLOSE)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Blocks until it ended; its exit code (N for exit(N), 128+S for signal S)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"process {self.exec_id} still running after {timeout}s")
        if self._error is not None:
            raise self._error
        assert self.exit_code is not None
        return self.exit_code

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def kill(self, signal: str = "KILL") -> None:
        if self.exec_id is None:
            return
        self.sandbox.client.call(self.sandbox.client.stub.KillExec, pb.KillExecRequest(sandbox_id=self.sandbox._require_id(), exec_id=self.exec_id, signal=signal))

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc) -> None:
        if self.running:
            try:
                self.kill()
            except CorralError:
                pass
            self._done.wait(30)

    def __repr__(self) -> str:
        return f"Process(exec_id={self.exec_id!r}, command={self.command!r}, exit_code={self.exit_code!r})"
