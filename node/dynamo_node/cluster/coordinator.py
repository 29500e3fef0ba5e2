"""Coordinating reads and writes across the preference list (any node coordinates).

PUT/DELETE: the version is created (its dot issued) on one replica of the preference
list, this node when it is one, else the first reachable target (Riak's rule: the
coordinator of a version is a replica, so dots stay unique and ordered); the resulting
object is then sent to the other targets in parallel. The answer is success once W
distinct nodes hold it durably, else `QuorumNotMet` at the deadline. Writes to a
fallback carry a hint naming the replica it stands in for; nodes gaining the partition
in a transfer also get the write (a hint is kept for them when they miss it).

GET: ask every target in parallel, answer after R replies with their merge (`sync`).
The remaining replies are compared as they arrive (until their call's deadline), and
every replica that returned something older than the merge of all replies gets that
merge in the background (read repair).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dynamo_node.core.codec import CodecError, clock_to_wire, decode_object, encode_object
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import WRITE_REFUSALS, PeerError, QuorumNotMet, StorageCorrupt
from dynamo_node.core.placement import Placement
from dynamo_node.core.quorum import effective
from dynamo_node.core.vclock import VClock
from dynamo_node.core.versions import Object, sync, sync_all
from dynamo_node.net.transport import RemoteError, Transport
from dynamo_node.store.hints import HintStore
from dynamo_node.store.storage import skey_hash

log = logging.getLogger("dynamo.coordinator")


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


class LocalReplica(Protocol):
    """This node's own replica, called directly (no encoding, no task). `put` and
    `merge` apply at once (readable); a write is acknowledged only once the future of
    `durable_future()` (if any) resolved (durability "sync": fsynced; "wal": its group
    applied)."""

    def durable_future(self) -> asyncio.Future[None] | None: ...

    def read(self, skey: bytes) -> Object: ...

    def read_encoded(self, skey: bytes) -> bytes | None: ...

    def put(
        self,
        skey: bytes,
        context: VClock,
        value: bytes | None,
        content_type: str,
        hint_for: str | None,
    ) -> Object: ...

    def merge(self, skey: bytes, obj: Object, hint_for: str | None) -> None: ...


class Coordinator:
    def __init__(
        self,
        me: str,
        config: NodeConfig,
        local: LocalReplica,
        hints: HintStore,
        transport: Transport,
        view: View,
    ) -> None:
        self.me = me
        self.config = config
        self.local = local
        self.hints = hints
        self.transport = transport
        self.view = view
        self.stats = CoordinatorStats()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once (asyncio.get_running_loop() makes a getpid()
        system call per call on Python 3.11: measurable on the request path)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # --- plumbing --------------------------------------------------------------------
    def _start(self, node: str, method: str, args: Any, timeout: float) -> asyncio.Future[Any]:
        """Send a call to a peer; the future resolves with its answer or PeerError. Its
        outcome tells the failure detector about the peer."""
        fut = self.transport.start(node, method, args, max(0.001, timeout))
        fut.add_done_callback(functools.partial(self._observe, node))
        return fut

    def _observe(self, node: str, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled():
            self._heard(node, fut.exception())

    def _heard(self, node: str, exc: BaseException | None) -> None:
        """A call's outcome, for the failure detector."""
        if exc is None:
            self.view.report_alive(node)
        elif isinstance(exc, PeerError):
            self.view.report_unreachable(node)

    async def call(self, node: str, method: str, args: Any, timeout: float) -> Any:
        return await self._start(node, method, args, timeout)

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.stats.background.add(task)
        task.add_done_callback(self.stats.background.discard)

    async def _quorum(
        self,
        futures: Iterable[asyncio.Future[Any]],
        needed: int,
        ok: Callable[[asyncio.Future[Any]], bool],
        deadline: float,
    ) -> None:
        """Return once `needed` futures succeeded (per `ok`), all are done, or the
        deadline passed. One waiter and callbacks: no task per replica."""
        futs = list(futures)
        if needed <= 0 or not futs:
            return
        loop = self.loop
        waiter: asyncio.Future[None] = loop.create_future()
        counts = [0, 0]  # successes, finished

        def on_done(fut: asyncio.Future[Any]) -> None:
            counts[1] += 1
            if ok(fut):
                counts[0] += 1
            if (counts[0] >= needed or counts[1] == len(futs)) and not waiter.done():
                waiter.set_result(None)

        for fut in futs:
            fut.add_done_callback(on_done)

        def expire() -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_at(deadline, expire)
        try:
            await waiter
        finally:
            timer.cancel()

    # --- reads -----------------------------------------------------------------------
    async def get(self, skey: bytes, r: int | None, timeout_ms: int) -> Object:
        loop = self.loop
        timeout = timeout_ms / 1000
        deadline = loop.time() + timeout
        placement = self.view.placement(skey_hash(skey))
        need = effective(r, self.config.r, placement.n)
        #: node -> the object it holds, encoded (None: nothing); encodings are canonical,
        #: so equal bytes are equal versions and each distinct encoding is decoded once
        raw: dict[str, bytes | None] = {}
        futures: dict[str, asyncio.Future[Any]] = {}
        for node, _ in placement.targets:
            if node == self.me:
                try:
                    raw[node] = self.local.read_encoded(skey)
                except StorageCorrupt as exc:
                    # this replica is damaged (its storage is failed from now on): it
                    # counts as a replica that did not answer, the others serve the read
                    log.warning("local replica unreadable, reading the others: %s", exc)
            else:
                futures[node] = self._start(node, "get", [skey], timeout)
        if len(raw) < need:
            await self._quorum(futures.values(), need - len(raw), _answered, deadline)
        for node, fut in futures.items():
            if fut.done() and _answered(fut):
                raw[node] = fut.result()
        pending = {node: fut for node, fut in futures.items() if not fut.done()}
        merged, merged_raw, stale = _merge_replies(raw, self.config.lww)
        if len(raw) < need:
            for fut in pending.values():
                fut.cancel()
            self.stats.quorum_failures += 1
            raise QuorumNotMet(
                f"read quorum not met: {len(raw)} of {need} required replicas answered",
                required=need,
                answered=len(raw),
            )
        if not self.config.read_repair:
            for fut in pending.values():
                fut.cancel()
        elif pending:
            self._check_late(skey, raw, merged_raw, stale, pending)
        elif stale:
            self._background(self._read_repair(skey, raw))
        return merged

    def _check_late(
        self,
        skey: bytes,
        raw: dict[str, bytes | None],
        merged_raw: bytes | None,
        stale: bool,
        pending: dict[str, asyncio.Future[Any]],
    ) -> None:
        """Read repair without a task in the common case: the replies still outstanding
        are compared as they arrive (each call has its own timeout); only when some
        replica turns out different does a repair task start."""
        left = [len(pending), stale]

        def arrived(node: str, fut: asyncio.Future[Any]) -> None:
            left[0] -= 1
            if _answered(fut):
                raw[node] = fut.result()
                left[1] = left[1] or raw[node] != merged_raw
            if not left[0] and left[1]:
                self._background(self._read_repair(skey, raw))

        for node, fut in pending.items():
            fut.add_done_callback(functools.partial(arrived, node))

    async def _read_repair(self, skey: bytes, raw: dict[str, bytes | None]) -> None:
        objs: dict[str, Object] = {}
        for node, data in raw.items():
            with contextlib.suppress(CodecError):
                objs[node] = Object() if data is None else decode_object(data)
        merged = sync_all(objs.values(), lww=self.config.lww).obj
        if merged.empty:
            return
        stale = [node for node, obj in objs.items() if obj != merged]
        if not stale:
            return
        encoded = encode_object(merged)
        timeout = self.config.request_timeout_ms / 1000
        repaired = 0
        for node in stale:
            try:
                if node == self.me:
                    self.local.merge(skey, merged, None)
                else:
                    await self.call(node, "merge", [skey, encoded, None], timeout)
                repaired += 1
            except (PeerError, TimeoutError):
                continue
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
        loop = self.loop
        deadline = loop.time() + timeout_ms / 1000
        placement = self.view.placement(skey_hash(skey))
        need = effective(w, self.config.w, placement.n)
        targets = list(placement.targets)
        if not targets:
            self.stats.quorum_failures += 1
            raise QuorumNotMet("no replica is reachable", required=need, answered=0)
        obj, coordinator = await self._coordinate(
            skey, context, value, content_type, targets, deadline, need
        )
        encoded = encode_object(obj)
        others = [t for t in targets if t[0] != coordinator]
        spare = [f for f in placement.fallbacks if all(f != t[0] for t in targets)]
        votes = _Votes(loop, need - 1, len(others))  # the coordinator's own counts
        for node, hint_for in others:
            self._replicate(votes, node, hint_for, skey, encoded, obj, spare, deadline)
        if self.config.hinted_handoff:
            for node in placement.unplaced:
                if node != self.me:
                    self.hints.store(skey, node, obj)
        for node in placement.pending:
            if node != coordinator and all(node != t[0] for t in others):
                self._background(self._to_pending(node, skey, encoded, obj))
        if coordinator == self.me:
            votes.wait_local(self.local.durable_future())
        await votes.wait(deadline)
        acked = 1 + votes.ok
        if acked < need:
            self.stats.quorum_failures += 1
            raise QuorumNotMet(
                f"write quorum not met: {acked} of {need} required replicas acknowledged",
                required=need,
                answered=acked,
                maybe_applied=True,  # the coordinating replica stored it at least
            )
        return obj

    async def _coordinate(
        self,
        skey: bytes,
        context: VClock,
        value: bytes | None,
        content_type: str,
        targets: list[tuple[str, str | None]],
        deadline: float,
        need: int,
    ) -> tuple[Object, str]:
        """Create the new version on one replica (me when I am a target)."""
        mine = next((t for t in targets if t[0] == self.me), None)
        if mine is not None:
            return self.local.put(skey, context, value, content_type, mine[1]), self.me
        loop = asyncio.get_running_loop()
        order = sorted(targets, key=lambda t: t[1] is not None)
        args_tail = [clock_to_wire(context), context.pruned, value, content_type]
        last_error: Exception | None = None
        #: some replica may have stored it: a call timed out or its connection failed
        #: after it was sent, or its answer did not decode (only an error answer proves
        #: that the replica did not store it)
        maybe_applied = False
        for node, hint_for in order:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                raw = await self._start(node, "put", [skey, *args_tail, hint_for], remaining)
                obj = decode_object(raw)
            except RemoteError as exc:
                refusal = WRITE_REFUSALS.get(exc.remote_code)
                if refusal is not None:  # the write itself is refused (e.g. too many siblings)
                    raise refusal(exc.message.removeprefix(f"{exc.remote_code}: ")) from None
                last_error = exc
                continue
            except (PeerError, TimeoutError, CodecError) as exc:
                last_error = exc
                maybe_applied = True
                continue
            self.stats.forwarded_puts += 1
            return obj, node
        self.stats.quorum_failures += 1
        raise QuorumNotMet(
            f"write quorum not met: no replica could coordinate the write ({last_error})",
            required=need,
            answered=0,
            maybe_applied=maybe_applied,
        )

    def _replicate(
        self,
        votes: _Votes,
        node: str,
        hint_for: str | None,
        skey: bytes,
        encoded: bytes,
        obj: Object,
        spare: list[str],
        deadline: float,
    ) -> None:
        """Send a version to one target (posted: the versions for one node in a loop
        iteration travel together); its answer is its vote. On failure a
        background task tries the next spare fallback with a hint, and if none takes it
        keeps the hint here so the replica gets it later; it votes yes when some node
        stands for this replica (counts toward W)."""

        def done(_result: Any, exc: BaseException | None) -> None:
            self._heard(node, exc)
            if exc is None:
                votes.vote(True)
                return
            self._background(
                self._fall_back(votes, hint_for or node, skey, encoded, obj, spare, deadline)
            )

        self.transport.post(
            node, "merge", [skey, encoded, hint_for], max(0.001, deadline - self.loop.time()), done
        )

    async def _fall_back(
        self,
        votes: _Votes,
        intended: str,
        skey: bytes,
        encoded: bytes,
        obj: Object,
        spare: list[str],
        deadline: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        while spare and deadline - loop.time() > 0:
            fallback = spare.pop(0)
            if fallback == self.me or not self.view.is_up(fallback):
                continue
            try:
                await self.call(
                    fallback, "merge", [skey, encoded, intended], deadline - loop.time()
                )
            except (PeerError, TimeoutError):
                continue
            votes.vote(True)
            return
        votes.vote(False)
        if intended != self.me and self.config.hinted_handoff:
            self.hints.store(skey, intended, obj)
            await self.hints.durable()

    async def _to_pending(self, node: str, skey: bytes, encoded: bytes, obj: Object) -> None:
        """Double-write to a node receiving this partition; keep a hint if it misses it."""
        try:
            await self.call(
                node, "merge", [skey, encoded, None], self.config.request_timeout_ms / 1000
            )
        except (PeerError, TimeoutError):
            self.hints.store(skey, node, obj)
            await self.hints.durable()


class _Votes:
    """The acknowledgements of one write, counted in the replicas' own callbacks (no
    future per replica): `wait` returns once `need` replicas voted yes, every replica
    voted, or the deadline passed, and in every case not before the coordinator's own
    write is durable (a failure there fails the write)."""

    __slots__ = ("_done", "_expired", "_left", "_local", "_need", "ok")

    def __init__(self, loop: asyncio.AbstractEventLoop, need: int, replicas: int) -> None:
        self._done: asyncio.Future[None] = loop.create_future()
        self._need = need
        self._left = replicas
        self._local: asyncio.Future[None] | None = None
        self._expired = False
        self.ok = 0

    def vote(self, yes: bool) -> None:
        self._left -= 1
        if yes:
            self.ok += 1
        self._settle()

    def wait_local(self, durable: asyncio.Future[None] | None) -> None:
        """Also wait for the coordinator's own write (None: durable already)."""
        if durable is None:
            return
        if durable.done():
            self._local_done(durable)
        else:
            self._local = durable
            durable.add_done_callback(self._local_done)

    def _local_done(self, durable: asyncio.Future[None]) -> None:
        self._local = None
        if self._done.done():
            return
        if durable.cancelled():
            self._done.cancel()
        elif durable.exception() is not None:
            self._done.set_exception(durable.exception())  # type: ignore[arg-type]
        else:
            self._settle()

    def _expire(self) -> None:
        self._expired = True
        self._settle()

    def _settle(self) -> None:
        if self._done.done() or self._local is not None:
            return
        if self.ok >= self._need or self._left <= 0 or self._expired:
            self._done.set_result(None)

    async def wait(self, deadline: float) -> None:
        self._settle()
        if self._done.done():
            self._done.result()  # raises the local write's failure
            return
        timer = self._done.get_loop().call_at(deadline, self._expire)
        try:
            await self._done
        finally:
            timer.cancel()


def _answered(fut: asyncio.Future[Any]) -> bool:
    """A get call that returned an encoded object or None (nothing stored)."""
    if fut.cancelled() or fut.exception() is not None:
        return False
    result = fut.result()
    return result is None or isinstance(result, bytes)


def _merge_replies(raw: dict[str, bytes | None], lww: bool) -> tuple[Object, bytes | None, bool]:
    """The merge of the replies, its encoding, and whether any reply differs from it.
    A reply that does not decode is dropped from `raw` (it does not count toward R)."""
    distinct = set(raw.values())
    if len(distinct) == 1:
        (only,) = distinct
        if only is None:
            return Object(), None, False
        try:
            return decode_object(only), only, False
        except CodecError:
            raw.clear()
            return Object(), None, False
    objs: dict[bytes | None, Object] = {}
    for data in distinct:
        try:
            objs[data] = Object() if data is None else decode_object(data)
        except CodecError:
            for node in [n for n, d in raw.items() if d == data]:
                del raw[node]
    merged = sync_all(objs.values(), lww=lww).obj
    merged_raw = None if merged.empty else encode_object(merged)
    return merged, merged_raw, any(d != merged_raw for d in raw.values())


__all__ = ["Coordinator", "LocalReplica", "Placement", "View", "sync"]
