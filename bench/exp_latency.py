"""Experiments 1 and 2: lifecycle latency and exit detection latency."""
from __future__ import annotations

import os
import re
import subprocess
import time

import benchlib as b

WORKLOADS = [
    ("/bin/true", ["/bin/true"]),
    ("python os._exit(0)", ["python3", "-c", "import os; os._exit(0)"]),
]

STAMP = "import os, time; print('T=%.6f' % time.time(), flush=True); os._exit(0)"


def _timed(cmd, timeout=120):
    t0_wall = time.time()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, env=b.ENV)
    t1 = time.perf_counter()
    return r, t0_wall, (t1 - t0) * 1000.0, time.time()


def lifecycle(ctx) -> b.Result:
    res = b.Result("lifecycle", "Lifecycle latency: request to exit")
    reps = ctx.reps(full=25, quick=3)
    podman_ok, podman_reason = b.podman_status() if not ctx.no_podman else (False, "disabled with --no-podman")
    samples = {}  # (runtime, workload, variant) -> [ms]
    failures = []
    for rt in b.LIFECYCLE_RUNTIMES:
        for wname, command in WORKLOADS:
            bundle = b.make_bundle(command, f"lifecycle-{wname.split()[0].strip('/').replace('/', '_')}")
            variants = ["bare", "corral"] + (["podman"] if podman_ok and rt in b.RUNTIMES else [])
            for i in range(reps + 1):  # the first round warms caches and is dropped
                for variant in variants:
                    name = b.unique("lc")
                    if variant == "bare":
                        cmd = b.bare_cmd(rt, bundle, name)
                    elif variant == "podman":
                        cmd = b.podman_cmd(rt, name, command, extra=["--rm"])
                    else:
                        cmd = b.corral_run_cmd(rt, name, f"/tmp/{name}.json", command)
                    r, t0_wall, ms, _ = _timed(cmd)
                    if r.returncode != 0:
                        failures.append(f"{variant} {rt} {wname}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
                        continue
                    if i == 0:
                        continue
                    key = (rt, wname)
                    if variant == "corral":
                        rec = b.read_record(f"/tmp/{name}.json")
                        os.unlink(f"/tmp/{name}.json")
                        samples.setdefault(key + ("corral: request to exitedAt",), []).append((b.parse_time(rec["exitedAt"]) - t0_wall) * 1000.0)
                        samples.setdefault(key + ("corral: request to CLI return",), []).append(ms)
                    elif variant == "bare":
                        samples.setdefault(key + (f"bare {b.binary_of(rt)} run (reference)",), []).append(ms)
                    else:
                        samples.setdefault(key + (f"podman run --rm --runtime {'runc' if rt == 'runc' else 'runsc'}",), []).append(ms)
    if failures:
        res.notes.append(f"{len(failures)} runs failed and are left out; first: {failures[0]}")
        if len(failures) > reps:
            res.status, res.reason = "failed", failures[0]
    t = b.Table(f"Lifecycle latency ({reps} runs each, after one warm-up round; ms)",
                ["runtime", "workload", "variant", "n", "median ms", "p99 ms", "ratio vs bare (median)"])
    groups = []
    for rt in b.LIFECYCLE_RUNTIMES:
        for wname, _ in WORKLOADS:
            keys = [k for k in samples if k[0] == rt and k[1] == wname]
            ref = next((median(samples[k]) for k in keys if "reference" in k[2]), None)
            for k in sorted(keys, key=lambda k: (0 if "reference" in k[2] else 1 if "podman" in k[2] else 2 if "exitedAt" in k[2] else 3)):
                xs = samples[k]
                t.rows.append([rt, wname, k[2], len(xs), b.fmt(median(xs)), b.fmt(b.percentile(xs, 99)), b.ratio(median(xs), ref)])
                groups.append((f"{rt} {wname.split()[0]}\n{k[2].split(' (')[0]}", xs))
    t.notes += [
        "bare: the runtime binary run in the foreground on a bundle with " + b.SPEC_SOURCE + "; runsc with `--platform ptrace --network none --ignore-cgroups`, as Corral runs it; crun like runc (no podman variant for crun).",
        "corral: " + b.cli_description().replace(" ...", " --runtime R --rootfs DEFAULT --name ID --result-file F -- CMD") + " (the built CLI directly, not the ./corral wrapper). "
        "Every Corral figure here includes starting a process (the CLI); the daemon path, which does not pay that per container, is the daemon experiment.",
        "request to exitedAt: from spawning the CLI to the `exitedAt` of its exit record (the moment Corral saw the runtime exit); "
        "request to CLI return: until the CLI process returned, cleanup (runtime delete, bundle removal) included.",
        "podman: " + ("`podman --runtime BIN [--runtime-flag network=none] run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024` on the default rootfs imported with `podman import`."
                      if podman_ok else f"not run: {podman_reason}"),
        "p99 over this few samples is close to the maximum.",
    ]
    res.tables.append(t)
    res.plots.append(b.box_plot(os.path.join(ctx.out, "lifecycle.png"), "Lifecycle latency (ms)", groups, "ms", log=True))
    return res


def median(xs):
    return b.median(xs)


def exit_detection(ctx) -> b.Result:
    res = b.Result("exit_detection", "Exit detection latency: PID 1's death to Corral's exit")
    n = ctx.reps(full=100, quick=5)
    n_ref = ctx.reps(full=30, quick=3)
    command = ["python3", "-c", STAMP]
    bundle = b.make_bundle(command, "exit-stamp")
    samples = {}
    failures = []
    for rt in b.RUNTIMES:
        # interleaved: the bare reference runs spread evenly among the Corral runs
        plan = []
        for i in range(n):
            plan.append("corral")
            if (i + 1) * n_ref // n > len(plan) - i - 1:
                plan.append("bare")
        plan += ["bare"] * (n + n_ref - len(plan))
        for variant in plan:
            name = b.unique("ex")
            cmd = b.corral_run_cmd(rt, name, f"/tmp/{name}.json", command) if variant == "corral" else b.bare_cmd(rt, bundle, name)
            r, _, _, t_return = _timed(cmd)
            m = re.search(r"T=(\d+\.\d+)", r.stdout)
            if r.returncode != 0 or not m:
                failures.append(f"{variant} {rt}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
                continue
            death = float(m.group(1))
            if variant == "corral":
                rec = b.read_record(f"/tmp/{name}.json")
                os.unlink(f"/tmp/{name}.json")
                samples.setdefault((rt, "corral: death to exitedAt"), []).append((b.parse_time(rec["exitedAt"]) - death) * 1000.0)
                samples.setdefault((rt, "corral: death to CLI return"), []).append((t_return - death) * 1000.0)
            else:
                samples.setdefault((rt, f"bare {'runc' if rt == 'runc' else 'runsc'} run: death to return (reference)"), []).append((t_return - death) * 1000.0)
    if failures:
        res.notes.append(f"{len(failures)} runs failed and are left out; first: {failures[0]}")
        if len(failures) > n // 2:
            res.status, res.reason = "failed", failures[0]
    t = b.Table("Exit detection latency (ms from the workload's last `time.time()` before `os._exit(0)`)",
                ["runtime", "measure", "n", "median ms", "p99 ms", "max ms", "ratio vs bare (median)"])
    groups = []
    for rt in b.RUNTIMES:
        keys = sorted([k for k in samples if k[0] == rt], key=lambda k: (0 if "reference" in k[1] else 1, k[1]))
        ref = next((median(samples[k]) for k in keys if "reference" in k[1]), None)
        for k in keys:
            xs = samples[k]
            t.rows.append([rt, k[1], len(xs), b.fmt(median(xs)), b.fmt(b.percentile(xs, 99)), b.fmt(max(xs)), b.ratio(median(xs), ref)])
            groups.append((f"{rt}\n{k[1].split(':')[0]}:{k[1].split(':')[1][:22]}", xs))
    t.notes += [
        "The workload prints `time.time()` and calls `os._exit(0)` at once; the death time is that stamp (the container and host share the realtime clock; "
        "gVisor reads it through its own vDSO, so a small offset there is possible).",
        "exitedAt is the exit record's field: when Corral saw the runtime process exit. CLI return includes Corral's cleanup and .NET shutdown.",
        "The reference is the bare runtime process returning to the harness (no Corral).",
        "Corral through the CLI (" + b.cli_description() + "); the daemon path is the daemon experiment.",
    ]
    res.tables.append(t)
    res.plots.append(b.box_plot(os.path.join(ctx.out, "exit_detection.png"), "PID 1 death to exit seen (ms)", groups, "ms", log=True))
    return res
