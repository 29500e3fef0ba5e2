"""The client side of the node-to-node protocol (wire format: `framing`; server:
`rpc_server`): `TcpTransport` keeps one lazily (re)connected connection per peer,
multiplexed by request id (like Cassandra's and Riak's own internode protocols), says
hello with the cluster token on each new one, and fails every call at its deadline. A
call that times out on a connection silent since it was sent drops that connection.
Measured against aiohttp's ClientSession/`/internal/` routes it costs a fraction of the
CPU per call (see bench/transport.py).

Batches: the calls `post`ed to one peer for one method during an event-loop iteration
leave as one batch frame when the iteration's output is flushed (or as soon as their
encodings reach BATCH_BYTES), and come back as one reply. Measured in process with
1 KiB merges, 20 calls per iteration: ~7-9 us of CPU per call (client and server) in
frames of their own, ~2 us in one batch (bench/README.md). A server that announces no
batches in its hello reply is sent every call in a frame of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import math
import socket
from collections.abc import Callable
from typing import Any, cast

from dynamo_node.core.codec import pack, pack_array_header
from dynamo_node.core.errors import PeerError
from dynamo_node.net.framing import BATCH, BATCH_BYTES, HELLO, LEN, Framer, Output, pack_frame
from dynamo_node.net.transport import RemoteError, Reply, deliver

log = logging.getLogger("dynamo.transport")

#: a call's deadline counts as reached this much early (timers fire on a ms clock)
DEADLINE_SLACK_S = 0.001


#: unacknowledged data older than this aborts a peer connection (Linux TCP_USER_TIMEOUT)
TCP_USER_TIMEOUT_MS = 5000


def _tune(transport: asyncio.BaseTransport | None) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


#: sends a call on a connection, its deadline kept:
#: (conn, method, args, deadline, name, args already encoded or None)
Launch = Callable[["_ClientProtocol", str, Any, float, str, bytes | None], "asyncio.Future[Any]"]


def _remote_error(result: Any) -> RemoteError:
    code, message = ([*result, "", ""])[:2] if isinstance(result, list) else ("", "")
    return RemoteError(str(code), str(message))


class _Batch:
    """Calls posted to one peer for one method during a loop iteration, each encoded
    when posted (an argument that cannot be encoded fails its own `post`)."""

    __slots__ = ("deadline", "method", "parts", "replies", "size")

    def __init__(self, method: str) -> None:
        self.method = method
        self.parts: list[bytes] = []
        self.replies: list[Reply] = []
        self.size = 0
        self.deadline = 0.0

    def add(self, part: bytes, reply: Reply, deadline: float) -> None:
        self.parts.append(part)
        self.replies.append(reply)
        self.size += len(part)
        self.deadline = max(self.deadline, deadline)

    def encoded_args(self) -> bytes:
        """msgpack of [method, [args, ...]] from the calls' own encodings."""
        parts = self.parts
        return b"".join(
            [pack_array_header(2), pack(self.method), pack_array_header(len(parts)), *parts]
        )

    def resolve(self, fut: asyncio.Future[Any]) -> None:
        """Answer every call from the batch's reply (or with its failure)."""
        error: BaseException | None
        error = PeerError("the call was cancelled") if fut.cancelled() else fut.exception()
        results: Any = None
        if error is None:
            results = fut.result()
            if not isinstance(results, list) or len(results) != len(self.replies):
                error = PeerError(f"malformed answer to a batch of {self.method}")
        for i, reply in enumerate(self.replies):
            value: Any = None
            exc = error
            if exc is None:
                entry = results[i]
                if isinstance(entry, list) and len(entry) == 2 and entry[0] == 0:
                    value = entry[1]
                else:
                    exc = _remote_error(entry[1] if isinstance(entry, list) and entry else None)
            try:
                reply(value, exc)
            except Exception:
                log.exception("answering a batched %r call failed", self.method)


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, node: str, launch: Launch | None = None) -> None:
        self.node = node
        self._framer = Framer()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        # looked up once: get_running_loop() costs a getpid() syscall per call on 3.11
        self.loop = asyncio.get_running_loop()
        self._out = Output(self.loop, self._seal)
        self._launch = launch
        self._open: dict[str, _Batch] = {}
        #: what the server announced in its hello reply
        self.features: frozenset[str] = frozenset()
        self.closed = self.loop.create_future()
        #: loop time of the last bytes received: a timed-out call on a connection that
        #: has been silent since it was sent means the connection is dead, not slow
        self.last_recv = self.loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self._out.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = self._out.transport = None
        err = PeerError(f"{self.node}: connection lost")
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(err)
        self.pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_recv = self.loop.time()
        try:
            frames = self._framer.feed(data)
        except Exception:
            if self.transport is not None:
                self.transport.close()
            return
        for frame in frames:
            if not isinstance(frame, list) or len(frame) != 3:
                continue
            msg_id, status, result = frame
            fut = self.pending.pop(msg_id, None)
            if fut is None or fut.done():
                continue
            if status == 0:
                fut.set_result(result)
            else:
                fut.set_exception(_remote_error(result))

    def send(
        self, msg_id: int, method: str, args: Any, encoded: bytes | None = None
    ) -> asyncio.Future[Any]:
        """Send a call (`encoded`: its arguments, already msgpack)."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        if self.transport is None or self.transport.is_closing():
            fut.set_exception(PeerError(f"{self.node}: not connected"))
            return fut
        if encoded is None:
            frame = pack_frame([msg_id, method, args])
        else:
            body = b"".join([pack_array_header(3), pack(msg_id), pack(method), encoded])
            frame = LEN.pack(len(body)) + body
        self.pending[msg_id] = fut
        self._out.add(frame)
        return fut

    def post(self, method: str, args: Any, reply: Reply, deadline: float) -> None:
        """Add a call to this iteration's batch of `method` (sent when output flushes,
        or at once when it reaches BATCH_BYTES)."""
        part = pack(args)
        batch = self._open.get(method)
        if batch is None:
            batch = self._open[method] = _Batch(method)
            self._out.schedule()
        elif batch.size + len(part) > BATCH_BYTES:
            self._send_batch(batch)
            batch = self._open[method] = _Batch(method)
        batch.add(part, reply, deadline)

    def _seal(self) -> None:
        """Before the output is written: each open batch becomes one frame."""
        if not self._open:
            return
        batches, self._open = self._open, {}
        for batch in batches.values():
            self._send_batch(batch)

    def _send_batch(self, batch: _Batch) -> None:
        assert self._launch is not None
        fut = self._launch(self, BATCH, None, batch.deadline, batch.method, batch.encoded_args())
        fut.add_done_callback(batch.resolve)


#: (deadline, call id, connection, future, method, sent): the call id orders equal deadlines
_Deadline = tuple[float, int, "_ClientProtocol", "asyncio.Future[Any]", str, float]


class TcpTransport:
    """Client side: one lazily (re)connected, multiplexed connection per peer."""

    def __init__(
        self,
        me: str,
        resolve: Callable[[str], tuple[str, int] | None],
        token: str = "",
        connect_timeout: float = 1.0,
        ssl: Any = None,
    ) -> None:
        self.me = me
        self._resolve = resolve
        self._token = token
        self._connect_timeout = connect_timeout
        self._ssl = ssl
        self._conns: dict[str, _ClientProtocol] = {}
        self._connecting: dict[str, asyncio.Future[_ClientProtocol]] = {}
        self._next_id = 1
        self.calls = 0
        #: deadlines of the calls made with `start`, a heap with one timer armed for its
        #: earliest entry (a timer per call cost more than the call's own framing);
        #: answered calls leave it lazily, when they reach its top
        self._deadlines: list[_Deadline] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def _connection(self, node: str, deadline: float) -> _ClientProtocol:
        conn = self._conns.get(node)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn
        pending = self._connecting.get(node)
        if pending is None:
            pending = asyncio.ensure_future(self._connect(node))
            self._connecting[node] = pending
            pending.add_done_callback(lambda _f: self._connecting.pop(node, None))
        remaining = max(0.001, deadline - asyncio.get_running_loop().time())
        try:
            return await asyncio.wait_for(asyncio.shield(pending), remaining)
        except TimeoutError:
            raise PeerError(f"{node}: connect timed out") from None

    async def _connect(self, node: str) -> _ClientProtocol:
        addr = self._resolve(node)
        if addr is None:
            raise PeerError(f"{node}: unknown peer address")
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _ClientProtocol(node, self._launch), addr[0], addr[1], ssl=self._ssl
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise PeerError(f"{node}: cannot connect to {addr[0]}:{addr[1]}: {exc}") from None
        _tune(proto.transport)
        hello = proto.send(0, HELLO, [self._token, self.me])
        try:
            welcome = await asyncio.wait_for(hello, self._connect_timeout)
        except (PeerError, TimeoutError) as exc:
            if proto.transport is not None:
                proto.transport.close()
            raise PeerError(f"{node}: handshake failed: {exc}") from None
        if isinstance(welcome, list) and len(welcome) == 2 and isinstance(welcome[1], list):
            proto.features = frozenset(f for f in welcome[1] if isinstance(f, str))
        old = self._conns.get(node)
        if old is not None and old.transport is not None:
            old.transport.close()
        self._conns[node] = proto
        return proto

    async def call(self, node: str, method: str, args: Any, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._connection(node, deadline)
        self._next_id += 1
        msg_id = self._next_id
        self.calls += 1
        fut = conn.send(msg_id, method, args)
        remaining = max(0.001, deadline - loop.time())
        sent = loop.time()
        try:
            return await asyncio.wait_for(fut, remaining)
        except TimeoutError:
            conn.pending.pop(msg_id, None)
            self._expired(node, conn, sent)
            raise PeerError(f"{node}: {method} timed out after {timeout:.3f}s") from None

    def start(self, node: str, method: str, args: Any, timeout: float) -> asyncio.Future[Any]:
        conn = self._conns.get(node)
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return asyncio.ensure_future(self.call(node, method, args, timeout))
        return self._launch(conn, method, args, conn.loop.time() + timeout, method)

    def post(self, node: str, method: str, args: Any, timeout: float, reply: Reply) -> None:
        conn = self._conns.get(node)
        if (
            conn is None
            or conn.transport is None
            or conn.transport.is_closing()
            or BATCH not in conn.features
        ):
            fut = self.start(node, method, args, timeout)
            fut.add_done_callback(functools.partial(deliver, reply))
            return
        conn.post(method, args, reply, conn.loop.time() + timeout)

    def _launch(
        self,
        conn: _ClientProtocol,
        method: str,
        args: Any,
        deadline: float,
        name: str,
        encoded: bytes | None = None,
    ) -> asyncio.Future[Any]:
        """Send a call on a ready connection; it fails at `deadline` (`name` in the
        message) unless answered."""
        loop = conn.loop
        self._next_id += 1
        msg_id = self._next_id
        self.calls += 1
        fut = conn.send(msg_id, method, args, encoded)
        sent = loop.time()
        heapq.heappush(self._deadlines, (deadline, msg_id, conn, fut, name, sent))
        if deadline < self._timer_at:
            self._arm(loop, deadline)
        return fut

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._expire_due, loop)

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the calls whose deadline passed; drop answered ones from the heap top."""
        self._timer, self._timer_at = None, math.inf
        heap = self._deadlines
        due = loop.time() + DEADLINE_SLACK_S
        while heap and (heap[0][0] <= due or heap[0][3].done()):
            deadline, msg_id, conn, fut, method, sent = heapq.heappop(heap)
            if fut.done():
                continue
            conn.pending.pop(msg_id, None)
            took = deadline - sent
            fut.set_exception(PeerError(f"{conn.node}: {method} timed out after {took:.3f}s"))
            self._expired(conn.node, conn, sent)
        if heap:
            self._arm(loop, heap[0][0])

    def _expired(self, node: str, conn: _ClientProtocol, sent: float) -> None:
        """A call timed out: if nothing at all came back on its connection since it was
        sent, the connection is dead (e.g. a healed partition left it in TCP backoff);
        drop it so the next call reconnects instead of queueing behind it."""
        if conn.last_recv < sent and self._conns.get(node) is conn:
            log.info("dropping the silent connection to %s", node)
            self.drop(node)

    def drop(self, node: str) -> None:
        conn = self._conns.pop(node, None)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        for node in list(self._conns):
            self.drop(node)
        for fut in list(self._connecting.values()):
            fut.cancel()
