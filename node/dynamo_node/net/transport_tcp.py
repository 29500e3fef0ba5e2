"""The node-to-node protocol: length-prefixed msgpack frames over one TCP connection per
peer pair, multiplexed by request id (like Cassandra's and Riak's own internode
protocols). Measured against aiohttp's ClientSession/`/internal/` routes it costs a
fraction of the CPU per call (see bench/transport.py).

Frames: 4-byte big-endian length, then msgpack:
    request  [id, method, args]          response [id, 0, result] | [id, 1, [code, msg]]
    batch    [id, "batch", [method, [args, ...]]]
             response [id, 0, [[0, result] | [1, [code, msg]], ...]], one entry per call
The first frame on a connection is the hello [0, "hello", [token, node_id]]; a wrong
token closes the connection. The server answers it with ["ok", [features]] (a server
that predates batches answered "ok": the client then sends every call in its own
frame). Frames larger than MAX_FRAME are refused.

Before its hello is accepted a connection costs the server almost nothing, token or
not: its first frame may be at most HELLO_MAX_FRAME bytes (a larger length closes the
connection before anything is buffered), must be a hello with the right token (anything
else closes the connection, and nothing sent after it is looked at), and must arrive
within `hello_timeout_s`; at most `max_unauthenticated` connections may be waiting for
their hello at once (more are closed at once). Each refusal is counted in `refused`.
Once the hello is accepted none of this is checked again.

Batches: the calls `post`ed to one peer for one method during an event-loop iteration
leave as one batch frame when the iteration's output is flushed (or as soon as their
encodings reach BATCH_BYTES), and come back as one reply. Measured in process with
1 KiB merges, 20 calls per iteration: ~7-9 us of CPU per call (client and server) in
frames of their own, ~2 us in one batch (bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import hmac
import logging
import math
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, cast

import msgpack

from dynamo_node.core.codec import pack, pack_array_header
from dynamo_node.core.errors import DynamoError, PeerError
from dynamo_node.net.transport import Handler, RemoteError, Reply, deliver

log = logging.getLogger("dynamo.transport")

#: a call's deadline counts as reached this much early (timers fire on a ms clock)
DEADLINE_SLACK_S = 0.001

MAX_FRAME = 64 * 1024 * 1024
#: the largest first frame (the hello) of a connection: a hello is tens of bytes
HELLO_MAX_FRAME = 4096
#: at most one warning per this many seconds about refused connections (a flood of
#: them must not flood the log; `RpcServer.refused` counts every one)
REFUSAL_LOG_INTERVAL_S = 10.0
_LEN = struct.Struct(">I")
HELLO = "hello"
#: the method name of a batch frame (never a handler's)
BATCH = "batch"
#: a batch is sent as soon as its calls' encodings reach this size (frames stay far
#: below MAX_FRAME however many large values one iteration posts)
BATCH_BYTES = 1024 * 1024
#: what this server understands beyond single calls, announced in its hello reply
FEATURES = [BATCH]


def _pack(obj: Any) -> bytes:
    body = pack(obj)
    return _LEN.pack(len(body)) + body


class _Framer:
    """Splits a byte stream into msgpack frames. Frames are decoded in place, from a view
    of the bytes received: a chunk holding many frames is neither copied per frame nor
    shifted after each one; only an incomplete tail is kept for the next chunk."""

    def __init__(self) -> None:
        # an incomplete frame, appended to in place: a large frame arriving in many
        # chunks is not copied once per chunk
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf: bytes | bytearray = data
        if self._buf:
            self._buf += data
            buf = self._buf
        out: list[Any] = []
        pos, end = 0, len(buf)
        with memoryview(buf) as view:
            while end - pos >= 4:
                (size,) = _LEN.unpack_from(buf, pos)
                if size > MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes exceeds the limit")
                stop = pos + 4 + size
                if stop > end:
                    break
                out.append(msgpack.unpackb(view[pos + 4 : stop], raw=False))
                pos = stop
        if pos == end:
            self._buf = bytearray()
        elif buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(data[pos:])
        return out

    def first(self, data: bytes, limit: int) -> tuple[bool, Any]:
        """The stream's next frame only, if complete: (True, frame), else (False, None);
        what follows it stays buffered for `feed`. A frame announced larger than `limit`
        raises before its bytes are kept, so at most `limit` + one chunk is buffered."""
        self._buf += data
        buf = self._buf
        if len(buf) < 4:
            return False, None
        (size,) = _LEN.unpack_from(buf, 0)
        if size > limit:
            raise ValueError(f"first frame of {size} bytes exceeds {limit}")
        if len(buf) < 4 + size:
            return False, None
        frame = msgpack.unpackb(bytes(buf[4 : 4 + size]), raw=False)
        del buf[: 4 + size]
        return True, frame

    @property
    def pending(self) -> bool:
        """Whether bytes of an incomplete frame (or unread frames) are buffered."""
        return bool(self._buf)


class _Output:
    """Frames written during one event-loop iteration leave in one `write` at its end:
    under load a peer connection carries many calls at once, and a system call per
    frame would cost more than the frames themselves."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, before: Callable[[], None] | None = None
    ) -> None:
        self._loop = loop
        self._before = before
        self._frames: list[bytes] = []
        self._scheduled = False
        self.transport: asyncio.Transport | None = None

    def add(self, frame: bytes) -> None:
        self._frames.append(frame)
        self.schedule()

    def schedule(self) -> None:
        """Flush at the end of this iteration (frames added by `before` go with it)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        try:
            if self._before is not None:
                self._before()
        finally:  # a failing hook must not leave the output unscheduled for good
            self._scheduled = False
        frames, self._frames = self._frames, []
        transport = self.transport
        if frames and transport is not None and not transport.is_closing():
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))


# --- server ------------------------------------------------------------------------
class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: RpcServer) -> None:
        self._server = server
        self._framer = _Framer()
        self._transport: asyncio.Transport | None = None
        self._out = _Output(asyncio.get_running_loop(), server.before)
        self._peer: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: closes the connection unless its hello is accepted in time
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it
        self._transport = self._out.transport = cast(asyncio.Transport, transport)
        server = self._server
        server.connections.add(self)
        if len(server.waiting) >= server.max_unauthenticated:
            self._refuse(f"{len(server.waiting)} connections already wait for their hello")
            return
        server.waiting.add(self)
        self._deadline = asyncio.get_running_loop().call_later(
            server.hello_timeout_s, self._hello_late
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._unwait()
        self._transport = self._out.transport = None

    def _unwait(self) -> None:
        self._server.waiting.discard(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _hello_late(self) -> None:
        self._deadline = None
        if self._peer is None:
            self._refuse(f"no hello within {self._server.hello_timeout_s:g}s")

    def _refuse(self, reason: str) -> None:
        """Close a connection that has not (or not rightly) said hello, and count it."""
        self._unwait()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._server.note_refusal(transport.get_extra_info("peername"), reason)
        transport.close()

    def _before_hello(self, data: bytes) -> None:
        """Bytes of a connection whose hello is not accepted yet: the hello first (small,
        checked before anything else is decoded), then whatever followed it."""
        if self._transport is None or self._transport.is_closing():
            return  # refused: nothing more is looked at
        try:
            complete, frame = self._framer.first(data, HELLO_MAX_FRAME)
        except Exception as exc:
            self._refuse(f"bad hello frame: {exc}")
            return
        if not complete:
            return
        if not self._hello(frame):
            return
        self._unwait()
        if self._framer.pending:  # frames sent along with the hello
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        if self._peer is None:
            self._before_hello(data)
            return
        try:
            frames = self._framer.feed(data)
        except Exception as exc:  # garbage on the wire: drop the connection
            log.warning("bad frame from %s: %s", self._peer, exc)
            self.close()
            return
        for frame in frames:
            if not isinstance(frame, list) or len(frame) != 3:
                self.close()
                return
            msg_id, method, args = frame
            if method == BATCH:
                self._batch(msg_id, args)
                continue
            outcome = self._fast(method, args)
            if outcome is not None:
                self._send([msg_id, *outcome])
                continue
            self._spawn(self._serve(msg_id, method, args))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fast(self, method: Any, args: Any) -> list[Any] | None:
        """[0, result] or [1, [code, msg]] when the synchronous path served the call."""
        fast = self._server.fast
        if fast is None or not isinstance(method, str):
            return None
        assert self._peer is not None
        try:
            handled, result = fast(method, args, self._peer)
        except DynamoError as exc:
            return [1, [exc.code, exc.message]]
        except Exception as exc:
            log.exception("internal call %r failed", method)
            return [1, ["internal", repr(exc)]]
        return [0, result] if handled else None

    async def _outcome(self, method: Any, args: Any) -> list[Any]:
        try:
            if not isinstance(method, str):
                raise PeerError("method must be a string")
            assert self._peer is not None
            return [0, await self._server.handler(method, args, self._peer)]
        except DynamoError as exc:
            return [1, [exc.code, exc.message]]
        except Exception as exc:
            log.exception("internal call %r failed", method)
            return [1, ["internal", repr(exc)]]

    def _batch(self, msg_id: Any, args: Any) -> None:
        """Serve each call of a batch (synchronously where the fast path can) and
        answer them together once all are done."""
        if not (
            isinstance(args, list)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0] != BATCH
            and isinstance(args[1], list)
        ):
            self._send([msg_id, 1, ["invalid_request", "a batch is [method, [args, ...]]"]])
            return
        method, calls = args
        results: list[Any] = [None] * len(calls)
        later: list[int] = []
        for i, call_args in enumerate(calls):
            outcome = self._fast(method, call_args)
            if outcome is None:
                later.append(i)
            else:
                results[i] = outcome
        if not later:
            self._send([msg_id, 0, results])
            return
        self._spawn(self._batch_rest(msg_id, method, calls, results, later))

    async def _batch_rest(
        self, msg_id: Any, method: str, calls: list[Any], results: list[Any], later: list[int]
    ) -> None:
        outcomes = await asyncio.gather(*(self._outcome(method, calls[i]) for i in later))
        for i, outcome in zip(later, outcomes, strict=True):
            results[i] = outcome
        self._send([msg_id, 0, results])

    def _hello(self, frame: Any) -> bool:
        """Accept the first frame if it is a hello with the right token (any token when
        the server has none), else refuse the connection."""
        if not (isinstance(frame, list) and len(frame) == 3):
            self._refuse("the first frame is not a call")
            return False
        _, method, args = frame
        if not (
            method == HELLO
            and isinstance(args, list)
            and len(args) == 2
            and isinstance(args[0], str)
            and isinstance(args[1], str)
        ):
            self._refuse("the first frame is not a hello")
            return False
        token = self._server.token
        if token and not hmac.compare_digest(args[0].encode(), token.encode()):
            self._refuse("wrong cluster token")
            return False
        self._peer = args[1]
        self._send([0, 0, ["ok", self._server.features]])
        return True

    async def _serve(self, msg_id: Any, method: Any, args: Any) -> None:
        self._send([msg_id, *await self._outcome(method, args)])

    def _send(self, obj: Any) -> None:
        if self._transport is not None:
            self._out.add(_pack(obj))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


#: optional synchronous server path: (method, args, caller) -> (handled, result)
FastHandler = Callable[[str, Any, str], tuple[bool, Any]]


class RpcServer:
    def __init__(
        self,
        handler: Handler,
        token: str = "",
        fast: FastHandler | None = None,
        before: Callable[[], None] | None = None,
        features: list[str] | None = None,
        hello_timeout_s: float = 5.0,
        max_unauthenticated: int = 64,
    ) -> None:
        self.handler = handler
        self.fast = fast
        #: announced in the hello reply (a test can play an older server with [])
        self.features = FEATURES if features is None else features
        #: called before replies are written (the node applies grouped writes there)
        self.before = before
        self.token = token
        #: a connection's hello must arrive this fast (a TLS handshake too), and at most
        #: `max_unauthenticated` connections may be waiting for theirs
        self.hello_timeout_s = hello_timeout_s
        self.max_unauthenticated = max_unauthenticated
        self.connections: set[_ServerProtocol] = set()
        #: connections whose hello is not accepted yet
        self.waiting: set[_ServerProtocol] = set()
        #: connections closed before or at their hello (bad, late, too many waiting)
        self.refused = 0
        self._logged_at = -math.inf
        self._server: asyncio.AbstractServer | None = None

    def note_refusal(self, peer: Any, reason: str) -> None:
        self.refused += 1
        now = asyncio.get_running_loop().time()
        if now - self._logged_at >= REFUSAL_LOG_INTERVAL_S:
            self._logged_at = now
            log.warning(
                "refused a peer-port connection from %s: %s (%d refused so far)",
                peer,
                reason,
                self.refused,
            )

    async def start(self, host: str, port: int, ssl: Any = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerProtocol(self),
            host,
            port,
            reuse_address=True,
            ssl=ssl,
            ssl_handshake_timeout=self.hello_timeout_s if ssl is not None else None,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None


#: unacknowledged data older than this aborts a peer connection (Linux TCP_USER_TIMEOUT)
TCP_USER_TIMEOUT_MS = 5000


def _tune(transport: asyncio.BaseTransport | None) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


# --- client ------------------------------------------------------------------------
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
        self._framer = _Framer()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        # looked up once: get_running_loop() costs a getpid() syscall per call on 3.11
        self.loop = asyncio.get_running_loop()
        self._out = _Output(self.loop, self._seal)
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
            frame = _pack([msg_id, method, args])
        else:
            body = b"".join([pack_array_header(3), pack(msg_id), pack(method), encoded])
            frame = _LEN.pack(len(body)) + body
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
