"""A running node: identity, cluster state, the replica-side protocol, and its parts.

`Node` owns the state one dynamokv node's processes share (node id, actor, the
persisted `ClusterState`, liveness) and wires the parts that act on it:
`coordinator` (quorum reads and writes), `gossiper` (gossip rounds), `handoff`
(partition transfers, janitor), `claimant` (staged joins/leaves), `antientropy`
(Merkle exchanges), and the hint delivery loop. The HTTP edge (`web`) and the
node-to-node protocol (`transport_tcp`) call into it; `handle_peer` serves the
replica-side calls (get, put, merge, merge_many) and dispatches the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack

from dynamo_node.cluster.antientropy import AntiEntropy
from dynamo_node.cluster.claimant import Claimant
from dynamo_node.cluster.coordinator import Coordinator, Placement
from dynamo_node.cluster.gossiper import Gossiper
from dynamo_node.cluster.handoff import Handoff
from dynamo_node.cluster.refill import Refill
from dynamo_node.core.codec import CodecError, clock_from_wire, decode_object, encode_object
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import InvalidRequest, Unavailable
from dynamo_node.core.liveness import FailureDetector
from dynamo_node.core.membership import ClusterState, Member
from dynamo_node.core.quorum import effective
from dynamo_node.core.ring import partition_of
from dynamo_node.core.vclock import VClock
from dynamo_node.core.versions import Object, sync
from dynamo_node.net.discovery import split_hostport
from dynamo_node.net.tls import client_context, server_context
from dynamo_node.net.transport import Transport
from dynamo_node.net.transport_tcp import RpcServer, TcpTransport
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.hints import HintStore
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import Family, Storage, skey_hash

log = logging.getLogger("dynamo.node")

META_NODE_ID = b"node-id"
META_STATE = b"cluster-state"
META_INCARNATION = b"incarnation"
#: present while this node is a replacement being refilled: the partitions done so far
META_REFILL = b"refill"
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
        self.monotonic = monotonic
        self.serve_peers = serve_peers
        self.node_id = self._load_node_id()
        host = config.advertise or config.host
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
        self.fresh = storage.get(Family.META, META_INCARNATION) is None
        self.actor = f"{self.node_id}.{self._load_incarnation()}"
        self.replica = Replica(storage, self.commit_log, self.actor, config)
        self.hints = HintStore(storage, self.commit_log, lww=config.lww)
        self.detector = FailureDetector(self.node_id, config.failure_timeout_s)
        self.state: ClusterState | None = self._load_state()
        if config.cluster_id and self.state is not None and self.state.cluster != config.cluster_id:
            raise InvalidRequest(
                f"data dir {config.data_dir} belongs to cluster {self.state.cluster!r}, not "
                f"{config.cluster_id!r} (--cluster-id): refusing to start rather than mix "
                "two clusters' data"
            )
        refill = storage.get(Family.META, META_REFILL)
        #: a replacement being refilled (see refill.py), and the partitions done
        self.replacing = refill is not None
        self.refill_done: set[int] = set(msgpack.unpackb(refill)) if refill else set()
        #: whether a fresh directory was checked against the first ring learned
        self._replacement_decided = not self.fresh
        #: gossip refused because it came from another cluster: count, last cluster id
        self.foreign_gossip = 0
        self.foreign_cluster: str | None = None
        #: per partition (preference list, fallbacks in walk order, gaining), for self.state
        self._placements: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}
        self.started_at = time.time()
        self.ready = False
        self.stopping = False
        self.last_anti_entropy: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # replies to writes leave only once the writes are in the WAL (grouped writes)
        self._rpc = RpcServer(
            self.handle_peer,
            config.cluster_token,
            fast=self.serve_now,
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
        self._sync = config.durability == "sync"
        self.coordinator = Coordinator(self.node_id, config, self, self.hints, self.transport, self)
        self.rpc_handlers: dict[str, Callable[[Any, str], Any]] = {}
        self.gossiper = Gossiper(self)
        self.handoff = Handoff(self)
        self.claimant = Claimant(self)
        self.anti_entropy = AntiEntropy(self)
        self.refill = Refill(self)
        self.jobs = self.anti_entropy.jobs

    # --- identity and persisted state -----------------------------------------------------
    def _load_node_id(self) -> str:
        saved = self.storage.get(Family.META, META_NODE_ID)
        wanted = self.config.node_id
        if saved is not None and wanted and saved.decode() != wanted:
            raise InvalidRequest(f"data dir belongs to node {saved.decode()!r}, not {wanted!r}")
        if saved is not None:
            return saved.decode()
        node_id = wanted or f"{self.config.advertise or self.config.host}:{self.config.port}"
        self.storage.write([(Family.META, META_NODE_ID, node_id.encode())])
        self.storage.sync_wal()
        return node_id

    def _load_incarnation(self) -> str:
        saved = self.storage.get(Family.META, META_INCARNATION)
        if saved is not None:
            return saved.decode()
        incarnation = uuid.uuid4().hex[:8]
        self.storage.write([(Family.META, META_INCARNATION, incarnation.encode())])
        self.storage.sync_wal()
        return incarnation

    def _load_state(self) -> ClusterState | None:
        raw = self.storage.get(Family.META, META_STATE)
        if raw is None:
            return None
        try:
            return ClusterState.from_wire(msgpack.unpackb(raw, raw=False))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.error("saved cluster state unreadable (%s); waiting for gossip", exc)
            return None

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
        self._placements.clear()
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
            self.gossiper.push_soon()

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

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.storage.group_writes(asyncio.get_running_loop().call_soon)
        self.commit_log.start()
        if self.state is None and not self.seeds and not self.config.cluster_id:
            cluster = uuid.uuid4().hex[:12]
            self._replacement_decided = True  # founding: nothing to refill
            self.set_state(
                ClusterState.founding(cluster, self.member, self.config.partitions, self.config.n)
            )
            log.info("formed a new cluster %s of one node (%s)", cluster, self.node_id)
        elif self.state is not None and self.node_id not in self.state.members:
            self.set_state(self.state.with_member(self.member))
        elif self.state is not None:
            self.set_state(self.state)
        if self.state is None:
            log.info(
                "waiting to learn the ring of cluster %s by gossip",
                self.config.cluster_id or "(any that lists this node)",
            )
        if self.state is not None:
            # optimistic start: known members count as up until they fail to answer or
            # their heartbeat stalls for failure_timeout_s
            now = self.monotonic()
            for member in self.state.members.values():
                self.detector.heard(member.node, now)
        if self.serve_peers:
            await self._rpc.start(
                self.config.host, self.config.effective_peer_port, ssl=server_context(self.config)
            )
        for name, loop in (
            ("gossip", self.gossiper.run),
            ("hints", self._hints_loop),
            ("transfers", self.handoff.run),
            ("janitor", self.handoff.janitor),
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
        await self.handoff.stop()
        await self.anti_entropy.stop()
        for task in list(self.coordinator.stats.background):
            task.cancel()
        await self._rpc.stop()
        await self.transport.close()
        await self.commit_log.stop()
        # last, with no await before the close: nothing writes after the trees are saved
        self.anti_entropy.save()
        self.storage.close()

    def holds_data(self) -> bool:
        """Whether this node stores any object or hint, or has a write in flight."""
        if self.hints.pending > 0 or self.storage.has_pending():
            return True
        scan = self.storage.iter_range(Family.OBJECTS)
        try:
            return next(scan, None) is not None
        finally:
            close = getattr(scan, "close", None)
            if close is not None:
                close()

    def refuse_foreign(self, cluster: str) -> None:
        """Count (and log, once per cluster id) gossip from another cluster."""
        self.foreign_gossip += 1
        if cluster != self.foreign_cluster:
            mine = self.state.cluster if self.state else self.config.cluster_id
            log.warning(
                "refused gossip from cluster %s: this node belongs to cluster %s "
                "(a node of another cluster has this node's address, or a seed is wrong)",
                cluster,
                mine,
            )
        self.foreign_cluster = cluster

    # --- the view the coordinator uses -------------------------------------------------------
    def require_state(self) -> ClusterState:
        if self.state is None:
            raise Unavailable("this node has not joined a cluster yet (no ring known)")
        return self.state

    def is_up(self, node: str) -> bool:
        return self.detector.is_up(node, self.monotonic())

    def report_unreachable(self, node: str) -> None:
        self.detector.unreachable(node)

    def report_alive(self, node: str) -> None:
        self.detector.heard(node, self.monotonic())

    def _lists(
        self, state: ClusterState, p: int
    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(preference list, the rest of the walk, gaining nodes) of partition p, cached
        until the state changes."""
        cached = self._placements.get(p)
        if cached is None:
            pl = tuple(state.preference_list(p))
            rest = tuple(node for node in state.walk(p) if node not in pl)
            cached = self._placements[p] = (pl, rest, tuple(state.gaining(p)))
        return cached

    def placement(self, h: int) -> Placement:
        state = self.require_state()
        primaries, walk_rest, gaining = self._lists(state, partition_of(h, state.partitions))
        targets: list[tuple[str, str | None]] = []
        unplaced: list[str] = []
        fallbacks = list(walk_rest)
        for node in primaries:
            if self.serving(node):
                targets.append((node, None))
                continue
            while fallbacks:
                candidate = fallbacks.pop(0)
                if self.serving(candidate):
                    targets.append((candidate, node))
                    break
            else:
                unplaced.append(node)
        return Placement(
            len(primaries),
            tuple(targets),
            gaining,
            tuple(node for node in fallbacks if self.serving(node)),
            tuple(unplaced),
        )

    def _resolve_peer(self, node: str) -> tuple[str, int] | None:
        if self.state is not None and node in self.state.members:
            return split_hostport(self.state.members[node].peer)
        return self.gossiper.seed_addresses.get(node)

    def replicates(self, skey: bytes) -> list[str]:
        """The nodes that should hold this key now (effective preference list + gaining)."""
        state = self.require_state()
        primaries, _, gaining = self._lists(state, partition_of(skey_hash(skey), state.partitions))
        return [*primaries, *gaining]

    # --- this node's replica, for the coordinator (coordinator.LocalReplica) ------------
    def read(self, skey: bytes) -> Object:
        """The local version of a key: the replica's, merged with hints held for it."""
        local = self.replica.read(skey)
        if self.hints.pending:
            for obj in self.hints.for_key(skey):
                local = sync(local, obj, lww=self.config.lww).obj
        return local

    def read_encoded(self, skey: bytes) -> bytes | None:
        """`read`, encoded: the stored bytes as they are unless hints are held for it."""
        if not self.hints.pending:
            return self.replica.read_encoded(skey)
        local = self.read(skey)
        return None if local.empty else encode_object(local)

    def put(
        self,
        skey: bytes,
        context: VClock,
        value: bytes | None,
        content_type: str,
        hint_for: str | None,
    ) -> Object:
        if hint_for:
            current = self.hints.read(skey, hint_for)
            ops: list[Any] = []
            new = self.replica.new_version(current, context, value, content_type, ops, skey=skey)
            self.hints.store(skey, hint_for, new, ops)
            return new
        return self.replica.apply_put(skey, context, value, content_type)

    def merge(self, skey: bytes, obj: Object, hint_for: str | None) -> None:
        if hint_for:
            self.hints.store(skey, hint_for, obj)
            return
        self.replica.apply_merge(skey, obj)
        if not self._replicates_here(skey):
            # a sender with a stale ring: pass it on to the replicas as hints
            for node in self.replicates(skey):
                self.hints.store(skey, node, obj)

    def durable_future(self) -> asyncio.Future[None] | None:
        """None when the writes made so far may be acknowledged; else a future resolved
        once they may: with durability "sync" after their fsync, with "wal" once their
        group is applied (in the WAL)."""
        return self.commit_log.barrier_future()

    async def durable(self) -> None:
        await self.commit_log.barrier()

    # --- internal protocol (server side) ----------------------------------------------------
    def serve_now(self, method: str, args: Any, caller: str) -> tuple[bool, Any]:
        """Serve a replica call synchronously when it needs no await (reads always;
        writes unless every write waits for an fsync): no task per call."""
        if method == "get":
            self.detector.heard(caller, self.monotonic())
            return True, self._rpc_get(args)
        if self._sync or method not in ("put", "merge", "merge_many"):
            return False, None
        self.detector.heard(caller, self.monotonic())
        if method == "put":
            return True, self._rpc_put(args)
        if method == "merge":
            return True, self._rpc_merge(args)
        return True, self._rpc_merge_many(args)

    async def handle_peer(self, method: str, args: Any, caller: str) -> Any:
        if caller != self.node_id:
            self.detector.heard(caller, self.monotonic())
        if method == "get":
            return self._rpc_get(args)
        if method == "put":
            result: Any = self._rpc_put(args)
        elif method == "merge":
            result = self._rpc_merge(args)
        elif method == "merge_many":
            result = self._rpc_merge_many(args)
        elif method == "ping":
            return [self.node_id, self.state.version if self.state else 0]
        else:
            handler = self.rpc_handlers.get(method)
            if handler is None:
                raise InvalidRequest(f"unknown internal method {method!r}")
            return await handler(args, caller)
        await self.commit_log.barrier()
        return result

    @staticmethod
    def _skey(raw: Any) -> bytes:
        if not isinstance(raw, bytes) or len(raw) < 8:
            raise InvalidRequest("bad storage key")
        return raw

    def _rpc_get(self, args: Any) -> bytes | None:
        if self.replacing:  # its "not found" would not mean anything yet
            raise Unavailable("this replica is being refilled (a replacement)")
        return self.read_encoded(self._skey(args[0]))

    def _rpc_put(self, args: Any) -> bytes:
        skey = self._skey(args[0])
        flat, pruned, value, content_type, hint_for = args[1:6]
        context = clock_from_wire(flat, bool(pruned))
        if value is not None and not isinstance(value, bytes):
            raise InvalidRequest("value must be bytes")
        return encode_object(self.put(skey, context, value, str(content_type), hint_for or None))

    def _rpc_merge(self, args: Any) -> bool:
        skey = self._skey(args[0])
        data = args[1]
        hint_for = args[2] if len(args) > 2 else None
        if (
            not hint_for
            and isinstance(data, bytes)
            and self._replicates_here(skey)
            and self.replica.merge_encoded(skey, data)
        ):
            return True
        try:
            obj = decode_object(data)
        except CodecError as exc:
            raise InvalidRequest(f"bad object: {exc}") from None
        self.merge(skey, obj, hint_for or None)
        return True

    def _replicates_here(self, skey: bytes) -> bool:
        """False when a sender's ring is stale and this node holds no replica of the key
        (then `merge` passes the version on as hints)."""
        state = self.state
        if state is None or state.in_transition():
            return True
        primaries, _, gaining = self._lists(state, partition_of(skey_hash(skey), state.partitions))
        return self.node_id in primaries or self.node_id in gaining

    def _rpc_merge_many(self, args: Any) -> int:
        self.handoff.received(len(args))
        changed = 0
        for skey, raw in args:
            try:
                obj = decode_object(raw)
            except CodecError:
                continue
            _, did = self.replica.apply_merge(self._skey(skey), obj)
            changed += did
        return changed

    # --- hinted handoff ------------------------------------------------------------------
    def gone(self, node: str) -> bool:
        """Has `node` left the cluster, or is it being removed for good?"""
        state = self.state
        if state is None:
            return False
        member = state.members.get(node)
        return node in state.removed or (member is not None and member.status == "left")

    def _hint_deliverable(self, target: str) -> bool:
        return self.is_up(target) or self.gone(target)

    async def _deliver_hint(self, target: str, skey: bytes, encoded: bytes) -> bool:
        if self.gone(target):
            # its target will never come back: the key's replicas now get the version
            # (as hints of their own, delivered like any other)
            obj = decode_object(encoded)
            for node in self.replicates(skey):
                if node == self.node_id:
                    self.replica.apply_merge(skey, obj)
                elif not self.gone(node):
                    self.hints.store(skey, node, obj)
            return True
        await self.transport.call(
            target, "merge", [skey, encoded, None], self.config.request_timeout_ms / 1000
        )
        return True

    async def _hints_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.hint_delivery_interval_s)
            if not self.config.hinted_handoff or not self.hints.pending:
                continue
            try:
                done = await self.hints.deliver_once(
                    self._deliver_hint, self._hint_deliverable, self.config.hint_batch
                )
                if done:
                    log.info("delivered %d hint(s); %d pending", done, self.hints.pending)
            except Exception:
                log.exception("hint delivery failed")

    # --- admin -----------------------------------------------------------------------------
    def start_anti_entropy(self) -> str:
        self.require_state()
        return self.anti_entropy.start_job()

    def ae_counters(self) -> dict[str, float]:
        return {
            **self.anti_entropy.counters(),
            "transfer_keys_sent_total": self.handoff.keys_sent,
            "keys_merged_in_bulk_total": self.handoff.keys_received,
            "siblings_warned_total": self.replica.stats.siblings_warned,
            "siblings_refused_total": self.replica.stats.siblings_refused,
            "objects_too_large_total": self.replica.stats.objects_too_large,
        }

    # --- views ------------------------------------------------------------------------------
    def member_state(self, m: Member) -> str:
        if m.status == "left":
            return "left"
        if m.node != self.node_id and not self.is_up(m.node):
            return "down"
        if m.replacing:
            return "replacing"
        return {"valid": "up"}.get(m.status, m.status)

    def status(self) -> dict[str, Any]:
        state = self.state
        members = []
        if state is not None:
            members = [
                {
                    "node": m.node,
                    "address": m.address,
                    "state": self.member_state(m),
                    "partitions": len(state.owned_by(m.node)),
                }
                for m in sorted(state.members.values(), key=lambda m: m.node)
            ]
        transfers = []
        if state is not None:
            for t in state.pending_transfers():
                prog = self.handoff.progress.get((t.partition, t.target))
                transfers.append(
                    {
                        "partition": t.partition,
                        "from": t.source,
                        "to": t.target,
                        "keys_done": prog.keys_done if prog else 0,
                        "keys_total": prog.keys_total if prog else 0,
                    }
                )
        me = state.members.get(self.node_id) if state else None
        return {
            "node": self.node_id,
            "address": self.member.address,
            "peer_address": self.member.peer,
            "cluster": state.cluster if state else None,
            "foreign_cluster": self.foreign_cluster,
            "refill": self.refill.progress() if self.replacing else None,
            "storage_failure": self.storage_failure(),
            "state": self.member_state(me) if me else "joining",
            "ring_version": state.version if state else 0,
            "members": members,
            "partitions": state.owned_by(self.node_id) if state else [],
            "replicated_partitions": len(state.replicas_of(self.node_id)) if state else 0,
            "hints_pending": self.hints.pending,
            "transfers": transfers,
            "transfers_total": len(state.transfers()) if state else 0,
            "transfer_keys_sent": self.handoff.keys_sent,
            "last_anti_entropy": _rfc3339(self.last_anti_entropy),
            "n": state.n if state else self.config.n,
            "r": self.config.r,
            "w": self.config.w,
            "effective": self.effective_replication(),
            "partitions_total": state.partitions if state else self.config.partitions,
            "staged": self.claimant.staged(),
            "durability": self.config.durability,
            "uptime_s": round(time.time() - self.started_at, 3),
            "pid": os.getpid(),
        }

    def effective_replication(self) -> dict[str, int]:
        """The N, R and W requests really get by default: with fewer ring members than
        N a preference list has only that many nodes, and the coordinator clamps the
        default R and W to it (`quorum.effective`)."""
        state = self.state
        n = state.n if state else self.config.n
        if state is not None:
            n = len(self._lists(state, 0)[0])
        return {
            "n": n,
            "r": effective(None, self.config.r, n),
            "w": effective(None, self.config.w, n),
        }

    def ring_view(self) -> dict[str, Any]:
        state = self.require_state()
        return {
            "ring_version": state.version,
            "partitions": [
                {"id": p, "owner": state.owner(p), "preference_list": state.preference_list(p)}
                for p in range(state.partitions)
            ],
        }


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
