"""The composition root: one node's parts, wired, started and stopped.

`Node` builds the parts and gives each the narrow collaborators it uses; it holds no
logic of its own beyond start-up and shutdown. The parts:

- `store`: the storage, the commit log (group commit, durability), the local `Replica`
  and the `HintStore`; `store.identity` reads the node id and incarnation.
- `cluster.view.ClusterView`: the cluster state (loaded, set, persisted, subscribed
  to), liveness, placement (`core.placement`), and the replacement flag.
- `cluster.local_replica.LocalReplica`: this node's replica with its hints, as the
  coordinator and the peer server use it.
- `cluster.peer_server.PeerServer`: the replica side of the node-to-node protocol and
  the registry of peer methods the other parts register; `net` carries it
  (`RpcServer`, `TcpTransport`).
- the processes: `Coordinator` (quorum reads and writes), `Gossiper`, `Claimant`
  (staged membership changes), `Transfers`, `Janitor`, `AntiEntropy`,
  `Refill`, `HintDelivery`; `StatusReport` for the admin API and metrics.

The HTTP edge (`edge.web`, `edge.http1`) is given this object as its ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from dynamo_node.cluster.antientropy import AntiEntropy
from dynamo_node.cluster.claimant import Claimant
from dynamo_node.cluster.coordinator import Coordinator
from dynamo_node.cluster.gossiper import Gossiper
from dynamo_node.cluster.hint_delivery import HintDelivery
from dynamo_node.cluster.janitor import Janitor
from dynamo_node.cluster.local_replica import LocalReplica
from dynamo_node.cluster.peer_server import PeerServer
from dynamo_node.cluster.refill import Refill
from dynamo_node.cluster.status import StatusReport
from dynamo_node.cluster.transfer import Transfers
from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import InvalidRequest
from dynamo_node.core.liveness import FailureDetector
from dynamo_node.core.membership import ClusterState, Member
from dynamo_node.net.discovery import split_hostport
from dynamo_node.net.rpc_client import TcpTransport
from dynamo_node.net.rpc_server import RpcServer
from dynamo_node.net.tls import client_context, server_context
from dynamo_node.net.transport import Transport
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.hints import HintStore
from dynamo_node.store.identity import is_fresh, load_incarnation, load_node_id
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import Storage

log = logging.getLogger("dynamo.node")

#: how often a failed storage is reopened to see whether it can write again
STORAGE_RECOVERY_S = 5.0


class Node:
    def __init__(
        self,
        config: NodeConfig,
        storage: Storage,
        transport_factory: Callable[[Node], Transport] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        serve_peers: bool = True,
    ) -> None:
        self.config = config
        self.storage = storage
        self.serve_peers = serve_peers
        host = config.advertise or config.host
        self.node_id = load_node_id(storage, config.node_id, f"{host}:{config.port}")
        self.member = Member(
            self.node_id,
            f"{host}:{config.port}",
            f"{host}:{config.effective_peer_port}",
            "joining",
        )
        # a seed that is this very node (pod-0 of a StatefulSet is everybody's seed)
        self.seeds = [seed for seed in config.seeds if seed != self.member.address]
        self.commit_log = GroupCommit(storage, config.durability, config.fsync_interval_s)
        #: the data directory was new at this start (no incarnation saved in it)
        self.fresh = is_fresh(storage)
        self.actor = f"{self.node_id}.{load_incarnation(storage)}"
        self.replica = Replica(storage, self.commit_log, self.actor, config)
        self.hints = HintStore(storage, self.commit_log, lww=config.lww)
        self.view = ClusterView(
            self.member,
            storage,
            self.commit_log,
            FailureDetector(self.node_id, config.failure_timeout_s),
            monotonic,
            self.fresh,
            config.cluster_id,
        )
        state = self.view.state
        if config.cluster_id and state is not None and state.cluster != config.cluster_id:
            raise InvalidRequest(
                f"data dir {config.data_dir} belongs to cluster {state.cluster!r}, not "
                f"{config.cluster_id!r} (--cluster-id): refusing to start rather than mix "
                "two clusters' data"
            )
        self.ready = False
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.local = LocalReplica(
            self.replica, self.hints, self.commit_log, storage, self.view, config.lww
        )
        self.peers = PeerServer(self.view, self.local, config.durability == "sync")
        # replies to writes leave only once the writes are in the WAL (grouped writes)
        self._rpc = RpcServer(
            self.peers.handle,
            config.cluster_token,
            fast=self.peers.serve_now,
            before=storage.flush,
            hello_timeout_s=config.peer_hello_timeout_s,
            max_unauthenticated=config.peer_max_unauthenticated,
        )
        self.transport: Transport = (
            transport_factory(self)
            if transport_factory
            else TcpTransport(
                self.node_id,
                self._resolve_peer,
                token=config.cluster_token,
                connect_timeout=config.peer_connect_timeout_s,
                ssl=client_context(config),
            )
        )
        self.coordinator = Coordinator(
            self.node_id, config, self.local, self.hints, self.transport, self.view
        )
        self.gossiper = Gossiper(
            self.view,
            self.transport,
            self.peers,
            config,
            self.seeds,
            holds_data=self.local.holds_data,
            storage_failed=lambda: storage.failure is not None,
        )
        self.claimant = Claimant(self.view, config, self.gossiper.push_soon)
        self.anti_entropy = AntiEntropy(
            self.view,
            self.replica,
            storage,
            self.commit_log,
            self.transport,
            self.peers,
            config,
            self.actor,
        )
        self.transfers = Transfers(
            self.view,
            self.transport,
            config,
            storage,
            self.commit_log,
            self.anti_entropy.exchange,
            self.gossiper.push_soon,
        )
        self.peers.on_bulk = self.transfers.received
        self.janitor = Janitor(self.view, self.replica, self.anti_entropy.discard)
        self.jobs = self.anti_entropy.jobs
        self.refill = Refill(self.view, self.anti_entropy.exchange, self.gossiper.push_soon)
        self.hint_delivery = HintDelivery(
            self.view, self.hints, self.replica, self.transport, config
        )
        self.report = StatusReport(
            config,
            self.view,
            self.hints,
            self.replica,
            self.transfers,
            self.refill,
            self.claimant,
            self.anti_entropy,
            self.storage_failure,
        )

    def _resolve_peer(self, node: str) -> tuple[str, int] | None:
        state = self.view.state
        if state is not None and node in state.members:
            return split_hostport(state.members[node].peer)
        return self.gossiper.seed_addresses.get(node)

    # --- storage health ----------------------------------------------------------------
    def storage_failure(self) -> str | None:
        """Why this node's storage cannot write (disk full, I/O error), or None."""
        failure = self.storage.failure or self.commit_log.failed
        return str(failure) if failure is not None else None

    async def _recover_storage(self) -> None:
        """While the storage is failed, try to reopen it every few seconds (space
        freed, the device back): from then on the node counts towards quorums again."""
        while True:
            await asyncio.sleep(STORAGE_RECOVERY_S)
            if self.storage.failure is None:
                continue
            try:
                await asyncio.to_thread(self.storage.recover)
            except Exception as exc:
                log.warning("storage still failing (%s); retrying in %ss", exc, STORAGE_RECOVERY_S)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        view = self.view
        self.storage.group_writes(asyncio.get_running_loop().call_soon)
        self.commit_log.start()
        if view.state is None and not self.seeds and not self.config.cluster_id:
            cluster = uuid.uuid4().hex[:12]
            view.found(
                ClusterState.founding(cluster, self.member, self.config.partitions, self.config.n)
            )
            log.info("formed a new cluster %s of one node (%s)", cluster, self.node_id)
        elif view.state is not None and self.node_id not in view.state.members:
            view.set_state(view.state.with_member(self.member))
        elif view.state is not None:
            view.set_state(view.state)
        if view.state is None:
            log.info(
                "waiting to learn the ring of cluster %s by gossip",
                self.config.cluster_id or "(any that lists this node)",
            )
        view.heard_all()
        if self.serve_peers:
            await self._rpc.start(
                self.config.host, self.config.effective_peer_port, ssl=server_context(self.config)
            )
        for name, loop in (
            ("gossip", self.gossiper.run),
            ("hints", self.hint_delivery.run),
            ("transfers", self.transfers.run),
            ("janitor", self.janitor.run),
            ("refill", self.refill.run),
            ("storage-recovery", self._recover_storage),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))
        self.anti_entropy.start()
        self.ready = True

    async def stop(self) -> None:
        self.stopping = True
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.transfers.stop()
        await self.anti_entropy.stop()
        for task in list(self.coordinator.stats.background):
            task.cancel()
        await self._rpc.stop()
        await self.transport.close()
        await self.commit_log.stop()
        # last, with no await before the close: nothing writes after the trees are saved
        self.anti_entropy.save()
        self.storage.close()

    # --- the ports the HTTP edge uses -------------------------------------------------------
    @property
    def state(self) -> ClusterState | None:
        return self.view.state

    def require_state(self) -> ClusterState:
        return self.view.require_state()

    def start_anti_entropy(self) -> str:
        self.view.require_state()
        return self.anti_entropy.start_job()

    def status(self) -> dict[str, Any]:
        return self.report.status()

    def ring_view(self) -> dict[str, Any]:
        return self.report.ring_view()
