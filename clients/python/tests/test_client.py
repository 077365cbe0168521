"""The Python client against a real daemon: real runc and gVisor sandboxes, real OOM kills."""
import glob
import hashlib
import os
import socket
import threading
import time

import pytest

import corral
from corral import Sandbox

# Allocates 300 MB in 10 MB steps, touching every page: far over a 64Mi limit.
ALLOCATE_300MB = "b = []\nfor _ in range(30):\n    b.append(bytearray(10 * 1024 * 1024))\nprint('survived')"


def leftovers(sandbox_id):
    """Cgroups of the sandbox still on the host (v1: one per controller; v2: one)."""
    return glob.glob(f"/sys/fs/cgroup/corral/{sandbox_id}") + glob.glob(f"/sys/fs/cgroup/*/corral/{sandbox_id}")


def test_exec_runs_and_reports_exit_code_and_stdout(client, runtime):
    with Sandbox(cpu=1, memory="128Mi", runtime=runtime, client=client) as sandbox:
        process = sandbox.process.exec("python3", "-c", "print(6 * 7)")
        assert process.wait(120) == 0
        assert process.exit_code == 0
        assert process.stdout.read() == b"42\n"
        assert process.oom_killed is False


def test_exec_output_streams_while_the_process_runs(client, runtime):
    with Sandbox(runtime=runtime, client=client) as sandbox:
        process = sandbox.process.exec(["sh", "-c", "echo one; echo err >&2; sleep 2; echo two; exit 3"])
        chunks = iter(process.stdout)
        first = next(chunks)
        # Seen before the process ended: streamed, not collected at the end.
        assert first == b"one\n"
        assert process.running
        assert b"".join(chunks) == b"two\n"
        assert process.wait(60) == 3
        assert process.stderr.read() == b"err\n"


def test_exec_takes_stdin(client):
    with Sandbox(runtime="runc", client=client) as sandbox:
        process = sandbox.process.exec("wc", "-c", stdin=b"hello")
        assert process.wait(60) == 0
        assert process.stdout.read().strip() == b"5"


def test_interactive_stdin_and_the_calls_after_it_on_the_same_connection(client, runtime):
    with Sandbox(runtime=runtime, client=client) as sandbox:
        cat = sandbox.process.exec("cat", interactive=True)
        cat.write("abc")
        cat.write(b"def")
        cat.close_stdin()
        assert cat.wait(60) == 0
        assert cat.stdout.read() == b"abcdef"
        # An exec that ends while its caller still holds stdin open: the daemon must not leave a read
        # pending on the finished HTTP/2 stream, which broke the next calls on the same connection.
        for _ in range(3):
            quick = sandbox.process.exec("true", interactive=True)
            assert quick.wait(60) == 0
            for _ in range(5):
                assert sandbox.stats()["pids_current"] >= 1
                assert sandbox.state == "running"


def test_sandbox_exit_3_is_reported_without_oom(client, runtime):
    with Sandbox(runtime=runtime, command=["sh", "-c", "exit 3"], client=client) as sandbox:
        record = sandbox.wait(120)
        assert record.exit_code == 3
        assert record.oom_killed is False
        assert record.signal is None
        assert record.runtime == runtime


def test_sandbox_too_small_for_its_work_reports_oom(client, runtime):
    with Sandbox(cpu=1, memory="64Mi", runtime=runtime, command=["python3", "-c", ALLOCATE_300MB], client=client) as sandbox:
        record = sandbox.wait(120)
        assert record.oom_killed is True
        assert record.exit_code == 137
        assert record.oom_reason == "kernel"
        assert record.oom_kills >= 1
        assert record.memory_limit_bytes == 64 << 20
        assert "survived" not in record.stdout_tail


def test_sandbox_large_enough_succeeds(client, runtime):
    with Sandbox(cpu=1, memory="512Mi", runtime=runtime, command=["python3", "-c", ALLOCATE_300MB], client=client) as sandbox:
        record = sandbox.wait(120)
        assert record.exit_code == 0
        assert record.oom_killed is False
        assert record.stdout_tail == "survived\n"


