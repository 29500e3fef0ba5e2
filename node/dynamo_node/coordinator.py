"""Coordinating reads and writes across the preference list (any node coordinates).

PUT/DELETE: the version is created (its dot issued) on one replica of the preference
list, this node when it is one, else the first reachable target (Riak's rule: the
coordinator of a version is a replica, so dots stay unique and ordered); the resulting
object is then sent to the other targets in parallel. The answer is success once W
distinct nodes hold it durably, else `QuorumNotMet` at the deadline. Writes to a
fallback carry a hint naming the replica it stands in for; nodes gaining the partition
in a transfer also get the write (a hint is kept for them when they miss it).

GET: ask every target in parallel, answer after R replies with their merge (`sync`).
The remaining replies are awaited in the background until the deadline and every
replica that returned something older than the merge gets the merge (read repair).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .codec import CodecError, clock_to_wire, decode_object, encode_object
from .config import NodeConfig
from .errors import PeerError, QuorumNotMet
from .hints import HintStore
from .quorum import effective
from .replica import Replica
from .ring import key_hash
from .transport import Transport
from .vclock import VClock
from .versions import Object, sync, sync_all

log = logging.getLogger("dynamo.coordinator")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a key lives right now, as this node sees the cluster."""

    #: distinct nodes of the key's preference list (N, or fewer in a small cluster)
    n: int
    #: sloppy targets: (node, None) for a live replica, (fallback, replica) when down
    targets: tuple[tuple[str, str | None], ...]
    #: nodes receiving the partition in a transfer: they get writes too
    pending: tuple[str, ...] = ()
    #: further live nodes of the walk, in order, for replicas that fail mid-request
    fallbacks: tuple[str, ...] = ()
    #: down replicas no live node could stand in for: the coordinator keeps their hints
    unplaced: tuple[str, ...] = ()


class View(Protocol):
    def placement(self, h: int) -> Placement: ...

    def is_up(self, node: str) -> bool: ...

    def report_unreachable(self, node: str) -> None: ...

    def report_alive(self, node: str) -> None: ...


@dataclass(slots=True)
class CoordinatorStats:
    read_repairs: int = 0
    quorum_failures: int = 0
    forwarded_puts: int = 0
    background: set[asyncio.Task[Any]] = field(default_factory=set)


#: local handling of the internal calls (same semantics as over the wire)
LocalCall = Callable[[str, Any], Awaitable[Any]]


