"""`dynamoctl local`: a real N-node cluster on this machine.

Node i is a separate `dynamo-node` process on 127.0.0.1:BASE+i (peer port +10000) with
its own RocksDB directory DIR/node{i}; logs go to DIR/node{i}.log. Node 0 founds the
cluster, the others start with `--seed` node 0; nodes not yet in the ring are joined
with the staged admin API (join ... commit), exactly as an operator would. Re-running
on the same DIR restarts the same cluster with its data (the ring is saved in each
node's RocksDB). Once formed, the cluster's id is recorded in DIR/cluster-id and given
to every node on later starts (`--cluster-id`), so a node whose directory was lost,
node 0 included, rejoins this cluster by gossip instead of founding a new one. Ctrl-C
or SIGTERM stops every node (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .memory import default_row_cache_bytes, memory_limit

START_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0
POLL_S = 0.1


class LocalError(RuntimeError):
    pass


def _call(address: str, method: str, path: str, payload: Any = None, timeout: float = 5.0) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(
        f"http://{address}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    token = os.environ.get("DYNAMO_CLUSTER_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def _wait(what: str, check: Any, timeout: float = START_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        time.sleep(POLL_S)
    raise LocalError(f"timed out waiting for {what} ({last})")


class LocalCluster:
    def __init__(self, nodes: int, base_port: int, data_dir: Path, node_args: list[str]) -> None:
        if nodes < 1:
            raise LocalError("--nodes must be at least 1")
        if not base_port >= 1 or base_port + nodes - 1 + 10000 > 65535:
            raise LocalError("--port leaves no room for the peer ports (PORT+10000)")
        self.count = nodes
        self.base = base_port
        self.dir = data_dir
        self.node_args = node_args
        self.procs: list[subprocess.Popen[bytes]] = []

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.base + i}"

    @property
    def id_file(self) -> Path:
        return self.dir / "cluster-id"

    def recorded_id(self) -> str | None:
        try:
            return self.id_file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def record_id(self) -> None:
        """Keep the formed cluster's id for the next start (never overwrite it)."""
        cluster = _call(self.address(0), "GET", "/v1/admin/status")["cluster"]
        if cluster and self.recorded_id() is None:
            self.id_file.write_text(f"{cluster}\n", encoding="utf-8")

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        cluster = self.recorded_id()
        identity = ["--cluster-id", cluster] if cluster else []
        for i in range(self.count):
            args = [
                sys.executable,
                "-m",
                "dynamo_node",
                "--data-dir",
                str(self.dir / f"node{i}"),
                "--port",
                str(self.base + i),
                "--node-id",
                f"node{i}",
                *identity,
                *self.node_args,
            ]
            if i > 0:
                args += ["--seed", self.address(0)]
            log = open(self.dir / f"node{i}.log", "ab")  # noqa: SIM115 - child owns it
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        for i in range(self.count):
            _wait(
                f"node{i} to start (see {self.dir / f'node{i}.log'})", lambda i=i: self._healthy(i)
            )

    def _healthy(self, i: int) -> bool:
        if self.procs[i].poll() is not None:
            tail = (self.dir / f"node{i}.log").read_text(errors="replace")[-2000:]
            raise LocalError(f"node{i} exited with {self.procs[i].returncode}:\n{tail}")
        return bool(_call(self.address(i), "GET", "/healthz", timeout=1))

    def form_ring(self) -> None:
        first = self.address(0)
        cluster = self.recorded_id()
        if cluster is not None:
            # node 0 may have lost its directory: it then learns the ring from the others
            _wait(
                f"node0 to learn the ring of cluster {cluster}",
                lambda: _call(first, "GET", "/v1/admin/status")["cluster"] == cluster,
            )
        status = _call(first, "GET", "/v1/admin/status")
        in_ring = {m["node"] for m in status["members"] if m["partitions"] > 0}
        missing = [i for i in range(self.count) if f"node{i}" not in in_ring]
        if not missing:
            return
        for i in missing:
            _wait(
                f"node{i} to be known by gossip",
                lambda i=i: any(
                    m["node"] == f"node{i}"
                    for m in _call(first, "GET", "/v1/admin/status")["members"]
                ),
            )
            _call(first, "POST", "/v1/admin/join", {"address": self.address(i)})
        _call(first, "POST", "/v1/admin/commit")

    def wait_settled(self) -> None:
        _wait("the ring to settle", self._settled, timeout=300)

    def _settled(self) -> bool:
        """Every node has the same ring, no transfer runs, every member is up."""
        versions = set()
        for i in range(self.count):
            st = _call(self.address(i), "GET", "/v1/admin/status")
            if st["transfers"] or any(m["state"] != "up" for m in st["members"]):
                return False
            versions.add(st["ring_version"])
        return len(versions) == 1

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def watch(self) -> None:
        """Block until a signal; report nodes that exit (they may be restarted by hand)."""
        reported: set[int] = set()
        while True:
            for i, p in enumerate(self.procs):
                if p.poll() is not None and i not in reported:
                    reported.add(i)
                    print(
                        f"node{i} exited with {p.returncode}; the others keep serving", flush=True
                    )
            time.sleep(0.5)


class _Stop(Exception):
    pass


def run_local(args: argparse.Namespace) -> int:
    node_args: list[str] = []
    for flag in ("partitions", "n", "r", "w", "durability"):
        value = getattr(args, flag, None)
        if value is not None:
            node_args += [f"--{flag}", str(value)]
    cluster = LocalCluster(int(args.nodes), int(args.port), Path(args.data_dir), node_args)
    # the nodes share this machine's memory: each gets its part of the default row cache
    cache = default_row_cache_bytes(memory_limit(), cluster.count)
    cluster.node_args += ["--row-cache-bytes", str(cache)]

    def on_signal(signum: int, frame: Any) -> None:
        raise _Stop

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start()
        cluster.form_ring()
        cluster.wait_settled()
        cluster.record_id()
        print(f"dynamokv: {cluster.count}-node cluster running (data in {cluster.dir})")
        for i in range(cluster.count):
            print(f"  node{i}  http://{cluster.address(i)}  pid {cluster.procs[i].pid}")
        print(
            f"try: dynamoctl --node {cluster.address(0)} put hello world && "
            f"dynamoctl --node {cluster.address(cluster.count - 1)} get hello"
        )
        print("Ctrl-C stops the cluster.", flush=True)
        cluster.watch()
    except (KeyboardInterrupt, _Stop):
        print("\nstopping...", flush=True)
    except LocalError as exc:
        print(f"dynamoctl local: {exc}", file=sys.stderr)
        cluster.stop()
        return 4
    finally:
        signal.signal(signal.SIGTERM, old)
    cluster.stop()
    print("stopped.")
    return 0
