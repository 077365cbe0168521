"""Experiments 4 and 5: throughput at concurrency, density and idle cost."""
from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import benchlib as b

CONCURRENCY = (1, 2, 4, 8)


def _one(cmd):
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300, env=b.ENV)
    return r.returncode, r.stderr


def throughput(ctx) -> b.Result:
    res = b.Result("throughput", "Throughput: containers completed per second")
    total = ctx.reps(full=24, quick=4)
    bundle = b.make_bundle(["/bin/true"], "throughput-true")
    t = b.Table(f"Throughput, `/bin/true`, {total} containers per cell (containers/s)",
                ["runtime", "concurrency", "bare runtime /s", "corral /s", "ratio corral/bare", "failed runs"])
    series = {}
    failures = []
    for rt in b.RUNTIMES:
        for c in CONCURRENCY:
            n = max(total, c)
            rates = {}
            failed = 0
            for variant in ("bare", "corral"):
                cmds = []
                for _ in range(n):
                    name = b.unique("tp")
                    cmds.append(b.bare_cmd(rt, bundle, name) if variant == "bare" else b.corral_run_cmd(rt, name, f"/tmp/{name}.json", ["/bin/true"]))
                t0 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=c) as pool:
                    outcomes = list(pool.map(_one, cmds))
                elapsed = time.perf_counter() - t0
                ok = sum(1 for code, _ in outcomes if code == 0)
                bad = [(code, err) for code, err in outcomes if code != 0]
                failed += len(bad)
                if bad:
                    failures.append(f"{variant} {rt} c={c}: exit {bad[0][0]}: {bad[0][1].strip()[-200:]}")
                rates[variant] = ok / elapsed
                series.setdefault((rt, variant), []).append((c, ok / elapsed))
                for cmd in cmds:
                    if variant == "corral":
                        try:
                            os.unlink(cmd[cmd.index("--result-file") + 1])
                        except OSError:
                            pass
            t.rows.append([rt, c, b.fmt(rates["bare"], 2), b.fmt(rates["corral"], 2), b.ratio(rates["corral"], rates["bare"]), failed])
    if failures:
        res.notes.append(f"{len(failures)} cells had failed runs; first: {failures[0]}")
        if len(failures) >= len(t.rows):
            res.status, res.reason = "failed", failures[0]
    t.notes += [
        "Each cell starts its containers from a pool of `concurrency` workers and divides the containers that exited 0 by the wall time of the whole batch.",
        "bare: `runc run` / `runsc --platform ptrace --network none --ignore-cgroups run` on the same bundle; corral: " + b.cli_description() + " "
        "(one CLI process per container; the daemon path is the daemon experiment).",
        f"The machine has {os.cpu_count()} CPUs, shared with other work.",
    ]
    res.tables.append(t)
    p = b.plt()
    fig, ax = p.subplots(figsize=(6, 4))
    for (rt, variant), pts in series.items():
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", linestyle="-" if variant == "corral" else "--", label=f"{rt} {variant}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(CONCURRENCY)
    ax.set_xticklabels([str(c) for c in CONCURRENCY])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("containers / s")
    ax.set_title("Throughput (/bin/true)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(ctx.out, "throughput.png"), dpi=80)
    p.close(fig)
    res.plots.append("throughput.png")
    return res


def density(ctx) -> b.Result:
    res = b.Result("density", "Density and idle cost of idle sandboxes")
    targets = {"gvisor": ctx.reps(full=100, quick=3), "runc": ctx.reps(full=200, quick=3)}
    idle_s = 30 if not ctx.quick else 5
    reserve = 6 << 30  # leave this much memory available to the machine's other users
    t = b.Table("Idle sandboxes running `sleep 3600`: per-sandbox cost (medians over the sandboxes)",
                ["runtime", "asked", "started", "supervisor RSS MiB", "supervisor PSS MiB", "supervisor CPU ms/min idle",
                 "runtime+sandbox RSS MiB", "runtime+sandbox CPU ms/min idle", "MemAvailable drop / sandbox MiB", "supervisor/runtime RSS"])
    groups = []
    for rt, want in targets.items():
        procs = {}
        stopped_reason = ""
        avail0 = b.mem_available()
        try:
            for i in range(want):
                if b.mem_available() < reserve:
                    stopped_reason = f"stopped at {i}: less than {reserve >> 30} GiB of memory left available"
                    break
                name = b.unique(f"dn-{rt}")
                procs[name] = subprocess.Popen(b.corral_run_cmd(rt, name, f"/tmp/{name}.json", ["sleep", "3600"]),
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=b.ENV)
                # start a few at a time: wait until all but the last 3 are running
                deadline = time.time() + 60
                while time.time() < deadline and sum(1 for n in procs if not b.state_running(n) and procs[n].poll() is None) > 3:
                    time.sleep(0.05)
            deadline = time.time() + 120
            while time.time() < deadline and not all(b.state_running(n) or procs[n].poll() is not None for n in procs):
                time.sleep(0.1)
            running = [n for n in procs if procs[n].poll() is None and b.state_running(n)]
            time.sleep(2)  # let start-up work settle before the idle window
            kids = b.children_map()
            before = {n: (b.cpu_seconds(procs[n].pid), sum(b.cpu_seconds(p) for p in b.descendants(procs[n].pid, kids))) for n in running}
            time.sleep(idle_s)
            kids = b.children_map()
            avail1 = b.mem_available()
            sup_rss, sup_pss, sup_cpu, rt_rss, rt_cpu = [], [], [], [], []
            for n in running:
                pid = procs[n].pid
                desc = b.descendants(pid, kids)
                sup_rss.append(b.rss_bytes(pid) / 2**20)
                sup_pss.append(b.pss_bytes(pid) / 2**20)
                rt_rss.append(sum(b.rss_bytes(p) for p in desc) / 2**20)
                sup_cpu.append((b.cpu_seconds(pid) - before[n][0]) * 1000 * 60 / idle_s)
                rt_cpu.append((sum(b.cpu_seconds(p) for p in desc) - before[n][1]) * 1000 * 60 / idle_s)
            drop = (avail0 - avail1) / 2**20 / max(len(running), 1)
            med = b.median
            t.rows.append([rt, want, len(running), b.fmt(med(sup_rss)), b.fmt(med(sup_pss)), b.fmt(med(sup_cpu)),
                           b.fmt(med(rt_rss)), b.fmt(med(rt_cpu)), b.fmt(drop), b.ratio(med(sup_rss), med(rt_rss))])
            groups += [(f"{rt} supervisor RSS", sup_rss), (f"{rt} supervisor PSS", sup_pss), (f"{rt} runtime+sandbox RSS", rt_rss)]
            if stopped_reason:
                t.notes.append(f"{rt}: {stopped_reason}.")
            if len(running) < len(procs):
                t.notes.append(f"{rt}: {len(procs) - len(running)} of {len(procs)} sandboxes did not reach running.")
            if not running:
                res.status, res.reason = "failed", f"no {rt} sandbox reached running"
        finally:
            leftovers = _kill_all(procs)
            if leftovers:
                t.notes.append(f"{rt}: after `corral kill`, still listed and force-deleted: {', '.join(leftovers[:5])}")
    for root, binary in ((b.CORRAL_RUNC_ROOT, "runc"), (b.CORRAL_RUNSC_ROOT, "runsc")):
        try:
            listed = b.runtime_list(root, binary)
            ours = [n for n in listed if n.startswith("bench-")]
            t.notes.append(f"after cleanup `{binary} --root {root} list --quiet`: " + ("no bench- containers" if not ours else "LEFT: " + ", ".join(ours[:10]))
                           + (f" ({len(listed) - len(ours)} containers of other users present)" if len(listed) > len(ours) else " (empty)"))
            if ours:
                res.status, res.reason = "failed", f"{len(ours)} bench containers left in {root}"
        except RuntimeError as e:
            t.notes.append(f"after cleanup: {e}")
    t.notes += [
        f"Idle window {idle_s} s, two seconds after the last sandbox reached running; CPU is utime+stime from /proc over that window, scaled to a minute.",
        "supervisor: the `corral run` CLI process (one process supervises one sandbox). PSS shares the .NET runtime's "
        "pages among the supervisors, so it is what one more supervisor costs more honestly than RSS.",
        "runtime+sandbox: every descendant of the supervisor (runc run and the container's init; runsc run, its sandbox, gofer and the workload), RSS summed "
        "(shared pages counted in each process).",
        "MemAvailable drop: /proc/meminfo before the first start and during the idle window, divided by the sandboxes; other work on the machine adds noise.",
        "Cleanup: `corral kill ID --signal KILL` for each sandbox, then the supervisors are waited for.",
    ]
    res.tables.append(t)
    res.plots.append(b.box_plot(os.path.join(ctx.out, "density.png"), "Idle sandbox memory per sandbox (MiB)", groups, "MiB"))
    return res


def _kill_all(procs):
    def kill(name):
        if procs[name].poll() is None:
            try:
                subprocess.run(b.corral_cmd("kill", name, "--signal", "KILL"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, env=b.ENV)
            except subprocess.TimeoutExpired:
                pass
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(kill, list(procs)))
    for name, proc in procs.items():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.unlink(f"/tmp/{name}.json")
        except OSError:
            pass
    return b.sweep(prefix="bench-dn-")
