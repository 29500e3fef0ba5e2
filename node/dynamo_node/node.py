"""A running node: storage, replica, cluster state, gossip, hints, transfers, coordinator.

`Node` owns the processes (asyncio tasks) of one dynamokv node and the state they
share; the HTTP edge (`web`) and the internal protocol (`transport_tcp`) call into it.
The pure parts it drives: `membership` (cluster state + plans), `liveness` (failure
detection), `coordinator` (quorums), `versions` (merging).

Background loops, each with its interval in `NodeConfig`:
- gossip: exchange cluster state + heartbeats with one random peer (and the seeds while
  this node knows no cluster);
- hints: deliver hinted handoff to replicas that are up again;
- transfers: stream partitions this node must hand to another node (resumable);
- janitor: drop data of partitions this node no longer replicates, after the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from .codec import CodecError, clock_from_wire, decode_object, encode_object
from .config import NodeConfig
from .coordinator import Coordinator, Placement
from .durability import GroupCommit
from .errors import Conflict, InvalidRequest, NotFound, PeerError, Unavailable
from .gossip import pick_peer
from .hints import HintStore
from .liveness import FailureDetector
from .membership import ClusterState, Member, Plan, PlanError, commit, plan
from .replica import Replica
from .ring import partition_of, partition_range
from .storage import Family, Storage, hash_prefix
from .tls import client_context, server_context
from .transport import Transport
from .transport_tcp import RpcServer, TcpTransport
from .versions import Object, sync

log = logging.getLogger("dynamo.node")

META_NODE_ID = b"node-id"
META_STATE = b"cluster-state"
META_INCARNATION = b"incarnation"
META_XFER = b"xfer:"


def _split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequest(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def partition_keys(p: int, partitions: int) -> tuple[bytes, bytes | None]:
    """The storage-key range [start, end) holding partition p."""
    lo, hi = partition_range(p, partitions)
    return hash_prefix(lo), (hash_prefix(hi) if hi < 1 << 64 else None)


@dataclass(slots=True)
class TransferProgress:
    partition: int
    source: str
    target: str
    keys_done: int = 0
    keys_total: int = 0


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
        self.actor = f"{self.node_id}.{self._load_incarnation()}"
        self.replica = Replica(storage, self.commit_log, self.actor, config)
        self.hints = HintStore(storage, self.commit_log, lww=config.lww)
        self.detector = FailureDetector(self.node_id, config.failure_timeout_s)
        self.state: ClusterState | None = self._load_state()
        self.staged_joins: list[str] = []
        self.staged_leaves: list[str] = []
        self.transfers: dict[tuple[int, str], TransferProgress] = {}
        self.started_at = time.time()
        self.ready = False
        self.stopping = False
        self.last_anti_entropy: float | None = None
        self.gossip_rounds = 0
        self.transfer_keys_sent = 0
        self.transfer_keys_received = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._transfer_tasks: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._rpc = RpcServer(self.handle_peer, config.cluster_token)
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
            self.node_id,
            config,
            self.replica,
            self.hints,
            self.transport,
            self,
            lambda method, args: self.handle_peer(method, args, self.node_id),
        )
        self.rpc_handlers: dict[str, Callable[[Any, str], Any]] = {}
        self._seed_addresses: dict[str, tuple[str, int]] = {}
        self._rng = random.Random()
        self._probe: asyncio.Future[None] | None = None
        self._transfer_wake = asyncio.Event()
        from .antientropy import AntiEntropy

        self.anti_entropy = AntiEntropy(self)
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

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.commit_log.start()
        if self.state is None and not self.seeds:
            cluster = uuid.uuid4().hex[:12]
            self.set_state(
                ClusterState.founding(cluster, self.member, self.config.partitions, self.config.n)
            )
            log.info("formed a new cluster %s of one node (%s)", cluster, self.node_id)
        elif self.state is not None and self.node_id not in self.state.members:
            self.set_state(self.state.with_member(self.member))
        elif self.state is not None:
            self.set_state(self.state)
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
            ("gossip", self._gossip_loop),
            ("hints", self._hints_loop),
            ("transfers", self._transfer_loop),
            ("janitor", self._janitor_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))
        self.anti_entropy.start()
        self.ready = True

    async def stop(self) -> None:
        self.stopping = True
        self.ready = False
        for task in [*self._tasks, *self._transfer_tasks.values()]:
            task.cancel()
        for task in [*self._tasks, *self._transfer_tasks.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.anti_entropy.stop()
        for task in list(self.coordinator.stats.background):
            task.cancel()
        await self._rpc.stop()
        await self.transport.close()
        await self.commit_log.stop()
        self.storage.close()

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

    def placement(self, h: int) -> Placement:
        state = self.require_state()
        p = partition_of(h, state.partitions)
        primaries = state.preference_list(p)
        targets: list[tuple[str, str | None]] = []
        unplaced: list[str] = []
        chosen = set(primaries)
        fallbacks = [node for node in state.walk(p) if node not in chosen]
        for node in primaries:
            if self.is_up(node):
                targets.append((node, None))
                continue
            while fallbacks:
                candidate = fallbacks.pop(0)
                if self.is_up(candidate):
                    targets.append((candidate, node))
                    break
            else:
                unplaced.append(node)
        return Placement(
            len(primaries),
            tuple(targets),
            tuple(state.gaining(p)),
            tuple(node for node in fallbacks if self.is_up(node)),
            tuple(unplaced),
        )

    def _resolve_peer(self, node: str) -> tuple[str, int] | None:
        if self.state is not None and node in self.state.members:
            return _split_hostport(self.state.members[node].peer)
        return self._seed_addresses.get(node)

    def replicates(self, skey: bytes) -> list[str]:
        """The nodes that should hold this key now (effective preference list + gaining)."""
        state = self.require_state()
        from .ring import key_hash

        p = partition_of(key_hash(skey[8:]), state.partitions)
        return state.preference_list(p) + state.gaining(p)

    # --- internal protocol (server side) ----------------------------------------------------
    async def handle_peer(self, method: str, args: Any, caller: str) -> Any:
        if caller != self.node_id:
            self.detector.heard(caller, self.monotonic())
        if method == "get":
            return self._rpc_get(args)
        if method == "put":
            return await self._rpc_put(args)
        if method == "merge":
            return await self._rpc_merge(args)
        if method == "merge_many":
            return await self._rpc_merge_many(args)
        if method == "gossip":
            return self._rpc_gossip(args)
        if method == "ping":
            return [self.node_id, self.state.version if self.state else 0]
        handler = self.rpc_handlers.get(method)
        if handler is not None:
            return await handler(args, caller)
        raise InvalidRequest(f"unknown internal method {method!r}")

    @staticmethod
    def _skey(raw: Any) -> bytes:
        if not isinstance(raw, bytes) or len(raw) < 8:
            raise InvalidRequest("bad storage key")
        return raw

    def _rpc_get(self, args: Any) -> bytes | None:
        skey = self._skey(args[0])
        local = self.replica.read(skey)
        extra = self.hints.for_key(skey)
        if extra:
            for obj in extra:
                local = sync(local, obj, lww=self.config.lww).obj
        return None if local.empty else encode_object(local)

    async def _rpc_put(self, args: Any) -> bytes:
        skey = self._skey(args[0])
        flat, pruned, value, content_type, hint_for = args[1:6]
        context = clock_from_wire(flat, bool(pruned))
        if value is not None and not isinstance(value, bytes):
            raise InvalidRequest("value must be bytes")
        if hint_for:
            current = self.hints.read(skey, hint_for)
            ops: list[Any] = []
            new = self.replica.new_version(current, context, value, str(content_type), ops)
            self.hints.store(skey, hint_for, new, ops)
        else:
            new = self.replica.apply_put(skey, context, value, str(content_type))
        await self.commit_log.barrier()
        return encode_object(new)

    async def _rpc_merge(self, args: Any) -> bool:
        skey = self._skey(args[0])
        try:
            obj = decode_object(args[1])
        except CodecError as exc:
            raise InvalidRequest(f"bad object: {exc}") from None
        hint_for = args[2] if len(args) > 2 else None
        self._store_incoming(skey, obj, hint_for)
        await self.commit_log.barrier()
        return True

    def _store_incoming(self, skey: bytes, obj: Object, hint_for: str | None) -> None:
        if hint_for:
            self.hints.store(skey, hint_for, obj)
            return
        self.replica.apply_merge(skey, obj)
        if self.state is not None and not self.state.in_transition():
            owners = self.replicates(skey)
            if self.node_id not in owners:
                # a sender with a stale ring: pass it on to the replicas as hints
                for node in owners:
                    self.hints.store(skey, node, obj)

    async def _rpc_merge_many(self, args: Any) -> int:
        self.transfer_keys_received += len(args)
        changed = 0
        for skey, raw in args:
            try:
                obj = decode_object(raw)
            except CodecError:
                continue
            _, did = self.replica.apply_merge(self._skey(skey), obj)
            changed += did
        await self.commit_log.barrier()
        return changed

    def _rpc_gossip(self, args: Any) -> Any:
        incoming, beats, member = args
        self.detector.observe(beats, self.monotonic())
        if incoming is not None:
            self.absorb(incoming)
        elif member is not None and self.state is not None:
            m = Member.from_wire(member)
            known = self.state.members.get(m.node)
            if known is None or (known.address, known.peer) != (m.address, m.peer):
                status = known.status if known else "joining"
                self.set_state(self.state.with_member(replace(m, status=status)))
                log.info("node %s (%s) is known to the cluster", m.node, m.address)
        return [self.state.to_wire() if self.state else None, self.detector.beats]

    def absorb(self, raw: Any) -> None:
        try:
            theirs = ClusterState.from_wire(raw)
        except ValueError as exc:
            log.warning("ignored malformed gossip: %s", exc)
            return
        mine = self.state
        if mine is None:
            if self.node_id in theirs.members:
                self.set_state(theirs)
            return
        if theirs.cluster != mine.cluster:
            # a lone node adopts the cluster that lists it (it was joined into it)
            alone = set(mine.ring.nodes()) == {self.node_id}
            if alone and self.node_id in theirs.members and len(theirs.members) > 1:
                log.info("adopting cluster %s, which this node was joined into", theirs.cluster)
                self.set_state(theirs)
            return
        merged = mine.merge(theirs)
        if merged != mine:
            self.set_state(merged)

    # --- gossip --------------------------------------------------------------------------
    def _gossip_targets(self) -> list[tuple[str, tuple[str, int] | None]]:
        state = self.state
        peers: list[tuple[str, tuple[str, int] | None]] = []
        if state is not None:
            peers = [
                (m.node, None)
                for m in state.members.values()
                if m.node != self.node_id and m.status != "left"
            ]
        return peers

    async def gossip_once(self, node: str | None = None) -> None:
        self.detector.tick()
        self.gossip_rounds += 1
        timeout = max(0.5, self.config.gossip_interval_s)
        if self.state is None or (len(self.state.members) <= 1 and self.seeds):
            for seed in self.seeds:
                await self._gossip_seed(seed, timeout)
            if self.state is None:
                return
        if node is not None:
            await self._exchange(node, timeout)
            return
        targets = [n for n, _ in self._gossip_targets()]
        live = [n for n in targets if self.is_up(n)]
        dead = [n for n in targets if n not in live]
        # a peer that does not answer must not slow the rounds: probe one of the down
        # peers on the side, gossip with a live one in the round
        probe = pick_peer(self.node_id, dead, self._rng)
        if probe is not None:
            self._probe = asyncio.ensure_future(self._exchange(probe, timeout))
        peer = pick_peer(self.node_id, live, self._rng)
        if peer is not None:
            await self._exchange(peer, timeout)

    async def _exchange(self, peer: str, timeout: float) -> None:
        try:
            reply = await self.transport.call(
                peer,
                "gossip",
                [self.state.to_wire() if self.state else None, self.detector.beats, None],
                timeout,
            )
        except PeerError:
            self.detector.unreachable(peer)
            return
        self.detector.heard(peer, self.monotonic())
        theirs, beats = reply
        self.detector.observe(beats, self.monotonic())
        if theirs is not None:
            self.absorb(theirs)

    async def _gossip_seed(self, seed: str, timeout: float) -> None:
        """Introduce this node to a seed by address (it may not know our id yet)."""
        host, port = _split_hostport(seed)
        try:
            info = await fetch_status(f"{host}:{port}", self.config, timeout)
        except Exception as exc:
            log.debug("seed %s unreachable: %s", seed, exc)
            return
        seed_id, seed_peer = str(info.get("node", "")), str(info.get("peer_address", ""))
        if not seed_id or seed_id == self.node_id or not seed_peer:
            return
        if self.state is None or seed_id not in self.state.members:
            self._seed_addresses[seed_id] = _split_hostport(seed_peer)
        try:
            reply = await self.transport.call(
                seed_id, "gossip", [None, self.detector.beats, self.member.to_wire()], timeout
            )
        except PeerError as exc:
            log.debug("seed %s gossip failed: %s", seed, exc)
            return
        theirs, beats = reply
        self.detector.heard(seed_id, self.monotonic())
        self.detector.observe(beats, self.monotonic())
        if theirs is not None:
            self.absorb(theirs)

    async def push_state(self) -> None:
        """Send the current state to every member now (after a commit, a switch)."""
        if self.state is None:
            return
        peers = [n for n, _ in self._gossip_targets()]
        await asyncio.gather(
            *(self._exchange(p, self.config.request_timeout_ms / 1000) for p in peers),
            return_exceptions=True,
        )

    async def _gossip_loop(self) -> None:
        while True:
            try:
                await self.gossip_once()
            except Exception:
                log.exception("gossip round failed")
            await asyncio.sleep(self.config.gossip_interval_s * random.uniform(0.8, 1.2))

    # --- hinted handoff ------------------------------------------------------------------
    async def _deliver_hint(self, target: str, skey: bytes, encoded: bytes) -> bool:
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
                    self._deliver_hint, self.is_up, self.config.hint_batch
                )
                if done:
                    log.info("delivered %d hint(s); %d pending", done, self.hints.pending)
            except Exception:
                log.exception("hint delivery failed")

    # --- transfers -----------------------------------------------------------------------
    async def _transfer_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._transfer_wake.wait(), 0.2)
            self._transfer_wake.clear()
            state = self.state
            if state is None or state.next is None:
                continue
            for t in state.pending_transfers():
                key = (t.partition, t.target)
                if t.source != self.node_id or key in self._transfer_tasks:
                    continue
                if len(self._transfer_tasks) >= self.config.transfer_concurrency:
                    break
                task = asyncio.create_task(self._stream(state.epoch, t.partition, t.target))
                self._transfer_tasks[key] = task
                task.add_done_callback(self._transfer_finished(key))

    def _transfer_finished(self, key: tuple[int, str]) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._transfer_tasks.pop(key, None)
            self._transfer_wake.set()

        return done

    async def _stream(self, epoch: int, p: int, target: str) -> None:
        state = self.require_state()
        start, end = partition_keys(p, state.partitions)
        cursor_key = META_XFER + f"{epoch}:{p}:{target}".encode()
        saved = self.storage.get(Family.META, cursor_key)
        cursor = saved if saved is not None else start
        total = sum(1 for _ in self.storage.iter_range(Family.OBJECTS, start, end))
        progress = TransferProgress(p, self.node_id, target, 0, total)
        if saved is not None:
            progress.keys_done = sum(
                1 for _ in self.storage.iter_range(Family.OBJECTS, start, saved)
            )
        self.transfers[(p, target)] = progress
        timeout = max(5.0, self.config.request_timeout_ms / 1000)
        try:
            while True:
                batch = self.storage.scan(
                    Family.OBJECTS, cursor, end, self.config.transfer_batch_keys
                )
                if batch:
                    while True:
                        try:
                            await self.transport.call(target, "merge_many", batch, timeout)
                            break
                        except PeerError as exc:
                            log.warning("transfer of %d to %s paused: %s", p, target, exc)
                            await asyncio.sleep(1.0)
                    progress.keys_done += len(batch)
                    self.transfer_keys_sent += len(batch)
                    cursor = batch[-1][0] + b"\x00"
                    self.storage.write([(Family.META, cursor_key, cursor)])
                    self.commit_log.issued()
                    if self.config.transfer_batch_pause_s:
                        await asyncio.sleep(self.config.transfer_batch_pause_s)
                if len(batch) < self.config.transfer_batch_keys:
                    if self.config.transfer_batch_pause_s:
                        await asyncio.sleep(self.config.transfer_batch_pause_s)
                    break
            current = self.require_state()
            if current.epoch != epoch:
                return
            self.storage.write([(Family.META, cursor_key, None)])
            self.set_state(current.with_done(p, target).settle())
            log.debug("transferred partition %d to %s (%d keys)", p, target, progress.keys_done)
            if not self.require_state().in_transition():
                log.info("all transfers of plan %d are complete", epoch)
            await self.push_state()
        finally:
            self.transfers.pop((p, target), None)

    # --- janitor ---------------------------------------------------------------------------
    async def _janitor_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                await self.drop_foreign_partitions()
            except Exception:
                log.exception("janitor failed")

    async def drop_foreign_partitions(self) -> int:
        state = self.state
        if state is None or state.next is not None or self.node_id not in state.members:
            return 0
        dropped = 0
        for p in range(state.partitions):
            if self.node_id in state.preference_list(p):
                continue
            start, end = partition_keys(p, state.partitions)
            while True:
                batch = self.storage.scan(Family.OBJECTS, start, end, 1000)
                if not batch:
                    break
                for skey, _ in batch:
                    self.replica.remove(skey)
                dropped += len(batch)
                await asyncio.sleep(0)
        if dropped:
            log.info("dropped %d keys of partitions this node no longer replicates", dropped)
        return dropped

    # --- admin -----------------------------------------------------------------------------
    def start_anti_entropy(self) -> str:
        self.require_state()
        return self.anti_entropy.start_job()

    def ae_counters(self) -> dict[str, float]:
        return {
            **self.anti_entropy.counters(),
            "transfer_keys_sent_total": self.transfer_keys_sent,
            "keys_merged_in_bulk_total": self.transfer_keys_received,
        }

    async def stage_join(self, address: str) -> str:
        state = self.require_state()
        _split_hostport(address)
        member = next((m for m in state.members.values() if m.address == address), None)
        if member is None:
            member = await self._fetch_member(address)
            self.set_state(state.with_member(member))
            state = self.require_state()
        if member.node in state.ring_nodes() and member.node not in self.staged_leaves:
            raise Conflict(f"node {member.node} at {address} is already in the ring")
        if member.node in self.staged_leaves:
            self.staged_leaves.remove(member.node)
        elif member.node not in self.staged_joins:
            self.staged_joins.append(member.node)
        return member.node

    async def _fetch_member(self, address: str) -> Member:
        try:
            info = await fetch_status(address, self.config, 5.0)
            return Member(str(info["node"]), address, str(info["peer_address"]), "joining")
        except Exception as exc:
            raise NotFound(f"no dynamo node reachable at {address}: {exc}") from None

    def stage_leave(self, node: str) -> None:
        state = self.require_state()
        if node not in state.members:
            raise NotFound(f"unknown node {node!r}")
        if node in self.staged_joins:
            self.staged_joins.remove(node)
            return
        if node not in state.ring.nodes():
            raise Conflict(f"node {node!r} owns no partitions")
        if node not in self.staged_leaves:
            self.staged_leaves.append(node)

    def current_plan(self) -> Plan | None:
        if not self.staged_joins and not self.staged_leaves:
            return None
        try:
            return plan(self.require_state(), self.staged_joins, self.staged_leaves)
        except PlanError as exc:
            raise Conflict(str(exc)) from None

    async def commit_plan(self) -> ClusterState:
        staged = self.current_plan()
        if staged is None:
            raise Conflict("nothing is staged: stage a join or leave first")
        if len(staged.ring.nodes()) < 1:
            raise Conflict("a plan cannot remove every node")
        new = commit(self.require_state(), staged, self.node_id)
        self.set_state(new)
        self.staged_joins.clear()
        self.staged_leaves.clear()
        await self.push_state()
        return new

    def clear_plan(self) -> None:
        self.staged_joins.clear()
        self.staged_leaves.clear()

    # --- views ------------------------------------------------------------------------------
    def member_state(self, m: Member) -> str:
        if m.status == "left":
            return "left"
        if m.node != self.node_id and not self.is_up(m.node):
            return "down"
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
                prog = self.transfers.get((t.partition, t.target))
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
            "state": self.member_state(me) if me else "joining",
            "ring_version": state.version if state else 0,
            "members": members,
            "partitions": state.owned_by(self.node_id) if state else [],
            "replicated_partitions": len(state.replicas_of(self.node_id)) if state else 0,
            "hints_pending": self.hints.pending,
            "transfers": transfers,
            "transfers_total": len(state.transfers()) if state else 0,
            "transfer_keys_sent": self.transfer_keys_sent,
            "last_anti_entropy": _rfc3339(self.last_anti_entropy),
            "n": state.n if state else self.config.n,
            "r": self.config.r,
            "w": self.config.w,
            "partitions_total": state.partitions if state else self.config.partitions,
            "staged": {"joins": self.staged_joins, "leaves": self.staged_leaves},
            "durability": self.config.durability,
            "uptime_s": round(time.time() - self.started_at, 3),
            "pid": os.getpid(),
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


async def fetch_status(address: str, config: NodeConfig, timeout: float) -> dict[str, Any]:
    """GET another node's /v1/admin/status by HTTP address (used before its id is known)."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    token = config.cluster_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ctx = client_context(config)
    async with (
        ClientSession(
            timeout=ClientTimeout(total=timeout),
            connector=TCPConnector(ssl=ctx) if ctx is not None else None,
        ) as session,
        session.get(f"{config.scheme}://{address}/v1/admin/status", headers=headers) as resp,
    ):
        if resp.status != 200:
            raise PeerError(f"{address} answered {resp.status}")
        info = await resp.json()
    if not isinstance(info, dict):
        raise PeerError(f"{address} sent a malformed status")
    return info


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
