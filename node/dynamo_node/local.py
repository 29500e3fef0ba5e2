"""`dynamoctl local`: a real N-node cluster on this machine.

Node i is a separate `dynamo-node` process on 127.0.0.1:BASE+i (peer port +10000) with
its own RocksDB directory DIR/node{i}; logs go to DIR/node{i}.log. Node 0 founds the
cluster, the others start with `--seed` node 0; nodes not yet in the ring are joined
with the staged admin API (join ... commit), exactly as an operator would. Re-running
on the same DIR restarts the same cluster with its data (the ring is saved in each
node's RocksDB). Once formed, the cluster's id is recorded in DIR/cluster-id and given
to every node on later starts (`--cluster-id`), so a node whose directory was lost,
node 0 included, rejoins this cluster by gossip instead of founding a new one. A node
that has left the ring (leave or force-remove) is not started again.

Before starting anything, every port must be free and no node directory in use (else
exit 2, naming it); a node that exits during start-up stops the others and its error is
quoted. The nodes run in their own session, so Ctrl-C, SIGTERM and SIGHUP (the terminal
closed) reach only this process, which stops every node (SIGTERM, then SIGKILL after a
grace period); on Linux a node also gets SIGTERM if this process is killed outright.

Exit codes: 0 stopped by a signal, 2 a usage error (bad flag, port in use, directory in
use, a node refusing its settings), 4 the cluster did not become available (a timeout),
6 a node failed during start-up for another reason.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dynamo_node.client import ClientError, DynamoClient
from dynamo_node.core.config import PEER_PORT_OFFSET, NodeConfig
from dynamo_node.core.errors import DynamoError
from dynamo_node.extras import node_missing_message
from dynamo_node.host.memory import default_row_cache_bytes, memory_limit

START_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 300.0
STOP_GRACE_S = 15.0
POLL_S = 0.1
WATCH_S = 0.5
#: --restart: a node that ran shorter than this before exiting is restarted after a
#: delay doubling from RESTART_DELAY_S up to RESTART_DELAY_MAX_S
RESTART_STABLE_S = 10.0
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
LOG_TAIL_LINES = 8

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 4
EXIT_OTHER = 6

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


class LocalError(RuntimeError):
    def __init__(self, message: str, code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


class _HTTPStatusError(OSError):
    """A node answered with an error status (a retryable failure while waiting)."""


def _call(address: str, method: str, path: str, payload: Any = None, timeout: float = 5.0) -> Any:
    """One JSON call to a node started here, over the client's raw request: an error
    status or a lost connection is an OSError, an answer that is not JSON a ValueError."""
    data = json.dumps(payload).encode() if payload is not None else None
    token = os.environ.get("DYNAMO_CLUSTER_TOKEN")
    with DynamoClient(address, token=token or None, timeout=timeout) as client:
        try:
            resp = client.request(method, path, data, {"Content-Type": "application/json"})
        except ClientError as exc:
            raise OSError(str(exc)) from None
    if resp.status >= 400:
        raise _HTTPStatusError(f"HTTP Error {resp.status}: {resp.reason}")
    return json.loads(resp.body or b"null")


def _wait(what: str, check: Any, timeout: float = START_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(POLL_S)
    raise LocalError(f"timed out waiting for {what} ({last})")


def check_port(port: int, what: str) -> None:
    """`port` is free on HOST (bound as the node binds it, with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise LocalError(
                f"port {port} ({what}) is {reason}: another dynamoctl local or program "
                "listens there; stop it or choose another --port",
                EXIT_USAGE,
            ) from None


def check_unlocked(data_dir: Path) -> None:
    """No process holds the RocksDB lock of `data_dir` (a node already running on it)."""
    import fcntl

    lock = data_dir / "LOCK"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LocalError(f"cannot use {data_dir}: {exc}", EXIT_USAGE) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise LocalError(
            f"another dynamo-node is using {data_dir} (is a dynamoctl local already running "
            "on this --data-dir?)",
            EXIT_USAGE,
        ) from None
    finally:
        os.close(fd)  # releases the probe's lock


def departed_nodes(dirs: list[Path]) -> set[str]:
    """The nodes that have left the ring (leave or force-remove), by the newest cluster
    state saved in any of `dirs` (read-only; a node never started has none)."""
    import msgpack

    from dynamo_node.core.membership import ClusterState
    from dynamo_node.store.identity import META_STATE
    from dynamo_node.store.storage_rocks import salvage_meta

    newest: ClusterState | None = None
    for path in dirs:
        if not (path / "CURRENT").exists():
            continue
        raw = salvage_meta(str(path), [META_STATE]).get(META_STATE)
        if raw is None:
            continue
        try:
            state = ClusterState.from_wire(msgpack.unpackb(raw, raw=False))
        except Exception:  # unreadable: the nodes will learn the ring by gossip
            continue
        if newest is None or state.version > newest.version:
            newest = state
    if newest is None:
        return set()
    left = {m.node for m in newest.members.values() if m.status == "left"}
    return left | set(newest.removed)


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: the node gets SIGTERM when `dynamoctl local` dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalCluster:
    def __init__(self, nodes: int, base_port: int, data_dir: Path, node_args: list[str]) -> None:
        if nodes < 1:
            raise LocalError("--nodes must be at least 1", EXIT_USAGE)
        if not 1 <= base_port <= 65535:
            raise LocalError(f"--port must be in 1..65535, got {base_port}", EXIT_USAGE)
        if base_port + nodes - 1 + PEER_PORT_OFFSET > 65535:
            raise LocalError(
                f"--port {base_port} leaves no room for the peer ports of {nodes} nodes "
                f"(PORT+{PEER_PORT_OFFSET}+i must be <= 65535): use at most "
                f"{65535 - PEER_PORT_OFFSET - nodes + 1}",
                EXIT_USAGE,
            )
        self.count = nodes
        self.base = base_port
        self.dir = data_dir.absolute()
        self.node_args = node_args
        #: the nodes this run starts (ring members, or not yet joined), by index
        self.members: list[int] = list(range(nodes))
        self.departed: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.commands: dict[int, list[str]] = {}
        self.started_at: dict[int, float] = {}
        self.log_offset: dict[int, int] = {}

    def address(self, i: int) -> str:
        return f"{HOST}:{self.base + i}"

    def log_path(self, i: int) -> Path:
        return self.dir / f"node{i}.log"

    @property
    def first(self) -> int:
        return self.members[0]

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
        cluster = _call(self.address(self.first), "GET", "/v1/admin/status")["cluster"]
        if cluster and self.recorded_id() is None:
            self.id_file.write_text(f"{cluster}\n", encoding="utf-8")

    def prepare(self) -> None:
        """Everything checked before any node starts: the directory, which nodes are
        still members, free ports, no node directory in use."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(f"cannot create --data-dir {self.dir}: {exc}", EXIT_USAGE) from None
        dirs = [self.dir / f"node{i}" for i in range(self.count)]
        for path in dirs:
            check_unlocked(path)
        gone = departed_nodes(dirs)
        self.departed = [i for i in range(self.count) if f"node{i}" in gone]
        self.members = [i for i in range(self.count) if f"node{i}" not in gone]
        if not self.members:
            raise LocalError(
                f"every node in {self.dir} has left the cluster: use another --data-dir",
                EXIT_USAGE,
            )
        for i in self.members:
            check_port(self.base + i, f"node{i}'s HTTP port")
            check_port(self.base + i + PEER_PORT_OFFSET, f"node{i}'s peer port")

    def command(self, i: int) -> list[str]:
        cluster = self.recorded_id()
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
            *(["--cluster-id", cluster] if cluster else []),
            *self.node_args,
        ]
        if i != self.first:
            args += ["--seed", self.address(self.first)]
        return args

    def restart_hint(self, i: int) -> str:
        """The shell command that starts node i again as this run started it."""
        log = shlex.quote(str(self.log_path(i)))
        return f"{shlex.join(self.commands[i])} >> {log} 2>&1 &"

    def launch(self, i: int) -> None:
        self.commands[i] = self.command(i)
        log_path = self.log_path(i)
        self.log_offset[i] = log_path.stat().st_size if log_path.exists() else 0
        preexec = _set_parent_death_signal if sys.platform == "linux" else None
        log = open(log_path, "ab")  # noqa: SIM115 - child owns it
        try:
            self.procs[i] = subprocess.Popen(
                self.commands[i],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # its own session: the terminal's signals (Ctrl-C, SIGHUP) reach only
                # `dynamoctl local`, which stops the nodes in order
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - this process runs no threads
            )
        finally:
            log.close()
        self.started_at[i] = time.monotonic()

    def start(self) -> None:
        self.prepare()
        for i in self.members:
            self.launch(i)
        for i in self.members:
            _wait(f"node{i} to start (see {self.log_path(i)})", lambda i=i: self._healthy(i))

    def log_tail(self, i: int) -> str:
        """The last lines node i logged in this run."""
        try:
            with open(self.log_path(i), "rb") as f:
                f.seek(self.log_offset.get(i, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-LOG_TAIL_LINES:])

    def check_alive(self) -> None:
        for i in self.members:
            rc = self.procs[i].poll()
            if rc is not None:
                tail = self.log_tail(i) or "(nothing logged)"
                raise LocalError(
                    f"node{i} exited with {rc} during start-up (log {self.log_path(i)}):\n{tail}",
                    EXIT_USAGE if rc == EXIT_USAGE else EXIT_OTHER,
                )

    def _healthy(self, i: int) -> bool:
        self.check_alive()
        if not _call(self.address(i), "GET", "/healthz", timeout=1):
            return False
        # the process answering must be the one started here, not another cluster's
        pid = _call(self.address(i), "GET", "/v1/admin/status", timeout=2).get("pid")
        if pid is not None and pid != self.procs[i].pid:
            self.check_alive()  # ours failed to bind: quote its error
            raise LocalError(
                f"port {self.base + i} is answered by another process (pid {pid}), not "
                f"node{i} started here: stop it or choose another --port",
                EXIT_USAGE,
            )
        return True

    def form_ring(self) -> None:
        first = self.address(self.first)
        cluster = self.recorded_id()
        if cluster is not None:
            # node 0 may have lost its directory: it then learns the ring from the others
            _wait(
                f"node{self.first} to learn the ring of cluster {cluster}",
                lambda: self._alive_call(first)["cluster"] == cluster,
            )
        status = _call(first, "GET", "/v1/admin/status")
        in_ring = {m["node"] for m in status["members"] if m["partitions"] > 0}
        missing = [i for i in self.members if f"node{i}" not in in_ring]
        if not missing:
            return
        for i in missing:
            _wait(
                f"node{i} to be known by gossip",
                lambda i=i: any(
                    m["node"] == f"node{i}" for m in self._alive_call(first)["members"]
                ),
            )
            _call(first, "POST", "/v1/admin/join", {"address": self.address(i)})
        _call(first, "POST", "/v1/admin/commit")

    def _alive_call(self, address: str) -> Any:
        self.check_alive()
        return _call(address, "GET", "/v1/admin/status")

    def wait_settled(self) -> None:
        _wait("the ring to settle", self._settled, timeout=SETTLE_TIMEOUT_S)

    def _settled(self) -> bool:
        """Every node started here has the same ring and is up, no transfer between
        nodes that are up runs (members not started here may be down)."""
        self.check_alive()
        mine = {f"node{i}" for i in self.members}
        versions = set()
        for i in self.members:
            st = _call(self.address(i), "GET", "/v1/admin/status")
            states = {m["node"]: m["state"] for m in st["members"]}
            if any(states.get(node) != "up" for node in mine):
                return False
            if any(
                states.get(t["from"]) == "up" and states.get(t["to"]) == "up"
                for t in st["transfers"]
            ):
                return False
            versions.add(st["ring_version"])
        return len(versions) == 1

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def watch(self, restart: bool) -> None:
        """Block until a signal. A node that exits is restarted (`restart`, with a
        growing delay if it keeps exiting at once) or reported with its command line."""
        reported: set[int] = set()
        due: dict[int, float] = {}
        delay = dict.fromkeys(self.members, RESTART_DELAY_S)
        while True:
            now = time.monotonic()
            for i in self.members:
                p = self.procs[i]
                if p.poll() is None or i in reported:
                    continue
                reported.add(i)
                if not restart:
                    print(
                        f"node{i} exited with {p.returncode}; the others keep serving. "
                        f"Its log: {self.log_path(i)}. To start it again (it then runs "
                        f"outside this dynamoctl local; or run dynamoctl local --restart):\n"
                        f"  {self.restart_hint(i)}",
                        flush=True,
                    )
                    continue
                ran = now - self.started_at[i]
                wait = 0.0 if ran >= RESTART_STABLE_S else delay[i]
                if ran >= RESTART_STABLE_S:
                    delay[i] = RESTART_DELAY_S
                else:
                    delay[i] = min(delay[i] * 2, RESTART_DELAY_MAX_S)
                due[i] = now + wait
                print(f"node{i} exited with {p.returncode}; restarting it in {wait:g}s", flush=True)
            for i, when in list(due.items()):
                if now >= when:
                    del due[i]
                    reported.discard(i)
                    self.launch(i)
                    print(f"node{i} restarted: pid {self.procs[i].pid}", flush=True)
            time.sleep(WATCH_S)


class _Stop(Exception):
    pass


def dynamoctl_command() -> str:
    """How to run dynamoctl from a fresh shell: the script beside this interpreter (the
    virtualenv's bin), else this interpreter running the module."""
    script = Path(sys.executable).parent / "dynamoctl"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m dynamo_node.cli"


def validate_settings(args: argparse.Namespace) -> list[str]:
    """The cluster-wide flags given, checked as the nodes will check them (exit 2)."""
    settings = {
        flag: getattr(args, flag)
        for flag in ("partitions", "n", "r", "w", "durability")
        if getattr(args, flag, None) is not None
    }
    try:
        NodeConfig(data_dir="", **settings)
    except DynamoError as exc:
        raise LocalError(str(exc), EXIT_USAGE) from None
    node_args: list[str] = []
    for flag, value in settings.items():
        node_args += [f"--{flag}", str(value)]
    return node_args


def _banner(cluster: LocalCluster) -> None:
    print(f"dynamokv: {len(cluster.members)}-node cluster running (data in {cluster.dir})")
    for i in cluster.members:
        print(f"  node{i}  http://{cluster.address(i)}  pid {cluster.procs[i].pid}")
    for i in cluster.departed:
        print(
            f"  node{i}  has left the cluster: not started "
            f"(its directory {cluster.dir / f'node{i}'} is kept)"
        )
    ctl = dynamoctl_command()
    last = cluster.members[-1]
    print("try, in another terminal:")
    print(f"  {ctl} --node {cluster.address(cluster.first)} put hello world")
    print(f"  {ctl} --node {cluster.address(last)} get hello")
    bindir = Path(sys.executable).parent
    if (bindir / "activate").exists():
        print(f"(or first: source {shlex.quote(str(bindir / 'activate'))}, then just dynamoctl)")
    print("Ctrl-C stops the cluster.", flush=True)


def run_local(args: argparse.Namespace) -> int:
    try:
        problem = node_missing_message()
        if problem:
            raise LocalError(problem, EXIT_USAGE)
        node_args = validate_settings(args)
        cluster = LocalCluster(int(args.nodes), int(args.port), Path(args.data_dir), node_args)
    except LocalError as exc:
        print(f"dynamoctl local: {exc}", file=sys.stderr)
        return exc.code
    # the nodes share this machine's memory: each gets its part of the default row cache
    cache = default_row_cache_bytes(memory_limit(), cluster.count)
    cluster.node_args += ["--row-cache-bytes", str(cache)]

    def on_signal(signum: int, frame: Any) -> None:
        raise _Stop

    stops = (signal.SIGTERM, signal.SIGHUP)
    old = {sig: signal.signal(sig, on_signal) for sig in stops}
    code = 0
    try:
        cluster.start()
        cluster.form_ring()
        cluster.wait_settled()
        cluster.record_id()
        _banner(cluster)
        cluster.watch(bool(getattr(args, "restart", False)))
    except (KeyboardInterrupt, _Stop):
        print("\nstopping...", flush=True)
    except LocalError as exc:
        print(f"dynamoctl local: {exc}", file=sys.stderr, flush=True)
        code = exc.code
    finally:
        # a second signal must not interrupt stopping the nodes
        for sig in (*stops, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        try:
            cluster.stop()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if code == 0:
        print("stopped.", flush=True)
    return code
