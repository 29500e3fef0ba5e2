"""The node-to-node protocol: length-prefixed msgpack frames over one TCP connection per
peer pair, multiplexed by request id (like Cassandra's and Riak's own internode
protocols). Measured against aiohttp's ClientSession/`/internal/` routes it costs a
fraction of the CPU per call (see bench/transport.py).

Frames: 4-byte big-endian length, then msgpack:
    request  [id, method, args]          response [id, 0, result] | [id, 1, [code, msg]]
The first frame on a connection is the hello [0, "hello", [token, node_id]]; a wrong
token closes the connection. Frames larger than MAX_FRAME are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import hmac
import logging
import math
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

import msgpack

from .codec import pack
from .errors import DynamoError, PeerError
from .transport import Handler, RemoteError

log = logging.getLogger("dynamo.transport")

#: a call's deadline counts as reached this much early (timers fire on a ms clock)
DEADLINE_SLACK_S = 0.001

MAX_FRAME = 64 * 1024 * 1024
_LEN = struct.Struct(">I")
HELLO = "hello"


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
        self.transport: asyncio.Transport | None = None

    def add(self, frame: bytes) -> None:
        if not self._frames:
            self._loop.call_soon(self.flush)
        self._frames.append(frame)

    def flush(self) -> None:
        if self._before is not None:
            self._before()
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it
        self._transport = self._out.transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = self._out.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._framer.feed(data)
        except Exception as exc:  # garbage on the wire: drop the connection
            log.warning("bad frame from %s: %s", self._peer or "unknown peer", exc)
            self.close()
            return
        for frame in frames:
            if not isinstance(frame, list) or len(frame) != 3:
                self.close()
                return
            msg_id, method, args = frame
            if self._peer is None:
                self._hello(method, args)
                continue
            if self._server.fast is not None and isinstance(method, str):
                try:
                    handled, result = self._server.fast(method, args, self._peer)
                except DynamoError as exc:
                    self._send([msg_id, 1, [exc.code, exc.message]])
                    continue
                except Exception as exc:
                    log.exception("internal call %r failed", method)
                    self._send([msg_id, 1, ["internal", repr(exc)]])
                    continue
                if handled:
                    self._send([msg_id, 0, result])
                    continue
            task = asyncio.ensure_future(self._serve(msg_id, method, args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _hello(self, method: Any, args: Any) -> None:
        token = self._server.token
        ok = (
            method == HELLO
            and isinstance(args, list)
            and len(args) == 2
            and isinstance(args[0], str)
            and isinstance(args[1], str)
            and (not token or hmac.compare_digest(args[0].encode(), token.encode()))
        )
        if not ok:
            log.warning("refused a peer connection: bad hello or token")
            self.close()
            return
        self._peer = args[1]
        self._send([0, 0, "ok"])

    async def _serve(self, msg_id: Any, method: Any, args: Any) -> None:
        try:
            if not isinstance(method, str):
                raise PeerError("method must be a string")
            assert self._peer is not None
            result = await self._server.handler(method, args, self._peer)
            reply = [msg_id, 0, result]
        except DynamoError as exc:
            reply = [msg_id, 1, [exc.code, exc.message]]
        except Exception as exc:
            log.exception("internal call %r failed", method)
            reply = [msg_id, 1, ["internal", repr(exc)]]
        self._send(reply)

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
    ) -> None:
        self.handler = handler
        self.fast = fast
        #: called before replies are written (the node applies grouped writes there)
        self.before = before
        self.token = token
        self.connections: set[_ServerProtocol] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, ssl: Any = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerProtocol(self), host, port, reuse_address=True, ssl=ssl
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
class _ClientProtocol(asyncio.Protocol):
    def __init__(self, node: str) -> None:
        self.node = node
        self._framer = _Framer()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        # looked up once: get_running_loop() costs a getpid() syscall per call on 3.11
        self.loop = asyncio.get_running_loop()
        self._out = _Output(self.loop)
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
                code, message = ([*result, "", ""])[:2] if isinstance(result, list) else ("", "")
                fut.set_exception(RemoteError(str(code), str(message)))

    def send(self, msg_id: int, method: str, args: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()
        if self.transport is None or self.transport.is_closing():
            fut.set_exception(PeerError(f"{self.node}: not connected"))
            return fut
        self.pending[msg_id] = fut
        self._out.add(_pack([msg_id, method, args]))
        return fut


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
                    lambda: _ClientProtocol(node), addr[0], addr[1], ssl=self._ssl
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise PeerError(f"{node}: cannot connect to {addr[0]}:{addr[1]}: {exc}") from None
        _tune(proto.transport)
        hello = proto.send(0, HELLO, [self._token, self.me])
        try:
            await asyncio.wait_for(hello, self._connect_timeout)
        except (PeerError, TimeoutError) as exc:
            if proto.transport is not None:
                proto.transport.close()
            raise PeerError(f"{node}: handshake failed: {exc}") from None
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
        loop = conn.loop
        self._next_id += 1
        msg_id = self._next_id
        self.calls += 1
        fut = conn.send(msg_id, method, args)
        sent = loop.time()
        deadline = sent + timeout
        heapq.heappush(self._deadlines, (deadline, msg_id, conn, fut, method, sent))
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
