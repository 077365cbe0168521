#!/usr/bin/env python3
"""Corral's benchmark harness: `./corral bench [--quick] [--out DIR] [--only NAME,...]`.

Runs each experiment in isolation (one failing is reported, the others still run), prints a table per
experiment, and writes <out>/<experiment>.md, <out>/*.png and <out>/README.md (machine, versions,
date, command). Exits non-zero only if an experiment failed to run; timing is never asserted.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def ensure_matplotlib():
    """Debian's python3-matplotlib: installed with apt when missing, and used through /usr/bin/python3."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    system = "/usr/bin/python3"

    def system_has_it():
        return os.path.exists(system) and subprocess.run([system, "-c", "import matplotlib"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    if not system_has_it():
        print("bench: installing python3-matplotlib with apt-get", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-qq", "python3-matplotlib"], env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-qq", "python3-matplotlib"], env=env, stdout=subprocess.DEVNULL)
    if os.path.realpath(sys.executable) != os.path.realpath(system) and system_has_it():
        os.execv(system, [system, os.path.abspath(__file__), *sys.argv[1:]])


ensure_matplotlib()

import benchlib as b  # noqa: E402
import exp_daemon  # noqa: E402
import exp_latency  # noqa: E402
import exp_network  # noqa: E402
import exp_rootfs  # noqa: E402
import exp_oom  # noqa: E402
import exp_scale  # noqa: E402

EXPERIMENTS = [
    ("lifecycle", exp_latency.lifecycle),
    ("exit_detection", exp_latency.exit_detection),
    ("oom", exp_oom.oom),
    ("throughput", exp_scale.throughput),
    ("density", exp_scale.density),
    ("daemon", exp_daemon.daemon),
    ("network", exp_network.network),
    ("rootfs", exp_rootfs.rootfs),
]


class Context:
    def __init__(self, args):
        self.quick = args.quick
        self.out = os.path.abspath(args.out)
        self.no_podman = args.no_podman
        self.scale = args.scale

    def reps(self, full, quick):
        return max(1, int(round((quick if self.quick else full) * self.scale)))


def setup():
    """The CLI build and the default image; returns a reason when the harness cannot run at all."""
    if not os.environ.get("CORRAL_BENCH_COMMAND"):  # not started by ./corral, which has just built it
        print("bench: building the CLI if needed (./corral --version)", file=sys.stderr)
        if subprocess.run([os.path.join(b.REPO, "corral"), "--version"], stdout=subprocess.DEVNULL).returncode != 0:
            return "the CLI did not build (./corral --version failed)"
    if not os.path.isdir(os.path.join(b.ROOTFS, "usr")):
        print("bench: building the default image (corral prepare)", file=sys.stderr)
        if subprocess.run(b.corral_cmd("prepare"), stdout=subprocess.DEVNULL, env=b.ENV).returncode != 0:
            return "the default image could not be built"
    for d in (b.BENCH_RUNC_ROOT, b.BENCH_RUNSC_ROOT, os.path.join(b.BENCH_STATE, "bundles")):
        os.makedirs(d, exist_ok=True)
    return None


def machine_info():
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "cgroups": "v2 (unified)" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1 / hybrid",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions():
    git = b.version_of(["git", "-C", b.REPO, "rev-parse", "--short", "HEAD"])
    return {
        "corral": b.version_of(b.corral_cmd("--version")) + f" (git {git})",
        "runc": b.version_of(["runc", "--version"]),
        "runsc": b.version_of(["runsc", "--version"]),
        "crun": b.version_of(["crun", "--version"]) if shutil.which("crun") else "not installed",
        "dotnet": b.version_of(["dotnet", "--version"]),
        "podman": b.version_of(["podman", "--version"]) if shutil.which("podman") else "not installed",
        "python": platform.python_version(),
    }


def write_result(ctx, res: b.Result):
    lines = [f"# {res.title}", ""]
    if res.status != "ok":
        lines += [f"**{res.status}**: {res.reason}", ""]
    lines += [f"Mode: {'quick' if ctx.quick else 'full'}; took {res.seconds:.0f} s. Generated by the harness; see README.md for the machine and command.", ""]
    for t in res.tables:
        lines.append(t.markdown())
    for p in res.plots:
        lines += [f"![{p}]({p})", ""]
    if res.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in res.notes] + [""]
    with open(os.path.join(ctx.out, f"{res.name}.md"), "w") as f:
        f.write("\n".join(lines))


