"""Real `dynamo-node` processes on loopback for functional tests and benchmarks.

`Cluster` starts nodes as separate processes (each with its own RocksDB directory and
free ports), waits for readiness by polling with a deadline, injects faults (SIGKILL,
SIGSTOP/SIGCONT, restart) and always cleans up every process it started, by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dynamo_node.client import ConnectionFailed, DynamoClient

T = TypeVar("T")


def stack_dump(pid: int) -> str:
    """Python stacks of a live process (py-spy, when installed), for hang reports."""
    import shutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        out = subprocess.run(
            [spy, "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no stack dump: {exc})"
    return out.stdout[-6000:] or out.stderr[-2000:]


def free_port() -> int:
    """A free TCP port whose +10000 peer port is free as well."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair found")


def wait_for(
    predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until `predicate()` is truthy; return its value or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the thing polled may not be up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what or predicate} (last: {last!r})"
    )


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw request (any status is returned, not raised), over the client's
    `DynamoClient.request`; a request lost on the wire raises its OSError. Sends what
    urllib did: one request per connection, a form Content-Type for a bare body."""
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = dict(headers or {})
    if body is not None and not any(name.lower() == "content-type" for name in sent):
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    if not any(name.lower() == "connection" for name in sent):
        sent["Connection"] = "close"
    tls = context if parts.scheme == "https" else None
    with DynamoClient(f"{parts.scheme}://{parts.netloc}", timeout=timeout, tls_context=tls) as c:
        try:
            resp = c.request(method, path, body, sent)
        except ConnectionFailed as exc:
            if isinstance(exc.reason, OSError):
                raise exc.reason from None
            raise OSError(str(exc)) from None
    return resp.status, dict(resp.headers), resp.body


@dataclass
class NodeProc:
    index: int
    port: int
    data_dir: Path
    args: list[str]
    log_path: Path
    node_id: str
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    scheme: str = "http"
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Cluster:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeProc] = field(default_factory=list)
    token: str = ""
    scheme: str = "http"
    ssl_context: ssl.SSLContext | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self.token and "Authorization" not in h:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def add_node(
        self, *extra: str, seed: NodeProc | None = None, node_id: str | None = None
    ) -> NodeProc:
        index = len(self.nodes)
        port = free_port()
        data_dir = self.root / f"node{index}"
        node_id = node_id or f"n{index}"
        args = [
            sys.executable,
            "-m",
            "dynamo_node",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--node-id",
            node_id,
            *extra,
        ]
        if seed is not None:
            args += ["--seed", seed.address]
        node = NodeProc(
            index, port, data_dir, args, self.root / f"node{index}.log", node_id, scheme=self.scheme
        )
        self.nodes.append(node)
        self.start(node)
        return node

    def start(self, node: NodeProc, wait: bool = True) -> None:
        assert not node.alive(), "node already running"
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = open(node.log_path, "ab")  # noqa: SIM115 - owned by the process lifetime
        node.proc = subprocess.Popen(node.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        node.paused = False
        if wait:
            self.wait_ready(node)

    def wait_ready(self, node: NodeProc, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not node.alive():
                raise RuntimeError(f"node {node.node_id} exited:\n{node.log()[-3000:]}")
            return self.request(node, "GET", "/healthz", timeout=2)[0] == 200

        wait_for(ready, timeout, what=f"{node.node_id} healthy")

    def request(
        self,
        node: NodeProc,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        return http(
            method, node.url + path, body, self._headers(headers), timeout, self.ssl_context
        )

    def admin(self, node: NodeProc, method: str, path: str, payload: Any = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        status, _, data = self.request(
            node, method, "/v1/admin/" + path, body, {"Content-Type": "application/json"}
        )
        if status >= 300:
            raise AssertionError(f"{method} {path} -> {status}: {data[:500]!r}")
        return json.loads(data)

    def status(self, node: NodeProc) -> dict[str, Any]:
        return dict(self.admin(node, "GET", "status"))

    def anti_entropy(self, node: NodeProc, timeout: float = 300.0) -> dict[str, Any]:
        """Run one full anti-entropy pass coordinated by `node`; return the finished job."""
        job = self.admin(node, "POST", "anti-entropy")["job"]

        def finished() -> dict[str, Any] | None:
            state = self.admin(node, "GET", f"jobs/{job}")
            return None if state["state"] == "running" else dict(state)

        result = wait_for(finished, timeout, interval=0.1, what=f"anti-entropy on {node.node_id}")
        assert result is not None
        return result

    # --- faults ---------------------------------------------------------------------
    def kill(self, node: NodeProc) -> None:
        if node.alive():
            assert node.proc is not None
            if node.paused:
                os.kill(node.pid, signal.SIGCONT)
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)
        node.paused = False

    def stop(self, node: NodeProc, timeout: float = 20.0) -> int:
        assert node.proc is not None
        if node.paused:
            self.resume(node)
        node.proc.send_signal(signal.SIGTERM)
        try:
            return node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{node.node_id} did not stop in {timeout}s:\n{stack_dump(node.pid)}"
            ) from None

    def pause(self, node: NodeProc) -> None:
        os.kill(node.pid, signal.SIGSTOP)
        node.paused = True

    def resume(self, node: NodeProc) -> None:
        os.kill(node.pid, signal.SIGCONT)
        node.paused = False

    def restart(self, node: NodeProc) -> None:
        self.kill(node)
        self.start(node)

    def shutdown(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                if node.paused:
                    os.kill(node.pid, signal.SIGCONT)
            if node.alive():
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)

    # --- cluster formation ------------------------------------------------------------
    def form(self, count: int, *extra: str) -> list[NodeProc]:
        """Start `count` nodes and join them into one ring via the admin API."""
        first = self.add_node(*extra)
        for _ in range(count - 1):
            self.add_node(*extra, seed=first)
        for node in self.nodes[1:count]:
            wait_for(
                lambda n=node: any(m["node"] == n.node_id for m in self.status(first)["members"]),
                20,
                what=f"{node.node_id} known by gossip",
            )
            self.admin(first, "POST", "join", {"address": node.address})
        if count > 1:
            self.admin(first, "POST", "commit")
        self.wait_converged(self.nodes[:count])
        return self.nodes[:count]

    def wait_converged(self, nodes: list[NodeProc], timeout: float = 30.0) -> int:
        def converged() -> int:
            statuses = [self.status(n) for n in nodes if n.alive() and not n.paused]
            versions = {s["ring_version"] for s in statuses}
            busy = any(s["transfers"] for s in statuses)
            ups = all(
                all(m["state"] == "up" for m in s["members"] if m["state"] != "left")
                for s in statuses
            )
            if len(versions) == 1 and not busy and ups:
                return int(versions.pop())
            return 0

        return wait_for(converged, timeout, interval=0.1, what="ring convergence")

    # --- kv helpers ------------------------------------------------------------------------
    def put(
        self,
        node: NodeProc,
        key: str,
        value: bytes,
        context: str | None = None,
        query: str = "",
        content_type: str = "application/octet-stream",
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": content_type}
        if context:
            headers["X-Dynamo-Context"] = context
        return self.request(node, "PUT", f"/v1/kv/{quote(key)}{query}", value, headers)

    def get(self, node: NodeProc, key: str, query: str = "") -> tuple[int, dict[str, str], bytes]:
        return self.request(node, "GET", f"/v1/kv/{quote(key)}{query}")

    def delete(
        self, node: NodeProc, key: str, context: str | None = None, query: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"X-Dynamo-Context": context} if context else {}
        return self.request(node, "DELETE", f"/v1/kv/{quote(key)}{query}", None, headers)


class Writers:
    """New keys written through every node in turn (W=2) from a few threads, while a
    failure happens; records what was acknowledged."""

    def __init__(self, c: Cluster, nodes: list[NodeProc], prefix: str, threads: int = 3) -> None:
        self.c, self.nodes, self.prefix = c, nodes, prefix
        self.acked: list[str] = []
        self.failed = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]

    def _run(self, t: int) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"{self.prefix}{t}-{i}"
            node = self.nodes[i % len(self.nodes)]
            try:
                status = self.c.put(node, key, key.encode(), query="?timeout_ms=2000")[0]
            except OSError:  # the node is down: not acknowledged
                status = 0
            with self.lock:
                if status == 204:
                    self.acked.append(key)
                else:
                    self.failed += 1
            i += 1

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)


def unreadable(c: Cluster, node: NodeProc, keys: list[str], r: str = "all") -> list[str]:
    return [
        key
        for key in keys
        if (reply := c.get(node, key, f"?r={r}"))[0] != 200 or reply[2] != key.encode()
    ]


def quote(key: str) -> str:
    return urllib.parse.quote(key, safe="")


@contextlib.contextmanager
def cluster(root: Path, token: str = "", env: dict[str, str] | None = None) -> Iterator[Cluster]:
    c = Cluster(root, env=dict(env or {}), token=token)
    try:
        yield c
    finally:
        c.shutdown()
