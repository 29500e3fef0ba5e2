"""`dynamoctl local`: a real N-node cluster from one command; Ctrl-C/SIGTERM stops all of
it; re-running on the same data dir restarts the same cluster with its data."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_node.memory import default_row_cache_bytes, memory_limit
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


def _start(base: int, data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
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
        ],
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
