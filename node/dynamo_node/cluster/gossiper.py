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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dynamo_node.core.errors import PeerError
from dynamo_node.core.gossip import pick_peer
from dynamo_node.core.membership import ClusterState, Member
from dynamo_node.net.discovery import fetch_status, split_hostport

if TYPE_CHECKING:
    from dynamo_node.node import Node

log = logging.getLogger("dynamo.gossip")

#: changes within this window are pushed to the members together
PUSH_DEBOUNCE_S = 0.2


class Gossiper:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.rounds = 0
        #: peer addresses of seeds known before they are members of our state
        self.seed_addresses: dict[str, tuple[str, int]] = {}
        self._rng = random.Random()
        self._probe: asyncio.Future[None] | None = None
        self._push_pending = False
        self._pushes: set[asyncio.Task[None]] = set()
        node.rpc_handlers["gossip"] = self._rpc_gossip

    # --- server side -------------------------------------------------------------------
    async def _rpc_gossip(self, args: Any, caller: str) -> Any:
        node = self.node
        incoming, beats, member = args
        node.detector.observe(beats, node.monotonic())
        if incoming is not None:
            self.absorb(incoming)
        elif member is not None and node.state is not None:
            m = Member.from_wire(member)
            known = node.state.members.get(m.node)
            if known is None or (known.address, known.peer) != (m.address, m.peer):
                status = known.status if known else "joining"
                node.set_state(node.state.with_member(replace(m, status=status)))
                log.info("node %s (%s) is known to the cluster", m.node, m.address)
        return [node.state.to_wire() if node.state else None, node.detector.beats]

    def absorb(self, raw: Any) -> None:
        node = self.node
        try:
            theirs = ClusterState.from_wire(raw)
        except ValueError as exc:
            log.warning("ignored malformed gossip: %s", exc)
            return
        mine = node.state
        expected = mine.cluster if mine is not None else node.config.cluster_id
        if expected and theirs.cluster != expected:
            if mine is not None and self._may_adopt(mine, theirs):
                log.info("adopting cluster %s, which this node was joined into", theirs.cluster)
                node.set_state(theirs)
            else:
                node.refuse_foreign(theirs.cluster)
            return
        if mine is None:
            if node.node_id in theirs.members:
                node.set_state(theirs)
            return
        merged = mine.merge(theirs)
        if merged != mine:
            node.set_state(merged)

    def _may_adopt(self, mine: ClusterState, theirs: ClusterState) -> bool:
        """A node started on its own (no seed, no cluster id) founded a cluster of one;
        when `join` adds it to another cluster it adopts that one, but only while
        nothing can be lost by it: it was never told its cluster, it is alone in its
        ring, the other cluster lists it, and it holds no object and no hint (it never
        accepted a write). Anything else is another cluster's gossip, refused."""
        node = self.node
        return (
            not node.config.cluster_id
            and set(mine.ring_nodes()) == {node.node_id}
            and node.node_id in theirs.members
            and len(theirs.members) > 1
            and not node.holds_data()
        )

    # --- rounds ------------------------------------------------------------------------
    def peers(self) -> list[str]:
        state = self.node.state
        if state is None:
            return []
        return [
            m.node
            for m in state.members.values()
            if m.node != self.node.node_id and m.status != "left"
        ]

    async def round(self, peer: str | None = None) -> None:
        node = self.node
        if node.storage.failure is not None:
            # no heartbeat while the storage cannot write: the others see this node
            # down and route around it (hints for it wait) until it recovers
            return
        node.detector.tick()
        self.rounds += 1
        timeout = max(0.5, node.config.gossip_interval_s)
        if node.state is None or (len(node.state.members) <= 1 and node.seeds):
            for seed in node.seeds:
                await self._introduce(seed, timeout)
            if node.state is None:
                return
        if peer is not None:
            await self.exchange(peer, timeout)
            return
        targets = self.peers()
        live = [n for n in targets if node.is_up(n)]
        dead = [n for n in targets if n not in live]
        probe = pick_peer(node.node_id, dead, self._rng)
        if probe is not None:
            self._probe = asyncio.ensure_future(self.exchange(probe, timeout))
        chosen = pick_peer(node.node_id, live, self._rng)
        if chosen is not None:
            await self.exchange(chosen, timeout)

    async def exchange(self, peer: str, timeout: float) -> None:
        node = self.node
        try:
            reply = await node.transport.call(
                peer,
                "gossip",
                [node.state.to_wire() if node.state else None, node.detector.beats, None],
                timeout,
            )
        except PeerError:
            node.detector.unreachable(peer)
            return
        node.detector.heard(peer, node.monotonic())
        theirs, beats = reply
        node.detector.observe(beats, node.monotonic())
        if theirs is not None:
            self.absorb(theirs)

    async def _introduce(self, seed: str, timeout: float) -> None:
        """Introduce this node to a seed by address (it may not know our id yet)."""
        node = self.node
        try:
            info = await fetch_status(seed, node.config, timeout)
        except Exception as exc:
            log.debug("seed %s unreachable: %s", seed, exc)
            return
        seed_id, seed_peer = str(info.get("node", "")), str(info.get("peer_address", ""))
        if not seed_id or seed_id == node.node_id or not seed_peer:
            return
        if node.state is None or seed_id not in node.state.members:
            self.seed_addresses[seed_id] = split_hostport(seed_peer)
        try:
            reply = await node.transport.call(
                seed_id, "gossip", [None, node.detector.beats, node.member.to_wire()], timeout
            )
        except PeerError as exc:
            log.debug("seed %s gossip failed: %s", seed, exc)
            return
        theirs, beats = reply
        node.detector.heard(seed_id, node.monotonic())
        node.detector.observe(beats, node.monotonic())
        if theirs is not None:
            self.absorb(theirs)

    async def push(self) -> None:
        """Send the current state to every member now (after a commit, a switch)."""
        if self.node.state is None:
            return
        timeout = self.node.config.request_timeout_ms / 1000
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
            await asyncio.sleep(self.node.config.gossip_interval_s * random.uniform(0.8, 1.2))