def test_process_the_kernel_killed_for_memory_is_oom_killed(client):
    # runc: an exec joins the sandbox's cgroup, and the kernel's OOM killer picks it (the largest).
    with Sandbox(memory="64Mi", runtime="runc", client=client) as sandbox:
        process = sandbox.process.exec("python3", "-c", ALLOCATE_300MB)
        assert process.wait(120) == 137
        assert process.oom_killed is True
        assert process.stdout.read() == b""
        ok = sandbox.process.exec("true")
        assert ok.wait(60) == 0
        assert ok.oom_killed is False


def test_terminate_ends_and_removes_the_sandbox(client, runtime):
    sandbox = Sandbox(runtime=runtime, client=client).create()
    sandbox_id = sandbox.id
    assert sandbox.process.exec("true").wait(60) == 0  # running: PID 1 has its TERM trap
    record = sandbox.terminate(grace=5)
    # The idle PID 1 ends at once on SIGTERM, as if the signal had killed it.
    assert record is not None and record.exit_code == 143
    with pytest.raises(corral.NotFoundError):
        client.sandbox(sandbox_id)
    assert leftovers(sandbox_id) == []


def test_context_manager_leaves_nothing_even_when_the_body_raises(client):
    sandbox_id = None
    with pytest.raises(RuntimeError):
        with Sandbox(runtime="runc", client=client) as sandbox:
            sandbox_id = sandbox.id
            assert sandbox.state in ("created", "running")
            raise RuntimeError("the caller's own failure")
    with pytest.raises(corral.NotFoundError):
        client.sandbox(sandbox_id)
    assert leftovers(sandbox_id) == []


def test_errors_are_mapped_from_grpc_statuses(client):
    with pytest.raises(corral.NotFoundError) as missing:
        client.sandbox("no-such-sandbox")
    assert "no such sandbox" in missing.value.message
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(runtime="runc", name="../escape", client=client).create()
    with pytest.raises(corral.InvalidArgumentError) as not_there:
        Sandbox(runtime="runc", command=["/no/such/binary"], client=client).create()
    assert not_there.value.exit_code == 127
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(memory="lots", client=client)
    with Sandbox(runtime="runc", client=client) as sandbox:
        with pytest.raises(corral.InvalidArgumentError):
            sandbox.process.exec("/no/such/binary")
        with pytest.raises(corral.AlreadyExistsError):
            Sandbox(runtime="runc", name=sandbox.id, client=client).create()
    with pytest.raises(corral.NotFoundError):
        Sandbox(runtime="runc", image="localhost/no-such-image:1", client=client).create()


def test_tcp_with_the_token_works_and_a_wrong_token_is_refused(daemon):
    with corral.Client(f"tcp://127.0.0.1:{daemon.port}", token=daemon.token) as tcp:
        with Sandbox(runtime="runc", client=tcp) as sandbox:
            process = sandbox.process.exec("echo", "over tcp")
            assert process.wait(60) == 0
            assert process.stdout.read() == b"over tcp\n"
    with corral.Client(f"tcp://127.0.0.1:{daemon.port}", token="wrong") as wrong:
        with pytest.raises(corral.UnauthenticatedError):
            wrong.list()
        with pytest.raises(corral.UnauthenticatedError):
            Sandbox(runtime="runc", client=wrong).create()
    with corral.Client(f"tcp://127.0.0.1:{daemon.port}", token="") as none:
        with pytest.raises(corral.UnauthenticatedError):
            none.list()


@pytest.mark.parametrize("memory, exit_code, oom_killed, stdout", [("64Mi", 137, True, b""), ("512Mi", 0, False, b"done\n")])
def test_the_readme_examples(client, runtime, memory, exit_code, oom_killed, stdout):
    # The README's two examples, as written there: too small reports OOM; large enough succeeds.
    work = "b = []\nfor _ in range(30):\n    b.append(bytearray(10 * 1024 * 1024))\nprint('done')"
    with Sandbox(cpu=1, memory=memory, runtime=runtime, client=client).create() as sandbox:
        process = sandbox.process.exec("python3", "-c", work)
        process.wait(120)
        seen = (process.exit_code, process.oom_killed, process.sandbox_ended)
        assert (process.exit_code, process.oom_killed) == (exit_code, oom_killed), f"exec {seen}, sandbox {sandbox.info()}"
        assert process.stdout.read() == stdout
        # runsc itself ends 128 for an exec whose sandbox the OOM kill took: the daemon says the sandbox ended.
        assert process.sandbox_ended == (oom_killed and runtime == "gvisor")
        if oom_killed:
            # runc: the kernel killed the exec alone; gVisor: the kill took the sentry, and the sandbox.
            if runtime == "gvisor":
                # The sandbox's own exit follows the exec's by a moment (its shim reports it).
                record = sandbox.wait(60)
                assert (record.exit_code, record.oom_killed) == (137, True)
                assert sandbox.state == "exited"
            else:
                assert sandbox.state == "running"


