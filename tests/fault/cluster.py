"""The harness's `Cluster` for fault runs: on loopback, or each node in its own network
namespace (tests/fault/netns.py) so that links can be cut and the network partitioned.

In namespaces every node listens on its own 127.77.0.x address with the same ports
(NODE_PORT, and NODE_PORT + 10000 for the peer protocol); the test process talks to the
nodes from the hub namespace (`hub()` for a block, `enter_hub_for_good()` for a worker
thread). `fault_cluster()` always stops every process and deletes every namespace.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo_node.core.config import PEER_PORT_OFFSET
from tests.fault.netns import Netns
from tests.harness import Cluster, NodeProc, free_port

NODE_PORT = 7070
#: an anti-entropy pass over a few thousand keys takes well under this
ANTI_ENTROPY_TIMEOUT_S = 60.0


@dataclass
class NetNodeProc(NodeProc):
    """A node listening on `host` (a 127.77.0.x address inside its namespace)."""


def peer_address(node: NodeProc) -> tuple[str, int]:
    """Where `node` serves the node-to-node protocol (no --peer-port is ever passed)."""
    host, _, port = node.address.rpartition(":")
    return host, int(port) + PEER_PORT_OFFSET


@dataclass
class FaultCluster(Cluster):
    net: Netns | None = None

    def add_node(
        self,
        *extra: str,
        seed: NodeProc | None = None,
        node_id: str | None = None,
        wait: bool = True,
    ) -> NodeProc:
        """Start one more node (in the next namespace when there are namespaces); with
        `wait=False` the caller waits for it (`wait_ready`), so nodes start in parallel."""
        index = len(self.nodes)
        data_dir = self.root / f"node{index}"
        node_id = node_id or f"n{index}"
        if self.net is None:
            host, port, prefix = "127.0.0.1", free_port(), []
        else:
            host, port, prefix = self.net.host(index), NODE_PORT, self.net.exec_prefix(index)
        args = [
            *prefix,
            sys.executable,
            "-m",
            "dynamo_node",
            "--data-dir",
            str(data_dir),
            "--host",
            host,
            "--advertise",
            host,
            "--port",
            str(port),
            "--node-id",
            node_id,
            *extra,
        ]
        node = NetNodeProc(
            index, port, data_dir, args, self.root / f"node{index}.log", node_id, host=host
        )
        if seed is not None:
            args += ["--seed", seed.address]
        self.nodes.append(node)
        self.start(node, wait=wait)
        return node

    # --- reaching the nodes --------------------------------------------------------------
    def hub(self) -> contextlib.AbstractContextManager[None]:
        """Where this thread must be to reach the nodes, for the length of a block."""
        return self.net.entered() if self.net is not None else contextlib.nullcontext()

    def enter_hub_for_good(self) -> None:
        if self.net is not None:
            self.net.enter_for_good()

    def request(
        self,
        node: NodeProc,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        with self.hub():
            return super().request(node, method, path, body, headers, timeout)

    # --- admin helpers ---------------------------------------------------------------------
    def up(self) -> list[NodeProc]:
        return [n for n in self.nodes if n.alive() and not n.paused]

    def ring(self, node: NodeProc) -> dict[str, Any]:
        return dict(self.admin(node, "GET", "ring"))

    def anti_entropy(
        self, node: NodeProc, timeout: float = ANTI_ENTROPY_TIMEOUT_S
    ) -> dict[str, Any]:
        return super().anti_entropy(node, timeout)

    def hints_pending(self) -> int:
        return sum(int(self.status(n)["hints_pending"]) for n in self.nodes)

    def shutdown(self) -> None:
        if self.net is not None:
            with contextlib.suppress(Exception):
                self.net.heal()
        super().shutdown()


@contextlib.contextmanager
def fault_cluster(root: Path, count: int, netns: bool) -> Iterator[FaultCluster]:
    """A cluster object whose nodes (started by the caller) are all stopped, and whose
    namespaces are all deleted, however the body ends."""
    net = Netns(count).create() if netns else None
    c = FaultCluster(root, net=net)
    try:
        yield c
    finally:
        try:
            c.shutdown()
        finally:
            if net is not None:
                net.destroy()
