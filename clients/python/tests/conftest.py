"""A real daemon for the client's tests: the built `corral serve` on a temp socket, state dir and
TCP port (with a bearer token), its shims the native CLI that ./corral builds."""
import json
import os
import urllib.request
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent
REPO = PACKAGE.parent.parent
sys.path.insert(0, str(PACKAGE))

if not (PACKAGE / "corral" / "_generated" / "corral" / "v1" / "corral_pb2.py").exists():
    subprocess.run([str(PACKAGE / "generate.sh")], check=True)

import corral  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self) -> None:
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="corral-python-test-"))
        self.socket = self.root / "corral.sock"
        self.token = uuid.uuid4().hex
        self.token_file = self.root / "token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        self.port = _free_port()
        self.metrics_port = _free_port()
        dll = os.environ.get("CORRAL_DAEMON_DLL", str(REPO / "src/Corral.Daemon/bin/Release/net10.0/Corral.Daemon.dll"))
        shim = os.environ.get("CORRAL_SHIM", str(REPO / ".build/cli/Corral.Cli"))
        for needed in (dll, shim):
            if not os.path.exists(needed):
                pytest.fail(f"{needed} is missing: build first (dotnet build Corral.slnx -c Release; ./corral prepare)")
        self.log = open(self.root / "daemon.log", "wb")
        self.process = subprocess.Popen(
            ["dotnet", dll, "--socket", str(self.socket), "--state-dir", str(self.root / "state"), "--shim", shim,
             "--listen", f"127.0.0.1:{self.port}", "--token-file", str(self.token_file),
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--log-format", "json"],
            stdout=self.log, stderr=open(self.root / "daemon.err", "wb"))
        self.client = corral.Client(str(self.socket))
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the daemon exited with {self.process.returncode}: {self.output()}{(self.root / 'daemon.err').read_text()}")
            try:
                self.client.list()
                break
            except corral.CorralError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("the daemon did not serve within 60s")
                time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        return (self.root / "daemon.log").read_text(errors="replace")

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30) as response:
            return response.read().decode()

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    results = REPO / ".build" / "test-results"
    results.mkdir(parents=True, exist_ok=True)
    # What Prometheus would see after the run (the README's metrics table, with real numbers).
    (results / "python-metrics.txt").write_text(d.scrape())
    code = d.stop()
    output = d.output()
    errors = (d.root / "daemon.err").read_text(errors="replace")
    (results / "python-daemon.log").write_text(output + errors)
    shutil.rmtree(d.root, ignore_errors=True)
    assert code == 0, f"the daemon exited with {code} on SIGTERM: {errors[-2000:]}"
    # --log-format json: every line the daemon logged is one JSON object.
    for line in output.splitlines():
        assert isinstance(json.loads(line), dict), line


@pytest.fixture
def client(daemon):
    return daemon.client


@pytest.fixture(params=["runc", "gvisor"])
def runtime(request):
    return request.param
