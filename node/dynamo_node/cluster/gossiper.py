"""The gossip process of a node: rounds with peers, seeds, and absorbing states.

Each round (`NodeConfig.gossip_interval_s`, jittered) this node advances its heartbeat
and exchanges cluster state and heartbeats with one random live peer (push-pull, see
`gossip`); one peer believed down is probed on the side so that a dead peer never slows
the rounds. While the node knows no cluster (or only itself) it introduces itself to
its seeds by address. `absorb` decides what to do with a state heard from anyone: it
merges states of its own cluster only, and refuses (counts, logs) any other.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dynamo_node.cluster.peer_server import PeerServer
from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import PeerError
from dynamo_node.core.gossip import pick_peer
from dynamo_node.core.membership import ClusterState, Member
from dynamo_node.net.discovery import fetch_status, split_hostport
from dynamo_node.net.transport import Transport

log = logging.getLogger("dynamo.gossip")

#: changes within this window are pushed to the members together
PUSH_DEBOUNCE_S = 0.2


class Gossiper:
    def __init__(
        self,
        view: ClusterView,
        transport: Transport,
        peers: PeerServer,
        config: NodeConfig,
        seeds: list[str],
        holds_data: Callable[[], bool],
        storage_failed: Callable[[], bool],
    ) -> None:
        self.view = view
        self.transport = transport
        self.config = config
        #: seed addresses other than this node's own
        self.seeds = seeds
        #: this node stores an object or a hint (then it never adopts another cluster)
        self.holds_data = holds_data
        #: this node's storage cannot write (then it sends no heartbeat)
        self.storage_failed = storage_failed
        self.rounds = 0
        #: peer addresses of seeds known before they are members of our state
        self.seed_addresses: dict[str, tuple[str, int]] = {}
        self._rng = random.Random()
        self._probe: asyncio.Future[None] | None = None
        self._push_pending = False
        self._pushes: set[asyncio.Task[None]] = set()
        peers.register("gossip", self._rpc_gossip)

    # --- server side -------------------------------------------------------------------
    async def _rpc_gossip(self, args: Any, caller: str) -> Any:
        view = self.view
        incoming, beats, member = args
        view.detector.observe(beats, view.monotonic())
        if incoming is not None:
            self.absorb(incoming)
        elif member is not None and view.state is not None:
            m = Member.from_wire(member)
            known = view.state.members.get(m.node)
            if known is None or (known.address, known.peer) != (m.address, m.peer):
                status = known.status if known else "joining"
                view.set_state(view.state.with_member(replace(m, status=status)))
                log.info("node %s (%s) is known to the cluster", m.node, m.address)
        return [view.state.to_wire() if view.state else None, view.detector.beats]

    def absorb(self, raw: Any) -> None:
        view = self.view
        try:
            theirs = ClusterState.from_wire(raw)
        except ValueError as exc:
            log.warning("ignored malformed gossip: %s", exc)
            return
        mine = view.state
        expected = mine.cluster if mine is not None else self.config.cluster_id
        if expected and theirs.cluster != expected:
            if mine is not None and self._may_adopt(mine, theirs):
                log.info("adopting cluster %s, which this node was joined into", theirs.cluster)
                view.set_state(theirs)
            else:
                view.refuse_foreign(theirs.cluster)
            return
        if mine is None:
            if view.node_id in theirs.members:
                view.set_state(theirs)
            return
        merged = mine.merge(theirs)
        if merged != mine:
            view.set_state(merged)

    def _may_adopt(self, mine: ClusterState, theirs: ClusterState) -> bool:
        """A node started on its own (no seed, no cluster id) founded a cluster of one;
        when `join` adds it to another cluster it adopts that one, but only while
        nothing can be lost by it: it was never told its cluster, it is alone in its
        ring, the other cluster lists it, and it holds no object and no hint (it never
        accepted a write). Anything else is another cluster's gossip, refused."""
        view = self.view
        return (
            not self.config.cluster_id
            and set(mine.ring_nodes()) == {view.node_id}
            and view.node_id in theirs.members
            and len(theirs.members) > 1
            and not self.holds_data()
        )

    # --- rounds ------------------------------------------------------------------------
    def peers(self) -> list[str]:
        state = self.view.state
        if state is None:
            return []
        return [
            m.node
            for m in state.members.values()
            if m.node != self.view.node_id and m.status != "left"
        ]

    async def round(self, peer: str | None = None) -> None:
        view = self.view
        if self.storage_failed():
            # no heartbeat while the storage cannot write: the others see this node
            # down and route around it (hints for it wait) until it recovers
            return
        view.detector.tick()
        self.rounds += 1
        timeout = max(0.5, self.config.gossip_interval_s)
        if view.state is None or (len(view.state.members) <= 1 and self.seeds):
            for seed in self.seeds:
                await self._introduce(seed, timeout)
            if view.state is None:
                return
        if peer is not None:
            await self.exchange(peer, timeout)
            return
        targets = self.peers()
        live = [n for n in targets if view.is_up(n)]
        dead = [n for n in targets if n not in live]
        probe = pick_peer(view.node_id, dead, self._rng)
        if probe is not None:
            self._probe = asyncio.ensure_future(self.exchange(probe, timeout))
        chosen = pick_peer(view.node_id, live, self._rng)
        if chosen is not None:
            await self.exchange(chosen, timeout)

    async def exchange(self, peer: str, timeout: float) -> None:
        view = self.view
        try:
            reply = await self.transport.call(
                peer,
                "gossip",
                [view.state.to_wire() if view.state else None, view.detector.beats, None],
                timeout,
            )
        except PeerError:
            view.detector.unreachable(peer)
            return
        view.detector.heard(peer, view.monotonic())
        theirs, beats = reply
        view.detector.observe(beats, view.monotonic())
        if theirs is not None:
            self.absorb(theirs)

    async def _introduce(self, seed: str, timeout: float) -> None:
        """Introduce this node to a seed by address (it may not know our id yet)."""
        view = self.view
        try:
            info = await fetch_status(seed, self.config, timeout)
        except Exception as exc:
            log.debug("seed %s unreachable: %s", seed, exc)
            return
        seed_id, seed_peer = str(info.get("node", "")), str(info.get("peer_address", ""))
        if not seed_id or seed_id == view.node_id or not seed_peer:
            return
        if view.state is None or seed_id not in view.state.members:
            self.seed_addresses[seed_id] = split_hostport(seed_peer)
        try:
            reply = await self.transport.call(
                seed_id, "gossip", [None, view.detector.beats, view.member.to_wire()], timeout
            )
        except PeerError as exc:
            log.debug("seed %s gossip failed: %s", seed, exc)
            return
        theirs, beats = reply
        view.detector.heard(seed_id, view.monotonic())
        view.detector.observe(beats, view.monotonic())
        if theirs is not None:
            self.absorb(theirs)

    async def push(self) -> None:
        """Send the current state to every member now (after a commit, a switch)."""
        if self.view.state is None:
            return
        timeout = self.config.request_timeout_ms / 1000
        await asyncio.gather(
            *(self.exchange(p, timeout) for p in self.peers()), return_exceptions=True
        )

    def push_soon(self) -> None:
        """Push the state shortly, once for a burst of changes (e.g. many small
        transfers completing): one round of messages instead of one per change."""
        if self._push_pending:
            return
        self._push_pending = True

        def fire() -> None:
            self._push_pending = False
            task = asyncio.ensure_future(self.push())
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)

        asyncio.get_running_loop().call_later(PUSH_DEBOUNCE_S, fire)

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("gossip round failed")
            await asyncio.sleep(self.config.gossip_interval_s * random.uniform(0.8, 1.2))
