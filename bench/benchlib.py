"""Shared pieces of Corral's benchmark harness: paths, process runners, statistics, tables, plots, cleanup."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_NATIVE = os.path.join(REPO, ".build", "cli", "Corral.Cli")  # Native AOT build (./corral publishes it)
CLI_DLL = os.path.join(REPO, ".build", "cli", "Corral.Cli.dll")  # a JIT build, used when there is no native one
ROOTFS = "/var/lib/corral/images/default/rootfs"
CORRAL_STATE = "/run/corral"
CORRAL_RUNC_ROOT = "/run/corral/runc"
CORRAL_RUNSC_ROOT = "/run/corral/runsc"
CORRAL_CRUN_ROOT = "/run/corral/crun"
# The bare-runtime references keep their state apart from Corral's.
BENCH_STATE = "/run/corral-bench"
BENCH_RUNC_ROOT = os.path.join(BENCH_STATE, "runc")
BENCH_RUNSC_ROOT = os.path.join(BENCH_STATE, "runsc")
BENCH_CRUN_ROOT = os.path.join(BENCH_STATE, "crun")
PODMAN_IMAGE = "localhost/corral-bench-default:latest"
PODMAN_ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
RUNTIMES = ("runc", "gvisor")
# The lifecycle experiment also times crun (runc's command line, a C binary; no podman variant).
LIFECYCLE_RUNTIMES = ("runc", "crun", "gvisor")


def binary_of(runtime):
    return "runsc" if runtime == "gvisor" else runtime

ENV = dict(os.environ, DOTNET_NOLOGO="1", DOTNET_CLI_TELEMETRY_OPTOUT="1", DOTNET_SKIP_FIRST_TIME_EXPERIENCE="1")


def unique(prefix: str) -> str:
    return f"bench-{prefix}-{os.urandom(4).hex()}"


# ---------------------------------------------------------------------------- statistics

def percentile(xs, p):
    """Linear interpolation between closest ranks; with few samples p99 is close to the maximum."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(xs):
    return percentile(xs, 50)


def fmt(x, digits=1):
    if x is None:
        return "-"
    if isinstance(x, float) and x != x:
        return "-"
    return f"{x:.{digits}f}"


def ratio(x, ref):
    if x is None or ref is None or ref == 0 or x != x or ref != ref:
        return "-"
    return f"{x / ref:.2f}x"


# ---------------------------------------------------------------------------- results

@dataclass
class Table:
    title: str
    headers: list
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in self.rows]
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        widths = [max(len(str(h)), *(len(str(r[i])) for r in self.rows)) if self.rows else len(str(h)) for i, h in enumerate(self.headers)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
        out = [self.title, line(self.headers), line(["-" * w for w in widths])] + [line(r) for r in self.rows]
        return "\n".join(out) + "\n"


@dataclass
class Result:
    name: str
    title: str
    status: str = "ok"  # ok | failed | not run
    reason: str = ""
    tables: list = field(default_factory=list)
    plots: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------------------- processes

def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, env=ENV, **kw)