SERVE_ONCE = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8080)); s.listen(4)\n"
    "while True:\n"
    "    c, a = s.accept(); c.sendall(('peer=%s\\n' % a[0]).encode()); c.close()\n"
)


def test_a_bridged_sandbox_publishes_a_port_on_loopback(client, runtime):
    with Sandbox(runtime=runtime, command=["python3", "-c", SERVE_ONCE], network="bridge", ports=["0:8080"], client=client) as sandbox:
        deadline = time.monotonic() + 60
        while (info := sandbox.info())["network"] is None or info["state"] != "running":
            assert info["state"] in ("created", "running"), info
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
        network = info["network"]
        assert network["address"].startswith("10.213.")
        port = network["ports"][0]
        assert port["host_ip"] == "127.0.0.1" and port["container_port"] == 8080 and port["protocol"] == "tcp"
        assert port["host_port"] > 0
        reply = b""
        while not reply:
            try:
                with socket.create_connection(("127.0.0.1", port["host_port"]), timeout=2) as c:
                    reply = c.recv(100)
            except OSError:
                assert time.monotonic() < deadline, "the published port never answered"
                time.sleep(0.1)
        assert reply.startswith(b"peer=")
        assert sandbox.stats()["network_rx_bytes"] > 0
        # The daemon's sandboxes are supervised in /run/corral: the namespace is named after that and the id.
        key = hashlib.sha256(b"/run/corral\0" + sandbox.id.encode()).hexdigest()[:12]
        assert os.path.exists(f"/run/netns/corral-{key}")
    assert not os.path.exists(f"/run/netns/corral-{key}"), "the namespace goes with the sandbox"
    assert not os.path.exists(f"/sys/class/net/cv{key}"), "the veth goes with the sandbox"


def test_bad_network_input_is_refused_and_nothing_created(client):
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(network="mesh", client=client)
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(network="bridge", ports=["abc"], client=client)
    before = {s["id"] for s in client.list()}
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(runtime="runc", network="bridge", ports=["70000:80"], client=client).create()
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(runtime="runc", network="bridge", egress=["allow-cidr=10.0.0.0/33"], client=client).create()
    assert {s["id"] for s in client.list()} == before


def test_files_go_in_and_out_as_the_sandbox_user_and_stay_readable_after_the_end(client, runtime):
    command = ["sh", "-c", "while [ ! -f /tmp/in.txt ]; do sleep 0.05; done; tr a-z A-Z < /tmp/in.txt > /tmp/out.txt"]
    with Sandbox(runtime=runtime, command=command, user="nobody", client=client) as sandbox:
        sandbox.write_file("/tmp/in.txt", "hello from python\n")
        record = sandbox.wait(timeout=60)
        assert record.exit_code == 0, record
        # Ended, not yet removed: its files are still there to collect.
        assert sandbox.read_file("/tmp/out.txt") == b"HELLO FROM PYTHON\n"
        import io
        import tarfile
        with tarfile.open(fileobj=io.BytesIO(sandbox.download("/tmp")), mode="r:") as archive:
            members = {m.name: m for m in archive.getmembers()}
        assert members["tmp/in.txt"].uid == 65534, "a copied file belongs to the sandbox's user"
        assert members["tmp/out.txt"].uid == 65534


def test_bad_mounts_and_users_are_refused_and_nothing_created(client):
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(volumes=["relative"], client=client)
    before = {s["id"] for s in client.list()}
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(runtime="runc", tmpfs=["/proc"], client=client).create()
    with pytest.raises(corral.InvalidArgumentError):
        Sandbox(runtime="runc", user="no-such-user", command=["true"], client=client).create()
    with pytest.raises(corral.FailedPreconditionError):
        # The daemon allows no bind mounts unless started with --allow-mounts-under.
        Sandbox(runtime="runc", volumes=["/etc:/hostetc:ro"], client=client).create()
    assert {s["id"] for s in client.list()} == before
