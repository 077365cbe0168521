"""Experiment 3: OOM detection latency and a correctness matrix (Corral's watcher, the seed's RSS-95 % poller, podman)."""
from __future__ import annotations

import errno
import os
import re
import subprocess
import threading
import time

import benchlib as b

LIMIT = 64 << 20
LIMIT_ARG = "64Mi"
PRELUDE = (
    "import os, sys, time\n"
    "def rss():\n    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
    "def grab(n):\n    x = bytearray(max(0, n))\n    for i in range(0, len(x), 4096):\n        x[i] = 1\n    return x\n"
    f"L = {LIMIT}\n"
)
CHILD_WAIT = (
    "bad = 0\nfor p in pids:\n    _, st = os.waitpid(p, 0)\n    bad += os.WIFSIGNALED(st)\n"
    "print('children killed:', bad, flush=True)\nos._exit(0)\n"
)
# name -> (description, workload, runtimes, corral memory, podman memory)
CASES = {
    "steady90": ("steady at 90 % of the limit for 2 s", "x = grab(int(L * 0.90) - rss())\ntime.sleep(2)\n", b.RUNTIMES, LIMIT_ARG, "64m"),
    "steady97": ("steady at 97 % of the limit for 2 s", "x = grab(int(L * 0.97) - rss())\ntime.sleep(2)\n", b.RUNTIMES, LIMIT_ARG, "64m"),
    "spike": ("50 % steady, then a spike to 110 % for 50 ms",
              "x = grab(int(L * 0.5) - rss())\ny = grab(int(L * 0.6))\ntime.sleep(0.05)\ndel y\ntime.sleep(1)\n", b.RUNTIMES, LIMIT_ARG, "64m"),
    "gradual": ("grows 1 MiB every 10 ms until killed", "c = []\nwhile True:\n    c.append(grab(1 << 20))\n    time.sleep(0.01)\n", b.RUNTIMES, LIMIT_ARG, "64m"),
    "children": ("4 children at 30 % each (120 % together); the parent survives",
                 "pids = []\nfor i in range(4):\n    p = os.fork()\n    if p == 0:\n        x = grab(int(L * 0.3))\n        time.sleep(3)\n        os._exit(0)\n    pids.append(p)\n" + CHILD_WAIT,
                 b.RUNTIMES, LIMIT_ARG, "64m"),
    "child_only": ("one child grows past the limit and is killed; PID 1 exits 0",
                   "p = os.fork()\nif p == 0:\n    c = []\n    while True:\n        c.append(grab(1 << 20))\n        time.sleep(0.01)\npids = [p]\n" + CHILD_WAIT,
                   b.RUNTIMES, LIMIT_ARG, "64m"),
    "probe": ("one 192 MiB allocation", "x = grab(3 * L)\n", (), LIMIT_ARG, "64m"),
    "livelock": ("gVisor at a too-small limit: 20 MB held in a 32 MiB sandbox cgroup", "x = grab(20 << 20)\ntime.sleep(5)\n", ("gvisor",), "8Mi", "32m"),
}
QUICK_CASES = ("steady90", "gradual")


class Kmsg:
    """Kernel OOM kills from /dev/kmsg, with their time converted to the realtime clock (approximately: printk's clock)."""

    def __init__(self):
        self.fd = None
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None
        self.lines = []

    def drain(self):
        while self.fd is not None:
            try:
                rec = os.read(self.fd, 8192).decode(errors="replace")
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    break
                if e.errno == errno.EPIPE:
                    continue
                raise
            head, _, msg = rec.partition(";")
            parts = head.split(",")
            if len(parts) >= 3 and msg.startswith("oom-kill:"):
                offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
                self.lines.append((int(parts[2]) / 1e6 + offset, msg.strip()))

    def kills(self, needle):
        self.drain()
        return [t for t, msg in self.lines if needle in msg]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)


class SeedPoller(threading.Thread):
    """The seed's fallback, emulated: every 500 ms, RSS of the supervised process tree against 95 % of the limit."""

    def __init__(self, root_pid, limit):
        super().__init__(daemon=True)
        self.root_pid, self.threshold, self.flag, self.peak = root_pid, 0.95 * limit, False, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            rss = sum(b.rss_bytes(p) for p in b.descendants(self.root_pid))
            self.peak = max(self.peak, rss)
            if rss >= self.threshold:
                self.flag = True


