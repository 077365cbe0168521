"""Experiment: the daemon path. A client's Create->Wait, Exec, and lifecycles at concurrency 1, 4 and 8
through `corral serve`, each alternating with the bare runtime on the same bundle (or into the same
container), and where the daemon's milliseconds go."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import benchlib as b

CLIENT_DIR = os.path.join(b.REPO, "clients", "python")
COMMAND = ["/bin/true"]
LEVELS = (1, 4, 8)


def _stubs():
    """The gRPC stubs of protos/corral/v1, generated for the Python client (Debian's grpcio and protoc)."""
    generated = os.path.join(CLIENT_DIR, "corral", "_generated", "corral", "v1", "corral_pb2.py")
    if not os.path.exists(generated):
        subprocess.run([os.path.join(b.REPO, "scripts", "install-deps.sh"), "python3-grpcio", "python3-protobuf", "protobuf-compiler",
                        "protobuf-compiler-grpc", "libprotobuf-dev"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([os.path.join(CLIENT_DIR, "generate.sh")], check=True)
    if CLIENT_DIR not in sys.path:
        sys.path.insert(0, CLIENT_DIR)
    import grpc
    from corral._generated.corral.v1 import corral_pb2 as pb
    from corral._generated.corral.v1 import corral_pb2_grpc as pbg
    return grpc, pb, pbg


class Daemon:
    """`./corral serve` on a socket and state dir of its own (built first if its sources changed; not timed)."""

    def __init__(self, grpc, pb, pbg, extra=()):
        self.pb = pb
        self.root = tempfile.mkdtemp(prefix="corral-bench-daemon-")
        self.socket = os.path.join(self.root, "corral.sock")
        self.log_path = os.path.join(self.root, "daemon.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [os.path.join(b.REPO, "corral"), "serve", "--socket", self.socket, "--state-dir", os.path.join(self.root, "state"),
             "--shim", b.CLI_NATIVE, "--log-format", "json", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=b.ENV)
        self.channel = grpc.insecure_channel("unix://" + self.socket)
        self.stub = pbg.SandboxesStub(self.channel)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.process.returncode}: {self.tail()}")
            try:
                self.stub.List(pb.ListRequest(), timeout=5)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not serve within 300 s: " + self.tail())
                time.sleep(0.2)
        self.events = {}  # (sandbox id, event type) -> daemon timestamp (s)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self):
        try:
            for e in self.stub.Events(self.pb.EventsRequest(follow=True)):
                self.events[(e.id, e.type)] = e.at.ToNanoseconds() / 1e9
        except Exception:  # the channel closes at the end
            pass

    def tail(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()[-600:]

    def stop(self):
        self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _runtime(pb, rt):
    return {"runc": pb.RUNTIME_RUNC, "crun": pb.RUNTIME_CRUN, "gvisor": pb.RUNTIME_GVISOR}[rt]


def _bare(cmd):
    r = b.run(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:1])} exited with {r.returncode}: {r.stderr.strip()[-200:]}")


def _lifecycle(d, pb, rt):
    """Create -> Wait through the daemon; Remove after, off the clock. Times (s, wall clock) for the phases."""
    t0 = time.time()
    p0 = time.perf_counter()
    sid = d.stub.Create(pb.CreateRequest(rootfs=b.ROOTFS, command=COMMAND, runtime=_runtime(pb, rt), name=b.unique("bd")), timeout=120).id
    p_created = time.perf_counter()
    rec = d.stub.Wait(pb.WaitRequest(id=sid), timeout=120)
    p1 = time.perf_counter()
    d.stub.Remove(pb.RemoveRequest(id=sid), timeout=60)
    if rec.exit_code != 0:
        raise RuntimeError(f"daemon {rt}: exit {rec.exit_code}")
    return {
        "id": sid, "t0": t0, "total_ms": (p1 - p0) * 1000, "create_ms": (p_created - p0) * 1000,
        "launched": rec.started_at.ToNanoseconds() / 1e9, "exited": rec.exited_at.ToNanoseconds() / 1e9, "returned": t0 + (p1 - p0),
    }


def _exec(d, pb, sid):
    responses = d.stub.Exec(iter([pb.ExecRequest(start=pb.ExecStart(sandbox_id=sid, command=["true"]))]), timeout=60)
    for r in responses:
        if r.HasField("exit"):
            if r.exit.exit_code != 0:
                raise RuntimeError(f"exec exited {r.exit.exit_code}")
            return
    raise RuntimeError("the exec stream ended without its exit")


def _throughput(n, workers, one):
    """Containers per second: n lifecycles by `workers` threads at once (the first error ends the experiment)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda _: one(), range(n)))
    return n / (time.perf_counter() - t0)


def daemon(ctx) -> b.Result:
    res = b.Result("daemon", "The daemon path: a client's Create->Wait and Exec next to the bare runtime")
    reps = ctx.reps(full=25, quick=3)
    grpc, pb, pbg = _stubs()
    d = Daemon(grpc, pb, pbg)
    d0 = None
    try:
        # The same daemon without ready shims: every Create starts its shim (what the pool saves, side by side).
        d0 = Daemon(grpc, pb, pbg, ["--shim-pool", "0"])
        bundle = b.make_bundle(COMMAND, "daemon-true")
        life = {}  # rt -> {"bare": [ms], "daemon": [phase dicts], "no_pool": [phase dicts]}
        for rt in b.LIFECYCLE_RUNTIMES:
            bare, runs, unpooled = [], [], []
            for i in range(reps + 1):  # round 0 warms caches and the daemon's JIT, and is dropped
                p0 = time.perf_counter()
                _bare(b.bare_cmd(rt, bundle, b.unique("bb")))
                ms = (time.perf_counter() - p0) * 1000
                run = _lifecycle(d, pb, rt)
                run0 = _lifecycle(d0, pb, rt)
                if i > 0:
                    bare.append(ms)
                    runs.append(run)
                    unpooled.append(run0)
            life[rt] = {"bare": bare, "daemon": runs, "no_pool": unpooled}

        t = b.Table(f"Lifecycle of `/bin/true` through the daemon ({reps} alternating rounds after one warm-up; ms)",
                    ["runtime", "bare run median", "daemon Create->Wait median", "p99", "added", "ratio", "goal", "without the shim pool"])
        goals = {"runc": 1.10, "crun": 1.10, "gvisor": 1.05}
        for rt, v in life.items():
            bm = b.median(v["bare"])
            dms = [r["total_ms"] for r in v["daemon"]]
            dm = b.median(dms)
            goal = goals[rt]
            um = b.median([r["total_ms"] for r in v["no_pool"]])
            t.rows.append([rt, b.fmt(bm), b.fmt(dm), b.fmt(b.percentile(dms, 99)), f"+{dm - bm:.1f}", b.ratio(dm, bm),
                           f"<= {goal:.2f}x: {'met' if dm / bm <= goal else 'missed'}", f"{b.fmt(um)} ({b.ratio(um, bm)})"])
        t.notes += [
            "bare: `" + " ".join(b.bare_cmd("runc", "BUNDLE", "ID")[:1]) + " run` of the bundle Corral's spec would give (" + b.SPEC_SOURCE + "), in the foreground; "
            "runsc with `--platform ptrace --network none --ignore-cgroups`, as Corral runs it. The runtime deletes its container on the way out.",
            "daemon: a Python gRPC client (Debian's grpcio, the client's generated stubs) on the daemon's unix socket: Create then Wait; "
            "Wait answers once everything the sandbox made on the host is gone. Remove follows off the clock.",
            "The goals are issue 11's (runc and crun share runc's).",
            "The daemon keeps two shims started and waiting (`corral serve --shim-pool 2`, the default); "
            "'without the shim pool': a second daemon with `--shim-pool 0`, in the same rounds, whose Creates start their shims.",
        ]
        res.tables.append(t)

        p = b.Table("Where the daemon's lifecycle milliseconds go (medians, ms; wall-clock stamps of the client, the shim's exit record and the daemon's events)",
                    ["runtime", "Create call", "request -> runtime launched", "runtime launched -> exit seen", "exit seen -> exited event",
                     "exited event -> Wait returned", "bare run (whole)"])
        for rt, v in life.items():
            for label, dd, runs in ((rt, d, v["daemon"]), (f"{rt} (no shim pool)", d0, v["no_pool"])):
                rows = [r for r in runs if (r["id"], pb.EVENT_TYPE_EXITED) in dd.events]
                if not rows:
                    p.rows.append([label, "no exited events seen", "", "", "", "", ""])
                    continue
                ev = [dd.events[(r["id"], pb.EVENT_TYPE_EXITED)] for r in rows]
                p.rows.append([
                    label,
                    b.fmt(b.median([r["create_ms"] for r in rows])),
                    b.fmt(b.median([(r["launched"] - r["t0"]) * 1000 for r in rows])),
                    b.fmt(b.median([(r["exited"] - r["launched"]) * 1000 for r in rows])),
                    b.fmt(b.median([(e - r["exited"]) * 1000 for r, e in zip(rows, ev)])),
                    b.fmt(b.median([(r["returned"] - e) * 1000 for r, e in zip(rows, ev)])),
                    b.fmt(b.median(v["bare"])),
                ])
        p.notes += [
            "Create call: admission, the sandbox's state dir and record, and telling a waiting shim its sandbox (no pool: starting the shim process); "
            "the call returns before the shim ran the runtime.",
            "request -> runtime launched: until the shim started the runtime (the exit record's startedAt): with no pool the shim's own start "
            "(a native AOT process), then in both its spec, its cgroup and bundle.",
            "runtime launched -> exit seen: the runtime's create/start, the workload, and the runtime's exit as the shim saw it (exitedAt); compare the bare run.",
            "exit seen -> exited event: the shim's cleanup (runtime delete, cgroup, bundle) and exit record, and the daemon reading it (inotify).",
            "exited event -> Wait returned: the daemon's answer reaching the client.",
        ]
        res.tables.append(p)

        ex = b.Table(f"Exec of `true` into a running sandbox ({reps * 2} alternating rounds after one warm-up; ms)",
                     ["runtime", "bare exec median", "daemon Exec median", "added", "ratio", "goal"])
        roots = {"runc": ("runc", "/run/corral/runc"), "crun": ("crun", "/run/corral/crun"), "gvisor": ("runsc", "/run/corral/runsc")}
        for rt in b.LIFECYCLE_RUNTIMES:
            sid = d.stub.Create(pb.CreateRequest(rootfs=b.ROOTFS, runtime=_runtime(pb, rt), name=b.unique("bx")), timeout=120).id
            try:
                deadline = time.monotonic() + 120
                while d.stub.Inspect(pb.InspectRequest(id=sid)).state != pb.SANDBOX_STATE_RUNNING:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{rt}: the exec sandbox never ran")
                    time.sleep(0.05)
                binary, root = roots[rt]
                bare, dae = [], []
                for i in range(reps * 2 + 1):
                    p0 = time.perf_counter()
                    _bare([binary, "--root", root, "exec", sid, "true"])
                    p1 = time.perf_counter()
                    _exec(d, pb, sid)
                    p2 = time.perf_counter()
                    if i > 0:
                        bare.append((p1 - p0) * 1000)
                        dae.append((p2 - p1) * 1000)
            finally:
                d.stub.Remove(pb.RemoveRequest(id=sid, force=True), timeout=120)
            bm, dm = b.median(bare), b.median(dae)
            ex.rows.append([rt, b.fmt(bm), b.fmt(dm), f"+{dm - bm:.1f}", b.ratio(dm, bm), f"<= 1.05x: {'met' if dm / bm <= 1.05 else 'missed'}"])
        ex.notes += ["bare: the runtime's `exec` into the daemon's own container (its runtime root); daemon: the Exec stream, start to ExecExit."]
        res.tables.append(ex)

        n = ctx.reps(full=48, quick=8)
        th = b.Table(f"Throughput: {n} lifecycles of `/bin/true` by K clients at once (containers/s)",
                     ["runtime", "K", "bare runs/s", "daemon runs/s", "ratio", "goal"])
        for rt in b.LIFECYCLE_RUNTIMES:
            for k in LEVELS:
                bare = _throughput(n, k, lambda: _bare(b.bare_cmd(rt, bundle, b.unique("bt"))))
                dae = _throughput(n, k, lambda: _lifecycle(d, pb, rt))
                th.rows.append([rt, k, b.fmt(bare), b.fmt(dae), b.ratio(dae, bare), f">= 0.90x: {'met' if dae / bare >= 0.9 else 'missed'}"])
        th.notes += ["Each client thread runs one lifecycle after another (bare: the runtime's `run`; daemon: Create, Wait, Remove)."]
        res.tables.append(th)
    finally:
        d.stop()
        if d0 is not None:
            d0.stop()
    return res
