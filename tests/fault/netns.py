"""Linux network namespaces for partition tests: one namespace per node, on 127.x.

Topology (namespace names carry the owner's PID, so a crashed run's leftovers are swept
by name on the next run):

    hub   dkvf<PID>x<SEQ>h     bridge br0 127.77.0.254/24; veth v<i> per node, a bridge port
    node  dkvf<PID>x<SEQ>n<i>  eth0 127.77.0.<i+1>/24 (the peer of v<i>); lo 127.0.0.1/32

Why 127.x works (verified on this kernel, 6.18): Linux treats 127.0.0.0/8 as martian on
any device but `lo` unless `route_localnet` is set, so every namespace sets
net.ipv4.conf.{all,default,eth0|br0}.route_localnet=1 (without it connect() fails with
EINVAL). `lo` keeps only 127.0.0.1/32: with the default 127.0.0.0/8 on `lo`, every 127.x
peer would be a local address and never leave the namespace. The root namespace is not
touched at all.

The test process reaches the nodes from the hub: `entered()` moves the *calling thread*
into the hub namespace (setns(2) on a thread changes that thread only), so client
threads open their sockets there; `enter_for_good()` does it for a worker thread's life.

Faults:
- `cut(i)` / `restore(i)`: the hub end of node i's veth down/up: node i reaches nobody
  and nobody (clients included) reaches it.
- `partition(groups)`: nodes in different groups cannot talk to each other, but every
  node still talks to the hub, so there are clients on every side. Each node gets a
  permanent neighbour entry pointing the other side's addresses at an unused MAC: frames
  are silently dropped, as on a real partition (timeouts, not resets). This kernel has
  no tc qdiscs (netem, prio: "unknown qdisc kind") and no iptables/nft; neighbour
  entries need nothing but iproute2. Neighbour entries are permanent from the start (no
  ARP), so healing is immediate and never waits for a FAILED entry to expire.
- `heal()`: every neighbour entry back to the real MAC, every link up.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

NETNS_DIR = Path("/run/netns")
PREFIX = "dkvf"
SUBNET = "127.77.0"
PREFIX_LEN = 24
HUB_HOST = 254
#: an address no interface has: frames to it are dropped by every receiver
DEAD_MAC = "02:00:00:00:00:01"
CLONE_NEWNET = 0x40000000
_SWEEP = re.compile(rf"^{PREFIX}(\d+)x\d+[hn]")
_seq = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be built here (not root, no iproute2, EPERM, ...)."""


def _run(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"{' '.join(argv)}: {exc}") from None
    if out.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(argv)}: {out.stderr.strip() or out.returncode}")
    return out.stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _sysctl(ns: str, *settings: str) -> None:
    _run("ip", "netns", "exec", ns, "sysctl", "-qw", *settings)


def sweep_stale() -> list[str]:
    """Delete namespaces this module made in runs whose process is gone (by name)."""
    removed: list[str] = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in sorted(NETNS_DIR.iterdir()):
        match = _SWEEP.match(entry.name)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        _kill_inside(entry.name)
        with contextlib.suppress(NetnsUnavailable):
            _run("ip", "netns", "del", entry.name)
            removed.append(entry.name)
    return removed


def _kill_inside(ns: str) -> None:
    """SIGKILL every process still running in namespace `ns`, by PID."""
    with contextlib.suppress(NetnsUnavailable):
        for pid in _run("ip", "netns", "pids", ns).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)