def _corral_event_time(stderr):
    for line in stderr.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) .*?(OOM kill|memory livelock)", line)
        if m:
            return b.parse_time(m.group(1))
    return None


def run_corral(rt, case, kmsg, memory=None):
    _, code, _, mem, _ = CASES[case]
    name = b.unique(f"oom-{case.replace('_', '')}")
    result = f"/tmp/{name}.json"
    cmd = b.corral_run_cmd(rt, name, result, ["python3", "-c", PRELUDE + code], extra=["--memory", memory or mem, "--timeout", "30s", "--log-level", "warning"])
    kmsg.drain()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=b.ENV)
    poller = SeedPoller(proc.pid, LIMIT if case != "livelock" else 8 << 20)
    poller.start()
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    poller.stop.set()
    poller.join()
    rec = b.read_record(result) or {}
    try:
        os.unlink(result)
    except OSError:
        pass
    kills = kmsg.kills(name)
    return {"name": name, "exit": proc.returncode, "record": rec, "seed": poller.flag, "seed_peak": poller.peak, "kills": kills,
            "event": _corral_event_time(err), "stderr": err, "stdout": out}


def run_podman(rt, case, kmsg):
    _, code, _, _, mem = CASES[case]
    name = b.unique(f"oomp-{case.replace('_', '')}")
    kmsg.drain()
    cmd = b.podman_cmd(rt, name, ["python3", "-c", PRELUDE + code], extra=["--memory", mem, "--memory-swap", mem])
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=45, env=b.ENV)
        code_ = r.returncode
    except subprocess.TimeoutExpired:
        code_ = "timeout (killed after 45 s)"
        b.run(["podman", "kill", name], timeout=60)
    insp = b.run(["podman", "inspect", name, "--format", "{{.Id}} {{.State.OOMKilled}} {{.State.ExitCode}}"], timeout=60).stdout.split()
    b.run(["podman", "rm", "-f", name], timeout=60)
    cid = insp[0] if insp else name
    return {"exit": code_, "oomKilled": (insp[1] == "true") if len(insp) > 1 else None, "kills": kmsg.kills(cid[:12])}


def probe(kmsg):
    """Whether `corral run --memory` creates a cgroup and an OOM watcher in this build."""
    r = run_corral("runc", "probe", kmsg)
    rec = r["record"]
    if not rec:
        return f"`corral run --memory {LIMIT_ARG}` wrote no exit record (exit {r['exit']}: {r['stderr'].strip()[-200:]})"
    if rec.get("oomStrategy") is None or not (rec.get("oomKilled") or rec.get("oomKills")):
        return (f"the CLI in this build does not watch for OOM: a runc container growing past --memory {LIMIT_ARG} ended with exit {rec.get('exitCode')}, "
                f"timedOut={rec.get('timedOut')}, oomStrategy={rec.get('oomStrategy')}, oomKilled={rec.get('oomKilled')}, oomKills={rec.get('oomKills')}, memoryLimitBytes={rec.get('memoryLimitBytes')} "
                "(the cgroup driver and OomWatcherFactory are not wired into CorralContext yet)")
    return None


def yes(x):
    return "yes" if x else "no"


