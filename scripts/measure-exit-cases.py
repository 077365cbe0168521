#!/usr/bin/env python3
"""Times the foundation's exit cases 1-3 end to end: Corral's CLI next to the bare runtime running
the very same bundle (the config.json `corral spec` prints), alternating, in one run.

usage: scripts/measure-exit-cases.py [N]   (as root, after ./corral prepare)
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [os.path.join(HERE, ".build/cli/Corral.Cli")]
ROOTFS = "/var/lib/corral/images/default/rootfs"
CASES = {
    "1 os._exit(0)": ["python3", "-c", "import os; print('Exiting now', flush=True); os._exit(0)"],
    "2 sys.exit(0)": ["python3", "-c", "import sys; print('Exiting normally'); sys.exit(0)"],
    "3 exception": ["python3", "-c", "raise RuntimeError('Something went wrong')"],
}
BARE = {
    "runc": ["runc", "--root", "/run/corral-bench/runc", "run", "--bundle"],
    "gvisor": ["runsc", "--root", "/run/corral-bench/runsc", "--platform", "ptrace", "--network", "none", "--ignore-cgroups", "run", "--bundle"],
}


def timed(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000, proc.returncode


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(f"# exit cases, {n} runs each, median (p90) ms; machine: {os.cpu_count()} cores, {os.uname().release}")
    print("| case | runtime | bare runtime | corral run | ratio | exit codes (bare/corral) |")
    print("|---|---|---|---|---|---|")
    for case, argv in CASES.items():
        spec = subprocess.run(CLI + ["spec", "--rootfs", ROOTFS, "--"] + argv, check=True, capture_output=True, text=True).stdout
        bundle = tempfile.mkdtemp(prefix="corral-measure-")
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(spec)
        for runtime, bare in BARE.items():
            bare_ms, corral_ms, codes = [], [], set()
            for i in range(n):
                ms, rc = timed(bare + [bundle, f"m-{os.getpid()}-{i}"])
                bare_ms.append(ms)
                ms2, rc2 = timed(CLI + ["run", "--runtime", runtime, "--rootfs", ROOTFS, "--"] + argv)
                corral_ms.append(ms2)
                codes.add((rc, rc2))
            b, c = statistics.median(bare_ms), statistics.median(corral_ms)
            q = lambda xs: sorted(xs)[int(0.9 * (len(xs) - 1))]
            print(f"| {case} | {runtime} | {b:.0f} ({q(bare_ms):.0f}) | {c:.0f} ({q(corral_ms):.0f}) | {c / b:.2f}x | {sorted(codes)} |")
        shutil.rmtree(bundle)


if __name__ == "__main__":
    main()
