"""This node's view of the cluster: the state it knows, who is up, and whether it is
itself a replacement being refilled.

`ClusterView` is the one place the cluster state changes: `set_state` persists the new
state (META column family, grouped with the next WAL write), keeps this node's own
member record truthful (its addresses, its `replacing` flag) and tells the subscribers.
Liveness comes from the failure detector (`core.liveness`), fed by gossip heartbeats and
by the outcome of every peer call (`report_alive`, `report_unreachable`). `serving` is
what placement asks: up, and not a replacement that is still being refilled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import msgpack

from dynamo_node.core.errors import Unavailable
from dynamo_node.core.liveness import FailureDetector
from dynamo_node.core.membership import ClusterState, Member
from dynamo_node.core.placement import Lists, Placement, Placements, place
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.identity import META_REFILL, META_STATE
from dynamo_node.store.storage import Family, Storage, skey_hash

log = logging.getLogger("dynamo.node")

Listener = Callable[[ClusterState], None]


class ClusterView:
    def __init__(
        self,
        member: Member,
        storage: Storage,
        commit_log: GroupCommit,
        detector: FailureDetector,
        monotonic: Callable[[], float],
        fresh: bool,
        cluster_id: str = "",
    ) -> None:
        self.node_id = member.node
        #: the cluster this node was told it belongs to (--cluster-id), or ""
        self.cluster_id = cluster_id
        self.member = member
        self.storage = storage
        self.commit_log = commit_log
        self.detector = detector
        self.monotonic = monotonic
        self.state: ClusterState | None = self._load()
        refill = storage.get(Family.META, META_REFILL)
        #: a replacement being refilled (see refill.py), and the partitions done
        self.replacing = refill is not None
        self.refill_done: set[int] = set(msgpack.unpackb(refill)) if refill else set()
        #: whether a fresh directory was checked against the first ring learned
        self._replacement_decided = not fresh
        #: gossip refused because it came from another cluster: count, last cluster id
        self.foreign_gossip = 0
        self.foreign_cluster: str | None = None
        self._listeners: list[Listener] = []
        self._placements = Placements()

    # --- the state ---------------------------------------------------------------------
    def _load(self) -> ClusterState | None:
        raw = self.storage.get(Family.META, META_STATE)
        if raw is None:
            return None
        try:
            return ClusterState.from_wire(msgpack.unpackb(raw, raw=False))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.error("saved cluster state unreadable (%s); waiting for gossip", exc)
            return None

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every new state, once it is set and persisted."""
        self._listeners.append(listener)

    def require_state(self) -> ClusterState:
        if self.state is None:
            raise Unavailable("this node has not joined a cluster yet (no ring known)")
        return self.state

    def found(self, state: ClusterState) -> None:
        """Start a new cluster of this node alone: nothing to refill."""
        self._replacement_decided = True
        self.set_state(state)

    def set_state(self, state: ClusterState) -> None:
        if self.state is not None and state == self.state:
            return
        old_version = self.state.version if self.state else None
        mine = state.members.get(self.node_id)
        if mine is not None and (mine.address, mine.peer) != (
            self.member.address,
            self.member.peer,
        ):
            # my addresses changed (e.g. a new pod IP): announce the new ones
            state = state.with_member(
                replace(mine, address=self.member.address, peer=self.member.peer)
            )
        state = self._with_replacing_flag(state)
        old_plan = (self.state.epoch, self.state.next is None) if self.state else None
        self.state = state
        self.storage.write(
            [(Family.META, META_STATE, msgpack.packb(state.to_wire(), use_bin_type=True))]
        )
        self.commit_log.issued()
        if old_version != state.version:
            changed_plan = old_plan != (state.epoch, state.next is None)
            (log.info if changed_plan else log.debug)(
                "ring version %s -> %s (%d nodes, %s)",
                old_version,
                state.version,
                len(state.ring_nodes()),
                "transferring" if state.in_transition() else "stable",
            )
        for listener in self._listeners:
            listener(state)

    # --- placement ----------------------------------------------------------------------
    def lists(self, skey: bytes) -> Lists:
        state = self.require_state()
        return self._placements.of_hash(state, skey_hash(skey))

    def placement(self, h: int) -> Placement:
        return place(self._placements.of_hash(self.require_state(), h), self.serving)

    def replicates(self, skey: bytes) -> list[str]:
        """The nodes that should hold this key now (effective preference list + gaining)."""
        of = self.lists(skey)
        return [*of.primaries, *of.gaining]

    def replicates_here(self, skey: bytes) -> bool:
        """False when a sender's ring is stale and this node holds no replica of the key
        (then a merge passes the version on as hints)."""
        state = self.state
        if state is None or state.in_transition():
            return True
        of = self._placements.of_hash(state, skey_hash(skey))
        return self.node_id in of.primaries or self.node_id in of.gaining

    def replicas_per_key(self) -> int | None:
        """N as requests really get it: a preference list has fewer nodes than N while
        the ring has fewer members. None before a ring is known."""
        state = self.state
        return None if state is None else len(self._placements.of(state, 0).primaries)

    # --- a replacement: a ring member back with an empty directory -----------------------
    def _with_replacing_flag(self, state: ClusterState) -> ClusterState:
        """`state` with this node's member record flagged `replacing` exactly while it
        is; the first ring a fresh directory learns decides whether it is one."""
        if not self._replacement_decided:
            self._replacement_decided = True
            # an owner in the committed ring (a node being joined owns nothing there yet)
            if self.node_id in state.ring.nodes():
                self.replacing = True
                self.refill_done = set()
                self.storage.write([(Family.META, META_REFILL, msgpack.packb([]))])
                log.warning(
                    "the ring lists this node but its data directory is new (a lost "
                    "volume): it is a replacement and counts towards no quorum until refilled"
                )
        mine = state.members.get(self.node_id)
        if mine is not None and mine.replacing != self.replacing:
            state = state.with_member(replace(mine, replacing=self.replacing))
        return state

    def partition_refilled(self, p: int) -> None:
        self.refill_done.add(p)
        packed = msgpack.packb(sorted(self.refill_done))
        self.storage.write([(Family.META, META_REFILL, packed)])
        self.commit_log.issued()

    def finish_replacing(self) -> None:
        self.replacing = False
        self.storage.write([(Family.META, META_REFILL, None)])
        self.commit_log.issued()
        if self.state is not None:
            self.set_state(self._with_replacing_flag(self.state))

    # --- liveness --------------------------------------------------------------------------
    def is_up(self, node: str) -> bool:
        return self.detector.is_up(node, self.monotonic())

    def report_unreachable(self, node: str) -> None:
        self.detector.unreachable(node)

    def report_alive(self, node: str) -> None:
        self.detector.heard(node, self.monotonic())

    def heard_all(self) -> None:
        """Optimistic start: every known member counts as up until it fails to answer
        or its heartbeat stalls for failure_timeout_s."""
        if self.state is not None:
            now = self.monotonic()
            for member in self.state.members.values():
                self.detector.heard(member.node, now)

    def serving(self, node: str) -> bool:
        """Up, and not a replacement being refilled: a replica that may count. This
        node's own replica does not while its storage is failed (the coordinator then
        uses the other replicas and fallbacks, as for a down peer)."""
        if node == self.node_id and self.storage.failure is not None:
            return False
        if not self.is_up(node):
            return False
        member = self.state.members.get(node) if self.state is not None else None
        return member is None or not member.replacing

    def gone(self, node: str) -> bool:
        """Has `node` left the cluster, or is it being removed for good?"""
        state = self.state
        if state is None:
            return False
        member = state.members.get(node)
        return node in state.removed or (member is not None and member.status == "left")

    def member_state(self, m: Member) -> str:
        """A member's state as the admin API shows it."""
        if m.status == "left":
            return "left"
        if m.node != self.node_id and not self.is_up(m.node):
            return "down"
        if m.replacing:
            return "replacing"
        return {"valid": "up"}.get(m.status, m.status)

    def refuse_foreign(self, cluster: str) -> None:
        """Count (and log, once per cluster id) gossip from another cluster."""
        self.foreign_gossip += 1
        if cluster != self.foreign_cluster:
            mine = self.state.cluster if self.state else self.cluster_id
            log.warning(
                "refused gossip from cluster %s: this node belongs to cluster %s "
                "(a node of another cluster has this node's address, or a seed is wrong)",
                cluster,
                mine,
            )
        self.foreign_cluster = cluster