def oom(ctx) -> b.Result:
    res = b.Result("oom", "OOM detection: latency and correctness")
    kmsg = Kmsg()
    try:
        if kmsg.fd is None:
            res.status, res.reason = "not run", "/dev/kmsg is not readable: no kernel truth for OOM kills"
            return res
        reason = None if os.environ.get("CORRAL_BENCH_SKIP_OOM_PROBE") else probe(kmsg)  # the variable is for developing the harness
        if reason:
            res.status, res.reason = "not run", reason
            return res
        podman_ok, podman_reason = b.podman_status() if not ctx.no_podman else (False, "disabled with --no-podman")
        cases = QUICK_CASES if ctx.quick else tuple(c for c in CASES if c != "probe")
        matrix = b.Table(f"Correctness matrix (limit {LIMIT_ARG} unless noted; one run per cell)",
                         ["case", "runtime", "kernel OOM kills (truth)", "exit", "Corral oomKilled / oomKills / reason", "Corral right?",
                          "seed RSS-95 % poller", "seed right?", "podman OOMKilled / exit / kernel kills", "podman right?"])
        score = {"corral": [0, 0], "seed": [0, 0], "podman": [0, 0]}
        for case in cases:
            desc, _, runtimes, _, _ = CASES[case]
            for rt in runtimes:
                r = run_corral(rt, case, kmsg)
                rec = r["record"]
                truth = len(r["kills"]) > 0 or case == "livelock"
                corral_says = bool(rec.get("oomKilled") or rec.get("oomKills"))
                row = [f"{case}: {desc}", rt, len(r["kills"]), r["exit"],
                       f"{yes(rec.get('oomKilled'))} / {rec.get('oomKills', '-')} / {rec.get('oomReason') or '-'}", yes(corral_says == truth),
                       f"{'OOM likely' if r['seed'] else 'nothing'} (peak {r['seed_peak'] / 2**20:.0f} MiB)", yes(r["seed"] == truth)]
                score["corral"][0] += corral_says == truth
                score["corral"][1] += 1
                score["seed"][0] += r["seed"] == truth
                score["seed"][1] += 1
                if podman_ok:
                    p = run_podman(rt, case, kmsg)
                    ptruth = len(p["kills"]) > 0 or case == "livelock"
                    row += [f"{yes(p['oomKilled'])} / {p['exit']} / {len(p['kills'])}", yes(bool(p["oomKilled"]) == ptruth)]
                    score["podman"][0] += bool(p["oomKilled"]) == ptruth
                    score["podman"][1] += 1
                else:
                    row += ["not run", "-"]
                matrix.rows.append(row)
        matrix.notes += [
            "Truth is the kernel's: `oom-kill:` records in /dev/kmsg naming the container's cgroup during that run. A detector is right when it reports memory "
            "trouble (Corral: oomKilled or oomKills > 0; seed: OOM likely; podman: OOMKilled) exactly when the kernel killed something in the container, "
            "except the livelock case, where the right answer is to report it although the kernel never kills.",
            f"Corral: {b.cli_description()} with `--memory {LIMIT_ARG} --timeout 30s` (livelock: `--memory 8Mi`, plus Corral's gVisor allowance).",
            "seed RSS-95 % poller: emulated by the harness during the same Corral run: every 500 ms the RSS of every process under the Corral CLI "
            "(runtime, sandbox, workload) against 95 % of the limit; it can only say \"likely\".",
            "podman: " + ("`podman --runtime BIN run --memory 64m --memory-swap 64m ...` (livelock: 32m), then `podman inspect` for State.OOMKilled." if podman_ok else f"not run: {podman_reason}"),
            "Score: " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in score.items() if v[1]),
        ]
        res.tables.append(matrix)

        # Detection latency: repeated gradual growth to the kill.
        n = ctx.reps(full=10, quick=2)
        lat = {}
        for rt in b.RUNTIMES:
            for _ in range(n):
                r = run_corral(rt, "gradual", kmsg)
                if not r["kills"]:
                    continue
                kill = min(r["kills"])
                if r["event"] is not None:
                    lat.setdefault((rt, "kernel kill to Corral's OOM event (log)"), []).append((r["event"] - kill) * 1000)
                if r["record"].get("exitedAt"):
                    lat.setdefault((rt, "kernel kill to exitedAt"), []).append((b.parse_time(r["record"]["exitedAt"]) - kill) * 1000)
        t = b.Table(f"OOM detection latency (gradual growth to the kill, {n} runs per runtime; ms)", ["runtime", "measure", "n", "median ms", "p99 ms", "max ms"])
        groups = []
        for (rt, what), xs in sorted(lat.items()):
            t.rows.append([rt, what, len(xs), b.fmt(b.median(xs)), b.fmt(b.percentile(xs, 99)), b.fmt(max(xs))])
            groups.append((f"{rt}\n{what[15:40]}", xs))
        t.notes += [
            "Kernel kill time: the timestamp of the `oom-kill:` record in /dev/kmsg, moved to the realtime clock with the current realtime-monotonic offset "
            "(printk's clock is close to CLOCK_MONOTONIC; expect about a millisecond of error). Corral's OOM event: the timestamp of its `OOM kill` "
            "warning log line (millisecond resolution).",
            "There is no bare-runtime reference for this: runc and runsc do not report OOM kills themselves; the seed's poller can only ever say \"likely\", 500 ms apart.",
        ]
        res.tables.append(t)
        if groups:
            res.plots.append(b.box_plot(os.path.join(ctx.out, "oom.png"), "OOM detection latency (ms)", groups, "ms"))
        return res
    finally:
        kmsg.close()