def version_of(cmd):
    try:
        r = run(cmd, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"
    except Exception as e:  # noqa: BLE001
        return f"not available ({e.__class__.__name__})"


def cli_prefix():
    return [CLI_NATIVE] if os.access(CLI_NATIVE, os.X_OK) else ["dotnet", CLI_DLL]


def cli_description():
    """How Corral is invoked, for the tables: the built CLI directly, never the ./corral wrapper."""
    return "`" + " ".join(os.path.relpath(x, REPO) if x.startswith(REPO) else x for x in cli_prefix()) + " run ...`"


def corral_cmd(*args):
    return [*cli_prefix(), *args]


def corral_run_cmd(runtime, name, result_file, command, extra=()):
    return corral_cmd("run", "--runtime", runtime, "--rootfs", ROOTFS, "--name", name, "--result-file", result_file, *extra, "--", *command)


def parse_time(text):
    """ISO 8601 from .NET (7 fractional digits) to epoch seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    base = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


def read_record(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- bundles for the bare runtimes

_spec_lock = threading.Lock()
_base_spec = None
SPEC_SOURCE = ""


def base_spec():
    """The config.json Corral writes, captured from a real `corral run`; `runc spec` edited like SpecBuilder as a fallback."""
    global _base_spec, SPEC_SOURCE
    with _spec_lock:
        if _base_spec is not None:
            return _base_spec
        name = unique("spec")
        path = os.path.join(CORRAL_STATE, "bundles", name, "config.json")
        proc = subprocess.Popen(corral_run_cmd("runc", name, f"/tmp/{name}.json", ["sleep", "30"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        spec = None
        deadline = time.time() + 20
        while time.time() < deadline and proc.poll() is None:
            try:
                with open(path) as f:
                    spec = json.load(f)
                break
            except (OSError, ValueError):
                time.sleep(0.02)
        deadline = time.time() + 20
        while spec is not None and time.time() < deadline and proc.poll() is None and not state_running(name):
            time.sleep(0.02)
        try:
            run(corral_cmd("kill", name, "--signal", "KILL"), timeout=30)
        except Exception:  # noqa: BLE001
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if spec is not None:
            spec["linux"].pop("cgroupsPath", None)
            SPEC_SOURCE = "the config.json a real `corral run` wrote (captured from its bundle), cgroupsPath left to the runtime"
        else:
            d = f"/tmp/{name}-spec"
            os.makedirs(d, exist_ok=True)
            subprocess.run(["runc", "spec"], cwd=d, check=True)
            with open(os.path.join(d, "config.json")) as f:
                spec = json.load(f)
            shutil.rmtree(d, ignore_errors=True)
            spec["process"]["terminal"] = False
            spec["root"] = {"path": ROOTFS, "readonly": True}
            spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=256m"]})
            SPEC_SOURCE = "`runc spec` edited like SpecBuilder (read-only root, tmpfs /tmp, no terminal)"
        spec["root"]["path"] = ROOTFS
        _base_spec = spec
        return spec


def state_running(name):
    """Corral's state file says the container's workload is running."""
    try:
        with open(os.path.join(CORRAL_STATE, "containers", name + ".json")) as f:
            return json.load(f).get("status") == "running"
    except (OSError, ValueError):
        return False


def make_bundle(command, tag):
    spec = json.loads(json.dumps(base_spec()))
    spec["process"]["args"] = list(command)
    spec["hostname"] = "bench"
    d = os.path.join(BENCH_STATE, "bundles", tag)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(spec, f)
    return d


def bare_cmd(runtime, bundle, name):
    if runtime == "runc":
        return ["runc", "--root", BENCH_RUNC_ROOT, "run", "--bundle", bundle, name]
    if runtime == "crun":
        return ["crun", "--root", BENCH_CRUN_ROOT, "run", "--bundle", bundle, name]
    return ["runsc", "--root", BENCH_RUNSC_ROOT, "--platform", "ptrace", "--network", "none", "--ignore-cgroups", "run", "--bundle", bundle, name]


def podman_cmd(runtime, name, command, extra=()):
    binary = shutil.which("runc" if runtime == "runc" else "runsc") or runtime
    flags = ["--runtime", binary] + (["--runtime-flag", "network=none"] if runtime == "gvisor" else [])
    return ["podman", *flags, "run", "--name", name, "--network", "none", *PODMAN_ULIMITS, *extra, PODMAN_IMAGE, *command]


# ---------------------------------------------------------------------------- podman

_podman_state = None


def podman_status():
    """(True, "") when podman runs the default image with both runtimes, else (False, reason)."""
    global _podman_state
    if _podman_state is not None:
        return _podman_state
    if shutil.which("podman") is None:
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "podman"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(ENV, DEBIAN_FRONTEND="noninteractive"), timeout=600)
        if shutil.which("podman") is None:
            _podman_state = (False, "podman is not installed and `apt-get install -y podman` failed: " + r.stdout.strip()[-200:])
            return _podman_state
    if run(["podman", "image", "exists", PODMAN_IMAGE]).returncode != 0:
        tar = subprocess.Popen(["tar", "-C", ROOTFS, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["podman", "import", "-", PODMAN_IMAGE], stdin=tar.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tar.wait()
        if imp.returncode != 0:
            _podman_state = (False, "`podman import` of the default rootfs failed: " + imp.stderr.strip()[-200:])
            return _podman_state
    for rt in RUNTIMES:
        name = unique("podman-probe")
        r = run(podman_cmd(rt, name, ["/bin/true"], extra=["--rm"]), timeout=120)
        if r.returncode != 0:
            _podman_state = (False, f"`podman run` with {rt} failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:200])
            return _podman_state
    _podman_state = (True, "")
    return _podman_state


# ---------------------------------------------------------------------------- /proc

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pid, kids=None):
    kids = kids if kids is not None else children_map()
    out, stack = [], list(kids.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def pss_bytes(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------- cleanup

def runtime_list(root, binary):
    try:
        r = run([binary, "--root", root, "list", "--quiet"], timeout=30)  # runsc has no -q
        if r.returncode != 0:
            raise RuntimeError(f"{binary} list failed: {r.stderr.strip()[-200:]}")
        return [x for x in r.stdout.split() if x]
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{binary} list timed out") from e


def sweep(prefix="bench-"):
    """Removes every container whose name starts with `prefix` from Corral's and the bench's runtime roots and podman."""
    left = []
    roots = [("runc", CORRAL_RUNC_ROOT), ("runsc", CORRAL_RUNSC_ROOT), ("runc", BENCH_RUNC_ROOT), ("runsc", BENCH_RUNSC_ROOT)]
    if shutil.which("crun"):
        roots += [("crun", CORRAL_CRUN_ROOT), ("crun", BENCH_CRUN_ROOT)]
    for binary, root in roots:
        try:
            names = runtime_list(root, binary)
        except Exception as e:  # noqa: BLE001
            left.append(f"{binary}:{root}: could not list ({e})")
            continue
        for name in names:
            if name.startswith(prefix):
                left.append(f"{binary}:{root}:{name}")
                try:
                    run([binary, "--root", root, "kill", name, "KILL"], timeout=15)
                except Exception:  # noqa: BLE001
                    pass
                try:
                    run([binary, "--root", root, "delete", "--force", name], timeout=30)
                except Exception:  # noqa: BLE001
                    pass
    if shutil.which("podman"):
        try:
            r = run(["podman", "ps", "-a", "--format", "{{.Names}}"], timeout=60)
            names = [n for n in r.stdout.split() if n.startswith(prefix)]
            if names:
                left += [f"podman:{n}" for n in names]
                run(["podman", "rm", "-f", *names], timeout=120)
        except Exception:  # noqa: BLE001
            pass
    return left


# ---------------------------------------------------------------------------- plots

_plt = None


def plt():
    global _plt
    if _plt is None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as p
        _plt = p
    return _plt


def box_plot(path, title, groups, ylabel, log=False):
    """groups: list of (label, [values]) drawn as box plots with the points jittered over them."""
    p = plt()
    groups = [(label, vals) for label, vals in groups if vals]
    fig, ax = p.subplots(figsize=(max(6, 0.9 * len(groups) + 2), 4.5))
    if groups:
        ax.boxplot([v for _, v in groups], showfliers=False)
        for i, (_, vals) in enumerate(groups, start=1):
            xs = [i + ((j * 0.6180339887) % 1 - 0.5) * 0.3 for j in range(len(vals))]
            ax.scatter(xs, vals, s=6, alpha=0.5)
        ax.set_xticks(range(1, len(groups) + 1))
        ax.set_xticklabels([label for label, _ in groups], rotation=30, ha="right", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    p.close(fig)
    return os.path.basename(path)
