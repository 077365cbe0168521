"""Experiment: the start-time cost of the writable root (and of --disk) against --read-only, and
`corral cp` throughput against tar piped through `corral exec` into the same sandbox."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time

import benchlib as b
import exp_daemon


def _timed(cmd, timeout=300, **kw):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=b.ENV, **kw)
    return r, (time.perf_counter() - t0) * 1000.0


def _shell_timed(script, timeout=300):
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-o", "pipefail", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=b.ENV)
    return r, (time.perf_counter() - t0) * 1000.0


MODES = (("read-only", ["--read-only"]), ("writable", []), ("writable --disk 1Gi", ["--disk", "1Gi"]))


def rootfs(ctx) -> b.Result:
    res = b.Result("rootfs", "Filesystem: the writable root's start-time cost, and cp throughput")
    failures = []
    _lifecycle(ctx, res, failures)
    _copy(ctx, res, failures)
    if failures:
        res.notes.append(f"{len(failures)} runs failed and are left out; first: {failures[0]}")
        if len(failures) > 3:
            res.status, res.reason = "failed", failures[0]
    return res


def _lifecycle(ctx, res, failures):
    reps = ctx.reps(full=20, quick=3)
    samples = {}
    for rt in b.RUNTIMES:
        for i in range(reps + 1):  # the first round warms caches and is dropped
            for mode, extra in MODES:
                name = b.unique("rootfs")
                result = f"/tmp/{name}.json"
                r, ms = _timed(b.corral_run_cmd(rt, name, result, ["/bin/true"], extra=extra))
                if os.path.exists(result):
                    os.unlink(result)
                if r.returncode != 0:
                    failures.append(f"{mode} {rt}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()[-200:]}")
                    continue
                if i > 0:
                    samples.setdefault((rt, mode), []).append(ms)
    t = b.Table(f"Lifecycle of `/bin/true` by root filesystem mode ({reps} runs each, interleaved, after one warm-up round; ms)",
                ["runtime", "root", "n", "median ms", "p99 ms", "- read-only (median)", "ratio vs read-only (median)"])
    for rt in b.RUNTIMES:
        ro = samples.get((rt, "read-only"))
        base = b.median(ro) if ro else None
        for mode, _ in MODES:
            xs = samples.get((rt, mode), [])
            if not xs:
                continue
            m = b.median(xs)
            t.rows.append([rt, mode, len(xs), b.fmt(m), b.fmt(b.percentile(xs, 99)),
                           b.fmt(m - base) if base is not None and mode != "read-only" else "-", b.ratio(m, base)])
    t.notes += [
        "Each run is " + b.cli_description().replace(" ...", " --runtime R --rootfs DEFAULT --name ID --result-file F [--read-only | --disk 1Gi] -- /bin/true")
        + ", request to CLI return, cleanup included.",
        "read-only: the root filesystem directory as it is (no overlay), a tmpfs /tmp. writable (the default): an overlay of that "
        "directory with the container's own upper layer on the host disk, mounted and removed per container; gVisor runs with "
        "`--file-access=shared` (so that files copied in are seen at once). --disk 1Gi: the upper layer on a 1 GiB sparse ext4 "
        "image made (mkfs.ext4) and loop-mounted per container.",
    ]
    res.tables.append(t)


def _copy(ctx, res, failures):
    grpc, pb, pbg = exp_daemon._stubs()
    mb = 64 if ctx.quick else 200
    rounds = ctx.reps(full=3, quick=1)
    work = tempfile.mkdtemp(prefix="corral-bench-cp-")
    daemon = exp_daemon.Daemon(grpc, pb, pbg)
    host = ["--host", "unix://" + daemon.socket]
    t = b.Table(f"Copying into and out of a running sandbox: `corral cp` against `tar | corral exec -i -- tar` ({rounds} rounds; MiB/s for the file, ms for the tree)",
                ["runtime", "what", "direction", "corral cp", "tar through exec", "cp / tar"])
    try:
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
        digest = hashlib.sha256(open(big, "rb").read()).hexdigest()
        tree = os.path.join(work, "tree")
        for i in range(1000):
            d = os.path.join(tree, f"d{i % 10}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i}.txt"), "w") as f:
                f.write("x" * (i * 7))
        for rt in b.RUNTIMES:
            sid = daemon.stub.Create(pb.CreateRequest(rootfs=b.ROOTFS, runtime=exp_daemon._runtime(pb, rt), idle=True)).id
            try:
                _wait_running(daemon, pb, sid)
                results = {}
                for _ in range(rounds):
                    for what, src, size in (("200 MiB file" if not ctx.quick else f"{mb} MiB file", big, mb), ("1,000 files", tree, None)):
                        name = os.path.basename(src)
                        for method in ("cp", "tar"):
                            _run_ok(daemon, pb, sid, ["rm", "-rf", "/srv/" + name], failures)
                            if method == "cp":
                                r, ms_in = _timed(b.corral_cmd(*host, "cp", src, f"{sid}:/srv/"))
                            else:
                                r, ms_in = _shell_timed(f"tar -C {work} -cf - {name} | {' '.join(b.corral_cmd(*host, 'exec', '-i', sid, '--', 'tar', '-xf', '-', '-C', '/srv'))}")
                            if r.returncode != 0:
                                failures.append(f"{method} in {rt}: {r.stderr.decode(errors='replace').strip()[-200:]}")
                                continue
                            out = os.path.join(work, f"out-{method}")
                            shutil.rmtree(out, ignore_errors=True)
                            os.makedirs(out)
                            if method == "cp":
                                r, ms_out = _timed(b.corral_cmd(*host, "cp", f"{sid}:/srv/{name}", out))
                            else:
                                r, ms_out = _shell_timed(f"{' '.join(b.corral_cmd(*host, 'exec', sid, '--', 'tar', '-cf', '-', '-C', '/srv', name))} | tar -C {out} -xf -")
                            if r.returncode != 0:
                                failures.append(f"{method} out {rt}: {r.stderr.decode(errors='replace').strip()[-200:]}")
                                continue
                            if size and hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest() != digest:
                                failures.append(f"{method} {rt}: the file came back different")
                                continue
                            results.setdefault((what, "in", method), []).append(ms_in)
                            results.setdefault((what, "out", method), []).append(ms_out)
                for what, size in (("200 MiB file" if not ctx.quick else f"{mb} MiB file", mb), ("1,000 files", None)):
                    for direction in ("in", "out"):
                        cp = results.get((what, direction, "cp"))
                        tar = results.get((what, direction, "tar"))
                        if not cp or not tar:
                            continue
                        mcp, mtar = b.median(cp), b.median(tar)
                        if size:
                            t.rows.append([rt, what, direction, f"{b.fmt(size / (mcp / 1000.0))} MiB/s", f"{b.fmt(size / (mtar / 1000.0))} MiB/s", b.ratio(mtar, mcp)])
                        else:
                            t.rows.append([rt, what, direction, f"{b.fmt(mcp)} ms", f"{b.fmt(mtar)} ms", b.ratio(mtar, mcp)])
            finally:
                try:
                    daemon.stub.Kill(pb.KillRequest(id=sid, signal="KILL"))
                except grpc.RpcError:
                    pass
                _remove(daemon, pb, grpc, sid)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    t.notes += [
        "One idle sandbox per runtime in `corral serve` (default root: writable), the default image; the medians of each way. "
        "cp: " + b.cli_description().replace(" run ...", " --host unix://SOCK cp SRC ID:/srv/") + " and back to an empty host directory "
        "(CopyIn/CopyOut: a tar stream over gRPC, unpacked by the daemon inside the sandbox's root with directory fds). "
        "tar: `tar -cf - SRC | corral exec -i ID -- tar -xf - -C /srv` and `corral exec ID -- tar -cf - -C /srv NAME | tar -xf -` "
        "(the same bytes through the exec's stdin/stdout and the sandbox's own tar).",
        "cp / tar: how many times faster cp is (tar's median time over cp's; above 1: cp is faster). The file is random bytes, "
        "checked by SHA-256 after each way out; the tree is 1,000 files of 0-7 KB in 10 directories.",
    ]
    res.tables.append(t)


def _wait_running(daemon, pb, sid):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = daemon.stub.Inspect(pb.InspectRequest(id=sid))
        if info.state == pb.SANDBOX_STATE_RUNNING:
            return
        time.sleep(0.05)
    raise RuntimeError(f"sandbox {sid} did not start")


def _run_ok(daemon, pb, sid, command, failures):
    r = subprocess.run(b.corral_cmd("--host", "unix://" + daemon.socket, "exec", sid, "--", *command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=b.ENV)
    if r.returncode != 0:
        failures.append(f"exec {command}: {r.stderr.decode(errors='replace').strip()[-200:]}")


def _remove(daemon, pb, grpc, sid):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            daemon.stub.Remove(pb.RemoveRequest(id=sid, force=True))
            return
        except grpc.RpcError:
            time.sleep(0.1)
