"""`dynamoctl local`: a real N-node cluster from one command; Ctrl-C/SIGTERM stops all of
it; re-running on the same data dir restarts the same cluster with its data."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_node.host.memory import default_row_cache_bytes, memory_limit
from tests.harness import free_port, http, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


def _free_base(count: int) -> int:
    for _ in range(50):
        base = free_port()
        if all(_is_free(base + i) and _is_free(base + i + 10000) for i in range(count)):
            return base
    raise RuntimeError("no free port range")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _local_command(base: int, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dynamo_node.cli",
        "local",
        "--nodes",
        "3",
        "--port",
        str(base),
        "--data-dir",
        str(data),
        *extra,
    ]


def _start(base: int, data: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _local_command(base, data, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_running(proc: subprocess.Popen[str]) -> list[str]:
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops the cluster" in line:
            return lines
    raise AssertionError("dynamoctl local exited early:\n" + "".join(lines))


def _pids(lines: list[str]) -> list[int]:
    return [int(line.rsplit("pid", 1)[1]) for line in lines if " pid " in line]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone for our purposes once reaped by its parent
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _reap(pids: list[int]) -> None:
    """Kill node processes still alive (if dynamoctl local itself was killed, its
    children would otherwise outlive the test)."""
    for pid in pids:
        if not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_local_cluster_runs_stops_and_restarts_with_its_data(tmp_path: Path) -> None:
    base = _free_base(3)
    data = tmp_path / "data"
    proc = _start(base, data)
    pids: list[int] = []
    try:
        lines = _wait_running(proc)
        pids = _pids(lines)
        assert len(pids) == 3
        assert any("dynamoctl --node" in line for line in lines)
        status, _, body = http("GET", f"http://127.0.0.1:{base}/v1/admin/status")
        assert status == 200
        members = json.loads(body)["members"]
        assert sorted(m["node"] for m in members) == ["node0", "node1", "node2"]
        assert all(m["partitions"] > 0 for m in members)
        # the three nodes share the machine's memory: each runs a third of the default
        # row cache
        share = default_row_cache_bytes(memory_limit(), 3)
        for i in range(3):
            metrics = http("GET", f"http://127.0.0.1:{base + i}/metrics")[2].decode()
            (line,) = [x for x in metrics.splitlines() if x.startswith("dynamo_row_cache_limit_")]
            assert float(line.split()[1]) == share
        for i in range(20):
            url = f"http://127.0.0.1:{base + i % 3}/v1/kv/key{i}?w=3"
            assert http("PUT", url, f"v{i}".encode())[0] == 204
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_for(lambda: all(_gone(p) for p in pids), 20, what="all nodes stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap(pids)
    # the same command on the same data dir: same cluster, same data
    with _running(base, data) as proc:
        for i in range(20):
            status, _, body = http("GET", f"http://127.0.0.1:{base + (i + 1) % 3}/v1/kv/key{i}?r=3")
            assert (status, body) == (200, f"v{i}".encode())
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
    # node 0's directory is lost: it must rejoin the recorded cluster, not found one
    cluster = (data / "cluster-id").read_text().strip()
    assert cluster
    shutil.rmtree(data / "node0")
    with _running(base, data) as proc:
        for i in range(3):
            status, _, body = http("GET", f"http://127.0.0.1:{base + i}/v1/admin/status")
            assert json.loads(body)["cluster"] == cluster
        for i in range(20):
            status, _, body = http("GET", f"http://127.0.0.1:{base + i % 3}/v1/kv/key{i}?r=3")
            assert (status, body) == (200, f"v{i}".encode())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


@contextlib.contextmanager
def _running(base: int, data: Path) -> Iterator[subprocess.Popen[str]]:
    """`dynamoctl local` started and running; killed with its nodes if still alive."""
    proc = _start(base, data)
    pids: list[int] = []
    try:
        pids = _pids(_wait_running(proc))
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap(pids)


class _Lines:
    """The output of a running `dynamoctl local`, read by a thread (never blocks a test)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait(self, needle: str, timeout: float = 60) -> str:
        def found() -> str | None:
            return next((line for line in list(self.lines) if needle in line), None)

        return wait_for(found, timeout, 0.1, what=f"{needle!r} in {self.lines}")

    def after(self, needle: str) -> str:
        """The line following the first one containing `needle`."""
        lines = list(self.lines)
        index = next(i for i, line in enumerate(lines) if needle in line)
        return wait_for(lambda: len(self.lines) > index + 1 and self.lines[index + 1], 10)