class Netns:
    """A hub and `count` node namespaces; `destroy()` removes every one of them."""

    def __init__(self, count: int) -> None:
        if count < 1 or count > 200:
            raise ValueError("1..200 nodes")
        tag = f"{PREFIX}{os.getpid()}x{next(_seq)}"
        self.count = count
        self.hub = f"{tag}h"
        self.node_ns = [f"{tag}n{i}" for i in range(count)]
        self.macs: list[str] = []
        self._made: list[str] = []
        self._lock = threading.Lock()
        self.cut_nodes: set[int] = set()
        self.severed: set[frozenset[int]] = set()

    # --- addresses ---------------------------------------------------------------------
    def host(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    @property
    def hub_host(self) -> str:
        return f"{SUBNET}.{HUB_HOST}"

    # --- life cycle --------------------------------------------------------------------
    def create(self) -> Netns:
        """Build the topology; on any failure remove what was built and raise
        `NetnsUnavailable` with the reason."""
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root (euid is not 0)")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("iproute2 (`ip`) is not installed")
        sweep_stale()
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create(self) -> None:
        hub = self.hub
        _run("ip", "netns", "add", hub)
        self._made.append(hub)
        self._prepare(hub)
        _run("ip", "-n", hub, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        _run("ip", "-n", hub, "addr", "add", f"{self.hub_host}/{PREFIX_LEN}", "dev", "br0")
        _run("ip", "-n", hub, "link", "set", "br0", "up")
        _sysctl(hub, "net.ipv4.conf.br0.route_localnet=1")
        for i, ns in enumerate(self.node_ns):
            _run("ip", "netns", "add", ns)
            self._made.append(ns)
            self._prepare(ns)
            veth = ("link", "add", f"v{i}", "type", "veth", "peer", "eth0", "netns", ns)
            _run("ip", "-n", hub, *veth)
            _run("ip", "-n", hub, "link", "set", f"v{i}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.host(i)}/{PREFIX_LEN}", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _sysctl(ns, "net.ipv4.conf.eth0.route_localnet=1")
            self.macs.append(_run("ip", "-n", ns, "-br", "link", "show", "eth0").split()[2])
        hub_mac = _run("ip", "-n", hub, "-br", "link", "show", "br0").split()[2]
        for i, ns in enumerate(self.node_ns):
            self._neigh(ns, self.hub_host, hub_mac)
            self._neigh(hub, self.host(i), self.macs[i], dev="br0")
            for j in range(self.count):
                if j != i:
                    self._neigh(ns, self.host(j), self.macs[j])

    @staticmethod
    def _prepare(ns: str) -> None:
        _sysctl(ns, "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.default.route_localnet=1")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo")
        _run("ip", "-n", ns, "addr", "add", "127.0.0.1/32", "dev", "lo")

    @staticmethod
    def _neigh(ns: str, host: str, mac: str, dev: str = "eth0") -> None:
        entry = (host, "lladdr", mac, "dev", dev, "nud", "permanent")
        _run("ip", "-n", ns, "neigh", "replace", *entry)

    def destroy(self) -> None:
        """Kill whatever still runs inside, then delete every namespace (their veths and
        the bridge go with them). Safe to call twice."""
        for ns in reversed(self._made):
            _kill_inside(ns)
            with contextlib.suppress(NetnsUnavailable):
                _run("ip", "netns", "del", ns)
        self._made.clear()

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.node_ns[i]]

    # --- threads in the hub ------------------------------------------------------------
    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with this thread in the hub namespace, then come back."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(NETNS_DIR / self.hub, os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def enter_for_good(self) -> None:
        """Move this (worker) thread into the hub namespace for the rest of its life."""
        target = os.open(NETNS_DIR / self.hub, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)

    # --- faults --------------------------------------------------------------------------
    def cut(self, i: int) -> None:
        with self._lock:
            _run("ip", "-n", self.hub, "link", "set", f"v{i}", "down")
            self.cut_nodes.add(i)

    def restore(self, i: int) -> None:
        with self._lock:
            _run("ip", "-n", self.hub, "link", "set", f"v{i}", "up")
            self.cut_nodes.discard(i)

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Nodes of different groups stop hearing each other (a node in no group hears
        nobody); the hub keeps reaching every node."""
        sides = [set(g) for g in groups]
        self.sever(
            (i, j)
            for i in range(self.count)
            for j in range(self.count)
            if i != j and not any(i in side and j in side for side in sides)
        )

    def sever(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Exactly these node pairs (either order) cannot talk; all other pairs can.
        Overlapping sides (a bridge node hearing both halves) are allowed."""
        apart = {frozenset(p) for p in pairs}
        with self._lock:
            for i in range(self.count):
                for j in range(self.count):
                    if i != j:
                        mac = DEAD_MAC if frozenset((i, j)) in apart else self.macs[j]
                        self._neigh(self.node_ns[i], self.host(j), mac)
            self.severed = apart

    def heal(self) -> None:
        """Every link up and every node hearing every other."""
        for i in sorted(self.cut_nodes):
            self.restore(i)
        self.sever(())


def probe() -> str | None:
    """None when namespaces with 127.x addresses work here, else the reason they don't.

    Builds a 2-node topology, listens on node 0 and connects from node 1's address
    space and from the hub (through a thread that entered it), then removes it all.
    """
    import socket

    try:
        net = Netns(2).create()
    except NetnsUnavailable as exc:
        return str(exc)
    try:
        listener = subprocess.Popen(
            [
                *net.exec_prefix(0),
                "python3",
                "-c",
                "import socket,sys;s=socket.socket();"
                f"s.bind(('{net.host(0)}',7999));s.listen();print('up',flush=True);"
                "[s.accept()[0].close() for _ in range(2)]",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert listener.stdout is not None
            if listener.stdout.readline().strip() != "up":
                raise NetnsUnavailable("cannot listen on a 127.x address inside a namespace")
            _run(
                *net.exec_prefix(1),
                "python3",
                "-c",
                f"import socket;socket.create_connection(('{net.host(0)}',7999),timeout=3)",
            )
            with net.entered(), socket.create_connection((net.host(0), 7999), timeout=3):
                pass
        except (NetnsUnavailable, OSError) as exc:
            return f"127.x traffic between namespaces does not work: {exc}"
        finally:
            listener.kill()
            listener.wait(5)
    finally:
        net.destroy()
    return None