class Coordinator:
    def __init__(
        self,
        me: str,
        config: NodeConfig,
        replica: Replica,
        hints: HintStore,
        transport: Transport,
        view: View,
        local_call: LocalCall,
    ) -> None:
        self.me = me
        self.config = config
        self.replica = replica
        self.hints = hints
        self.transport = transport
        self.view = view
        self._local_call = local_call
        self.stats = CoordinatorStats()

    # --- plumbing --------------------------------------------------------------------
    async def call(self, node: str, method: str, args: Any, timeout: float) -> Any:
        if node == self.me:
            return await asyncio.wait_for(self._local_call(method, args), timeout)
        try:
            result = await self.transport.call(node, method, args, timeout)
        except PeerError:
            self.view.report_unreachable(node)
            raise
        self.view.report_alive(node)
        return result

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.stats.background.add(task)
        task.add_done_callback(self.stats.background.discard)

    # --- reads -----------------------------------------------------------------------
    async def get(self, skey: bytes, r: int | None, timeout_ms: int) -> Object:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        placement = self.view.placement(key_hash(skey[8:]))
        need = effective(r, self.config.r, placement.n)
        nodes = [node for node, _ in placement.targets]
        tasks: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(self.call(node, "get", [skey], timeout_ms / 1000)): node
            for node in nodes
        }
        replies: dict[str, Object] = {}
        pending: set[asyncio.Future[Any]] = set(tasks)
        while pending and len(replies) < need:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                obj = _reply_object(task)
                if obj is not None:
                    replies[tasks[task]] = obj
        if len(replies) < need:
            for task in pending:
                task.cancel()
            self.stats.quorum_failures += 1
            raise QuorumNotMet(
                f"read quorum not met: {len(replies)} of {need} required replicas answered",
                required=need,
                answered=len(replies),
            )
        merged = sync_all(replies.values(), lww=self.config.lww).obj
        if self.config.read_repair:
            self._background(self._read_repair(skey, tasks, pending, replies, deadline))
        elif pending:
            for task in pending:
                task.cancel()
        return merged

    async def _read_repair(
        self,
        skey: bytes,
        tasks: dict[asyncio.Future[Any], str],
        pending: set[asyncio.Future[Any]],
        replies: dict[str, Object],
        deadline: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        if pending:
            done, late = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
            for task in late:
                task.cancel()
            for task in done:
                obj = _reply_object(task)
                if obj is not None:
                    replies[tasks[task]] = obj
        merged = sync_all(replies.values(), lww=self.config.lww).obj
        if merged.empty:
            return
        stale = [node for node, obj in replies.items() if obj != merged]
        if not stale:
            return
        encoded = encode_object(merged)
        timeout = self.config.request_timeout_ms / 1000
        results = await asyncio.gather(
            *(self.call(node, "merge", [skey, encoded, None], timeout) for node in stale),
            return_exceptions=True,
        )
        repaired = sum(1 for res in results if not isinstance(res, BaseException))
        self.stats.read_repairs += repaired
        if repaired:
            log.debug("read repair of %r on %d replica(s)", skey[8:60], repaired)

    # --- writes ----------------------------------------------------------------------
    async def put(
        self,
        skey: bytes,
        context: VClock,
        value: bytes | None,
        content_type: str,
        w: int | None,
        timeout_ms: int,
    ) -> Object:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        placement = self.view.placement(key_hash(skey[8:]))
        need = effective(w, self.config.w, placement.n)
        targets = list(placement.targets)
        if not targets:
            self.stats.quorum_failures += 1
            raise QuorumNotMet("no replica is reachable", required=need, answered=0)
        # the coordinating replica: me if I am a target, else the first live one
        order = sorted(targets, key=lambda t: (t[0] != self.me, t[1] is not None))
        args_tail = [clock_to_wire(context), context.pruned, value, content_type]
        obj: Object | None = None
        coordinator: tuple[str, str | None] | None = None
        last_error: Exception | None = None
        for node, hint_for in order:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                raw = await self.call(node, "put", [skey, *args_tail, hint_for], remaining)
                obj = decode_object(raw)
            except (PeerError, TimeoutError, CodecError) as exc:
                last_error = exc
                continue
            coordinator = (node, hint_for)
            if node != self.me:
                self.stats.forwarded_puts += 1
            break
        if obj is None or coordinator is None:
            self.stats.quorum_failures += 1
            raise QuorumNotMet(
                f"write quorum not met: no replica could coordinate the write ({last_error})",
                required=need,
                answered=0,
            )
        acked = 1
        encoded = encode_object(obj)
        others = [t for t in targets if t[0] != coordinator[0]]
        spare = [f for f in placement.fallbacks if all(f != t[0] for t in targets)]
        tasks = {
            asyncio.ensure_future(
                self._replicate(node, hint_for, skey, encoded, obj, spare, deadline)
            ): node
            for node, hint_for in others
        }
        if self.config.hinted_handoff:
            for node in placement.unplaced:
                if node != self.me:
                    self.hints.store(skey, node, obj)
        for node in placement.pending:
            if node != coordinator[0] and all(node != t[0] for t in others):
                self._background(self._to_pending(node, skey, encoded, obj))
        pending = set(tasks)
        while pending and acked < need:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            acked += sum(1 for task in done if not task.cancelled() and task.result() is True)
        for task in pending:
            # the rest keep going (they may still land, or leave a hint) unawaited
            self.stats.background.add(task)
            task.add_done_callback(self.stats.background.discard)
        if acked < need:
            self.stats.quorum_failures += 1
            raise QuorumNotMet(
                f"write quorum not met: {acked} of {need} required replicas acknowledged",
                required=need,
                answered=acked,
            )
        return obj

    async def _replicate(
        self,
        node: str,
        hint_for: str | None,
        skey: bytes,
        encoded: bytes,
        obj: Object,
        spare: list[str],
        deadline: float,
    ) -> bool:
        """Send a version to one target; if it fails, to the next spare fallback with a
        hint; if none takes it, keep the hint here so the replica gets it later.
        True when some node stands for this replica (counts toward W)."""
        loop = asyncio.get_running_loop()
        try:
            await self.call(
                node, "merge", [skey, encoded, hint_for], max(0.001, deadline - loop.time())
            )
            return True
        except (PeerError, TimeoutError):
            pass
        intended = hint_for or node
        while spare and deadline - loop.time() > 0:
            fallback = spare.pop(0)
            if fallback == self.me or not self.view.is_up(fallback):
                continue
            try:
                await self.call(
                    fallback, "merge", [skey, encoded, intended], max(0.001, deadline - loop.time())
                )
                return True
            except (PeerError, TimeoutError):
                continue
        if intended != self.me and self.config.hinted_handoff:
            self.hints.store(skey, intended, obj)
            await self.hints.durable()
        return False

    async def _to_pending(self, node: str, skey: bytes, encoded: bytes, obj: Object) -> None:
        """Double-write to a node receiving this partition; keep a hint if it misses it."""
        try:
            await self.call(
                node, "merge", [skey, encoded, None], self.config.request_timeout_ms / 1000
            )
        except (PeerError, TimeoutError):
            self.hints.store(skey, node, obj)
            await self.hints.durable()


def _reply_object(task: asyncio.Future[Any]) -> Object | None:
    if task.cancelled() or task.exception() is not None:
        return None
    raw = task.result()
    if raw is None:
        return Object()
    try:
        return decode_object(raw)
    except CodecError:
        return None


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def merge_replies(replies: list[Object], lww: bool) -> Object:
    return sync_all(replies, lww=lww).obj


__all__ = ["Coordinator", "Placement", "View", "merge_replies", "sync"]
