"""Experiment: the cost of `--network bridge` against `--network none`, and sandbox-to-sandbox throughput."""
from __future__ import annotations

import os
import re
import subprocess
import time

import benchlib as b

# Serves one TCP connection on 8080: counts what arrives, answers the count. Prints its own address first.
SERVER = r"""
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("10.213.0.1", 9)); print("addr=" + u.getsockname()[0], flush=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen(1)
c, _ = s.accept(); n = 0
while True:
    d = c.recv(1 << 20)
    if not d: break
    n += len(d)
c.sendall(str(n).encode()); c.close()
"""

# Sends MB mebibytes to ADDR:8080, then prints the rate it saw (the server's count acknowledged).
CLIENT = r"""
import socket, sys, time
addr, mb = sys.argv[1], int(sys.argv[2])
for _ in range(200):
    try:
        c = socket.create_connection((addr, 8080), timeout=5); break
    except OSError:
        time.sleep(0.05)
chunk = b"x" * (1 << 20); t = time.time()
for _ in range(mb): c.sendall(chunk)
c.shutdown(socket.SHUT_WR); n = int(c.recv(100)); dt = time.time() - t
print("bytes=%d seconds=%.4f" % (n, dt))
"""


def _timed(cmd, timeout=180):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, env=b.ENV)
    return r, (time.perf_counter() - t0) * 1000.0


def network(ctx) -> b.Result:
    res = b.Result("network", "Networking: --network bridge against none, and sandbox-to-sandbox throughput")
    reps = ctx.reps(full=20, quick=3)
    samples = {}
    failures = []
    for rt in b.RUNTIMES:
        for i in range(reps + 1):  # the first round warms caches and is dropped
            for mode in ("none", "bridge"):
                name = b.unique("net")
                r, ms = _timed(b.corral_run_cmd(rt, name, f"/tmp/{name}.json", ["/bin/true"], extra=["--network", mode]))
                if os.path.exists(f"/tmp/{name}.json"):
                    os.unlink(f"/tmp/{name}.json")
                if r.returncode != 0:
                    failures.append(f"{mode} {rt}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
                    continue
                if i > 0:
                    samples.setdefault((rt, mode), []).append(ms)
    t = b.Table(f"Lifecycle of `/bin/true` with and without a bridged network ({reps} runs each, interleaved, after one warm-up round; ms)",
                ["runtime", "network", "n", "median ms", "p99 ms", "bridge - none (median)", "ratio vs none (median)"])
    groups = []
    for rt in b.RUNTIMES:
        none = b.median(samples.get((rt, "none"), [])) if samples.get((rt, "none")) else None
        for mode in ("none", "bridge"):
            xs = samples.get((rt, mode), [])
            if not xs:
                continue
            m = b.median(xs)
            t.rows.append([rt, mode, len(xs), b.fmt(m), b.fmt(b.percentile(xs, 99)),
                           b.fmt(m - none) if mode == "bridge" and none is not None else "-", b.ratio(m, none)])
            groups.append((f"{rt}\n{mode}", xs))
    t.notes += [
        "Each run is " + b.cli_description().replace(" ...", " --runtime R --rootfs DEFAULT --name ID --result-file F --network MODE -- /bin/true")
        + ", request to CLI return (cleanup included): for bridge, the namespace, veth, address, DNS files and their removal.",
        "none: the runtime's own empty network namespace (loopback only).",
    ]
    res.tables.append(t)
    if groups:
        res.plots.append(b.box_plot(os.path.join(ctx.out, "network.png"), "Lifecycle with --network none and bridge (ms)", groups, "ms"))

    mb = 64 if ctx.quick else 256
    rounds = ctx.reps(full=3, quick=1)
    tp = b.Table(f"Sandbox-to-sandbox TCP throughput over the bridge ({mb} MiB per transfer, {rounds} transfers; MiB/s)",
                 ["runtime", "n", "median MiB/s", "min MiB/s", "max MiB/s"])
    for rt in b.RUNTIMES:
        rates = []
        for _ in range(rounds):
            rate, error = _transfer(rt, mb)
            if rate is None:
                failures.append(f"throughput {rt}: {error}")
            else:
                rates.append(rate)
        if rates:
            tp.rows.append([rt, len(rates), b.fmt(b.median(rates)), b.fmt(min(rates)), b.fmt(max(rates))])
    tp.notes += [
        "Two bridged sandboxes of the same runtime: a server, and a client allowed to reach it (`--egress allow-cidr=SERVER/32`; "
        "neighbours are blocked by default). The client sends 1 MiB `sendall` calls and times until the server acknowledges the count; "
        "the traffic is routed by the host between the two isolated bridge ports, through Corral's firewall.",
        "python3 in both sandboxes (the default image), so the figure includes the interpreter's copying, as a user's program would.",
    ]
    res.tables.append(tp)
    if failures:
        res.notes.append(f"{len(failures)} runs failed and are left out; first: {failures[0]}")
        if len(failures) > reps:
            res.status, res.reason = "failed", failures[0]
    return res


def _transfer(rt, mb):
    name = b.unique("nets")
    server = subprocess.Popen(b.corral_run_cmd(rt, name, f"/tmp/{name}.json", ["python3", "-c", SERVER], extra=["--network", "bridge"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=b.ENV)
    try:
        line = server.stdout.readline()
        m = re.match(r"addr=(\S+)", line)
        if not m:
            return None, f"the server printed no address: {line!r} {server.stderr.read()[-200:] if server.poll() is not None else ''}"
        addr = m.group(1)
        cname = b.unique("netc")
        r, _ = _timed(b.corral_run_cmd(rt, cname, f"/tmp/{cname}.json", ["python3", "-c", CLIENT, addr, str(mb)],
                                       extra=["--network", "bridge", "--egress", f"allow-cidr={addr}/32"]))
        if os.path.exists(f"/tmp/{cname}.json"):
            os.unlink(f"/tmp/{cname}.json")
        m = re.search(r"bytes=(\d+) seconds=([\d.]+)", r.stdout)
        if r.returncode != 0 or not m:
            return None, f"client exit {r.returncode}: {r.stderr.strip()[-200:]}"
        if int(m.group(1)) != mb << 20:
            return None, f"the server counted {m.group(1)} bytes of {mb << 20}"
        return (mb / float(m.group(2))), None
    finally:
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if os.path.exists(f"/tmp/{name}.json"):
            os.unlink(f"/tmp/{name}.json")