@contextlib.contextmanager
def _local(base: int, data: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    """`dynamoctl local` running (its banner printed); everything it started is killed
    at the end, by PID."""
    proc = _start(base, data, *extra)
    out = _Lines(proc)
    pids: list[int] = []
    try:
        out.wait("Ctrl-C stops the cluster", timeout=120)
        pids = _pids(out.lines)
        yield proc, out
    finally:
        pids += _pids(out.lines)  # restarted nodes too
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap(pids)


def _run_local(base: int, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _local_command(base, data, *extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ctl(base: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynamo_node.cli", "--node", f"127.0.0.1:{base}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--nodes", "0"], "--nodes"),
        (["--port", "70000"], "--port"),
        (["--port", "60000"], "--port"),  # no room for the peer ports
        (["--partitions", "100"], "partitions"),
        (["--n", "0"], "n must"),
        (["--r", "5"], "r, w"),
        (["--nodes", "x"], "--nodes"),
    ],
)
def test_local_bad_flags_are_a_usage_error(tmp_path: Path, flags: list[str], needle: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dynamo_node.cli", "local", "--data-dir", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("offset", [1, 10001])  # node1's HTTP port, then its peer port
def test_local_refuses_a_port_in_use_at_once(tmp_path: Path, offset: int) -> None:
    base = _free_base(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + offset))
        busy.listen()
        started = time.monotonic()
        done = _run_local(base, tmp_path / "data")
    assert time.monotonic() - started < 20
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {base + offset}" in done.stderr and "in use" in done.stderr
    assert "cluster running" not in done.stdout
    assert "Traceback" not in done.stderr


def test_local_sighup_stops_every_node_and_banner_commands_work(tmp_path: Path) -> None:
    base = _free_base(3)
    data = tmp_path / "data"
    with _local(base, data) as (proc, out):
        pids = _pids(out.lines)
        assert len(pids) == 3
        # every node answering is the one this run started
        for i, pid in enumerate(pids):
            status = json.loads(http("GET", f"http://127.0.0.1:{base + i}/v1/admin/status")[2])
            assert status["pid"] == pid
        # the suggested commands work pasted into a fresh shell (no venv on PATH)
        tries = [line.strip() for line in out.lines if "--node 127.0.0.1" in line]
        assert len(tries) == 2, out.lines
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        for command in tries:
            done = subprocess.run(
                command, shell=True, env=env, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.strip() == "world"
        # a second run on the same data dir: refused at once, the first keeps serving
        second = _run_local(_free_base(3), data)
        assert second.returncode == 2, second.stderr
        assert f"another dynamo-node is using {data / 'node0'}" in second.stderr
        assert "Traceback" not in second.stderr
        assert http("GET", f"http://127.0.0.1:{base}/healthz")[0] == 200
        proc.send_signal(signal.SIGHUP)  # the terminal is closed
        assert proc.wait(60) == 0
        wait_for(lambda: all(_gone(p) for p in pids), 30, what="every node stopped")


def test_local_restarts_a_data_dir_where_a_node_has_left(tmp_path: Path) -> None:
    base = _free_base(3)
    data = tmp_path / "data"
    small = ("--partitions", "16", "--n", "2")
    with _local(base, data, *small) as (proc, _):
        assert _ctl(base, "leave", "node2").returncode == 0
        assert _ctl(base, "plan").returncode == 0
        done = _ctl(base, "commit", "--wait")
        assert done.returncode == 0, done.stderr
        assert http("PUT", f"http://127.0.0.1:{base}/v1/kv/kept?w=2", b"v")[0] == 204
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    started = time.monotonic()
    with _local(base, data, *small) as (proc, out):
        assert time.monotonic() - started < 60
        assert len(_pids(out.lines)) == 2
        assert any("node2" in line and "has left" in line for line in out.lines), out.lines
        for i in range(2):
            status, _, body = http("GET", f"http://127.0.0.1:{base + i}/v1/kv/kept?r=2")
            assert (status, body) == (200, b"v")
        assert http("PUT", f"http://127.0.0.1:{base + 1}/v1/kv/new?w=2", b"n")[0] == 204
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_local_prints_the_command_that_restarts_a_dead_node(tmp_path: Path) -> None:
    base = _free_base(3)
    restarted: list[int] = []
    with _local(base, tmp_path / "data") as (proc, out):
        pids = _pids(out.lines)
        os.kill(pids[1], signal.SIGKILL)
        out.wait("node1 exited with -9")
        command = out.after("node1 exited with -9").strip()
        assert "--data-dir" in command and "node1" in command
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        subprocess.run(command, shell=True, env=env, check=True, start_new_session=True)
        try:

            def status() -> dict[str, object]:
                return dict(
                    json.loads(http("GET", f"http://127.0.0.1:{base + 1}/v1/admin/status")[2])
                )

            node = wait_for(status, 30, what="node1 restarted by hand")
            restarted.append(int(str(node["pid"])))
            assert node["node"] == "node1"
            wait_for(
                lambda: http("PUT", f"http://127.0.0.1:{base + 1}/v1/kv/k?w=3", b"v")[0] == 204,
                30,
                what="node1 serving again",
            )
        finally:
            _reap(restarted)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_local_restart_flag_restarts_a_dead_node(tmp_path: Path) -> None:
    base = _free_base(3)
    with _local(base, tmp_path / "data", "--restart") as (proc, out):
        pids = _pids(out.lines)
        os.kill(pids[2], signal.SIGKILL)
        line = out.wait("node2 restarted: pid")
        new = int(line.rsplit("pid", 1)[1])
        assert new != pids[2]

        def answered_by_new() -> bool:
            body = http("GET", f"http://127.0.0.1:{base + 2}/v1/admin/status")[2]
            return bool(json.loads(body)["pid"] == new)

        wait_for(answered_by_new, 30, what="the restarted node2 serving")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_for(lambda: all(_gone(p) for p in [*pids, new]), 30, what="every node stopped")


def test_local_refuses_a_port_answered_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node answering on node0's port must be the process started for it (its PID in
    the status), not another cluster's node that holds the port."""
    from dynamo_node import local

    class Running:
        pid = 111
        returncode = None

        def poll(self) -> None:
            return None

    def answer(address: str, method: str, path: str, *args: object, **kw: object) -> object:
        return {"status": "ok"} if path == "/healthz" else {"pid": 222, "node": "node0"}

    cluster = local.LocalCluster(1, 7070, tmp_path, [])
    cluster.procs[0] = Running()  # type: ignore[assignment]
    monkeypatch.setattr(local, "_call", answer)
    with pytest.raises(local.LocalError) as err:
        cluster._healthy(0)
    assert err.value.code == 2
    assert "port 7070" in str(err.value) and "pid 222" in str(err.value)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_local_killed_outright_leaves_no_orphans(tmp_path: Path) -> None:
    base = _free_base(3)
    with _local(base, tmp_path / "data") as (proc, out):
        pids = _pids(out.lines)
        proc.kill()  # SIGKILL: no chance to stop the nodes itself
        proc.wait()
        wait_for(lambda: all(_gone(p) for p in pids), 30, what="every node stopped")