def write_index(ctx, results, machine, vers, started, command, total):
    lines = ["# Corral benchmark results", "",
             f"Generated by `{command}` on {started.strftime('%Y-%m-%d %H:%M UTC')} in {total:.0f} s "
             f"({'quick' if ctx.quick else 'full'} run). Every figure in these files comes from that run.", "",
             "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines += [f"| load average at end | {' '.join(f'{x:.2f}' for x in os.getloadavg())} |", "",
              "The CPU is shared with other work on this machine; figures are medians and p99 of what one run saw.", "",
              "## Versions", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in vers.items()]
    lines += ["", "## Experiments", "", "| experiment | status | seconds | file |", "|---|---|---|---|"]
    for r in results:
        status = r.status + (f": {r.reason}" if r.reason else "")
        lines.append(f"| {r.title} | {status.replace('|', '/')} | {r.seconds:.0f} | [{r.name}.md]({r.name}.md) |")
    lines += ["", f"Corral is measured through its CLI ({b.cli_description()}, not the `./corral` wrapper, "
              "so the wrapper's dependency and build checks are not timed): each of those containers costs one CLI process. "
              "The daemon experiment measures the daemon path instead: `./corral serve` and a gRPC client on its socket.", ""]
    with open(os.path.join(ctx.out, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="corral bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions: about 2 minutes")
    ap.add_argument("--out", default=os.path.join(b.REPO, "bench", "results"), help="output directory (default bench/results)")
    ap.add_argument("--only", default="", help="comma-separated experiments: " + ",".join(n for n, _ in EXPERIMENTS))
    ap.add_argument("--no-podman", action="store_true", help="skip the podman comparisons")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every repetition count (e.g. 0.5)")
    args = ap.parse_args(argv)
    ctx = Context(args)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in dict(EXPERIMENTS)]
    if unknown:
        ap.error(f"unknown experiment(s): {', '.join(unknown)}")
    os.makedirs(ctx.out, exist_ok=True)
    command = os.environ.get("CORRAL_BENCH_COMMAND") or " ".join(["python3", "bench/corral_bench.py", *(argv if argv is not None else sys.argv[1:])])
    started = datetime.now(timezone.utc)
    t_start = time.time()
    reason = setup()
    machine, vers = machine_info(), versions()
    print(f"corral bench ({'quick' if ctx.quick else 'full'}): Corral through {b.cli_description()} (no wrapper) and, in the daemon experiment, through `./corral serve`; results in {ctx.out}", flush=True)
    results = []
    for name, fn in EXPERIMENTS:
        if only and name not in only:
            continue
        t0 = time.time()
        print(f"\n== {name}", flush=True)
        left = []
        if reason:
            res = b.Result(name, name, status="failed", reason=reason)
        else:
            try:
                res = fn(ctx)
            except Exception as e:  # noqa: BLE001
                res = b.Result(name, name, status="failed", reason=f"{e.__class__.__name__}: {e}")
                res.notes.append("```\n" + traceback.format_exc()[-1500:] + "\n```")
            finally:
                left = b.sweep()
                if left:
                    print(f"bench: cleaned up {len(left)} leftover containers: {', '.join(left[:5])}", file=sys.stderr)
        res.seconds = time.time() - t0
        if left and res.status == "ok":
            res.notes.append(f"the final sweep removed {len(left)} leftover containers: {', '.join(left[:5])}")
        for t in res.tables:
            print(t.text())
        if res.status != "ok":
            print(f"{name}: {res.status}: {res.reason}")
        print(f"({res.seconds:.0f} s)", flush=True)
        write_result(ctx, res)
        results.append(res)
    total = time.time() - t_start
    write_index(ctx, results, machine, vers, started, command, total)
    shutil.rmtree(os.path.join(b.BENCH_STATE, "bundles"), ignore_errors=True)
    failed = [r.name for r in results if r.status == "failed"]
    print(f"\ncorral bench: {len(results)} experiments in {total:.0f} s; " + (f"FAILED to run: {', '.join(failed)}" if failed else "all ran") + f"; results in {ctx.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
