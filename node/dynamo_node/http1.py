"""The node's client port: a lean HTTP/1.1 server for the data path, aiohttp for the rest.

aiohttp's request and response objects cost about 35 µs of CPU per request on this
hardware, as much as the key-value work of a GET itself (bench/single_node.py). So the
client port runs this protocol instead: it parses the request head itself (a request
line and a few headers: one split, no regex), reads a Content-Length body, calls
`KvApi`, and writes each answer with one `write`. Keep-alive and pipelined requests are
served in order, one at a time per connection.

Everything else is handed, with the bytes already received, to aiohttp's protocol on
the same connection (`transport.set_protocol`), which owns the connection from then
on: other routes (admin, health, metrics, docs), other methods, chunked bodies,
`Expect`, upgrades, non-ASCII or malformed heads. So aiohttp's strict parser, not this
one, answers any odd request, and both paths share the auth check, the concurrency
limit, the metrics and the error bodies (`kvapi`).

Limits: a value over `value_max_bytes` (by Content-Length) is answered 413 before its
body is read, which is then dropped as it arrives (up to LINGER_S) and the connection
closed; a head over MAX_HEAD goes to aiohttp (which
refuses it); reading pauses while a request is in progress and MAX_BUFFER is queued;
connections idle for `keepalive_timeout` seconds are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

from .errors import DynamoError, PayloadTooLarge, Unavailable
from .kvapi import (
    CONTEXT_HEADER,
    KV_PREFIX,
    KV_ROUTE_NAME,
    Admission,
    Authorizer,
    KvApi,
    Reply,
    error_reply,
    json_reply,
)
from .metrics import Metrics

log = logging.getLogger("dynamo.http")

#: request line + headers; a longer head is aiohttp's to refuse
MAX_HEAD = 16 * 1024
#: bytes queued beyond the request in progress before reading pauses
MAX_BUFFER = 256 * 1024
KEEPALIVE_TIMEOUT_S = 75.0
#: how long the unread body of a refused request is read and dropped before closing
LINGER_S = 10.0
SWEEP_INTERVAL_S = 1.0
KV_METHODS = frozenset(("GET", "PUT", "DELETE"))
#: headers this server does not handle itself: such a request goes to aiohttp
HAND_OFF_HEADERS = frozenset(("transfer-encoding", "expect", "upgrade"))
_REASONS = {s.value: s.phrase for s in HTTPStatus}
#: Python >= 3.12 starts a task eagerly (asyncio.Task(..., eager_start=True))
EAGER_TASKS = sys.version_info >= (3, 12)


@dataclass(slots=True)
class Head:
    method: str
    target: str
    keep_alive: bool
    #: lower-case names; a repeated header's values joined with ", "
    headers: dict[str, str]
    length: int = 0


def parse_head(raw: bytes) -> Head | None:
    """A request head (without its final CRLF CRLF), or None when it is anything but a
    plain HTTP/1.0 or 1.1 request this server handles: the caller hands it to aiohttp."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        return None  # a bare CR or LF somewhere
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if version == "HTTP/1.1":
        keep_alive = True
    elif version == "HTTP/1.0":
        keep_alive = False
    else:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name.strip() != name or " " in name or "\t" in name:
            return None  # no colon, space before it, or obsolete line folding
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            if name in ("content-length", "host", "authorization", "x-dynamo-context"):
                return None  # ambiguous: let the strict parser refuse it
            headers[name] += ", " + value
        else:
            headers[name] = value
    connection = headers.get("connection")
    if connection is not None:
        tokens = {t.strip().lower() for t in connection.split(",")}
        if "close" in tokens:
            keep_alive = False
        elif "keep-alive" in tokens:
            keep_alive = True
    return Head(method, target, keep_alive, headers)


def route(head: Head) -> str | None:
    """Why `head` must go to aiohttp, or None when this server serves it."""
    if head.method not in KV_METHODS:
        return "method"
    target = head.target
    if not target.startswith(KV_PREFIX) or len(target) == len(KV_PREFIX) or "#" in target:
        return "route"
    if target[len(KV_PREFIX)] == "?":
        return "route"
    headers = head.headers
    if not HAND_OFF_HEADERS.isdisjoint(headers):
        return "framing"
    raw = headers.get("content-length")
    if raw is not None:
        if not raw.isdigit() or len(raw) > 18:
            return "framing"
        head.length = int(raw)
        if head.length and head.method != "PUT":
            return "framing"  # a GET or DELETE with a body: aiohttp reads and ignores it
    return None


def render(reply: Reply, keep_alive: bool, date: str) -> bytes:
    """The response, head and body, as one bytes object."""
    status = reply.status
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    for name, value in reply.headers.items():
        lines.append(f"{name}: {value}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append(f"Content-Length: {len(reply.body)}\r\nDate: {date}\r\n\r\n")
    return "".join(lines).encode("utf-8") + reply.body


def _failure(exc: BaseException, head: Head) -> Reply:
    """The answer to a request whose work raised."""
    if isinstance(exc, DynamoError):
        return error_reply(exc)
    if isinstance(exc, asyncio.CancelledError):
        return error_reply(Unavailable("the request was cancelled"))
    if not isinstance(exc, Exception):
        raise exc  # KeyboardInterrupt, SystemExit
    log.error("unhandled error in %s %s", head.method, head.target[:200], exc_info=exc)
    return json_reply(500, {"error": {"code": "internal", "message": "internal error (logged)"}})


class KvServer:
    """What every connection shares: the API, auth, admission, metrics, the aiohttp
    protocol factory for hand-overs, and the connections (for the idle sweep and
    shutdown)."""

    def __init__(
        self,
        api: KvApi,
        auth: Authorizer,
        admission: Admission,
        metrics: Metrics,
        fallback: Callable[[], asyncio.Protocol],
        keepalive_timeout: float = KEEPALIVE_TIMEOUT_S,
        max_connections: int = 1 << 20,
    ) -> None:
        self.api = api
        #: open connections beyond this are closed at once (fdbudget.py)
        self.max_connections = max_connections
        self.refused_connections = 0
        self.auth = auth
        self.admission = admission
        self.metrics = metrics
        self.fallback = fallback
        self.value_max_bytes = api.value_max_bytes
        self.idle_sweeps = max(1, int(keepalive_timeout / SWEEP_INTERVAL_S))
        self.connections: set[KvProtocol] = set()
        #: requests in progress, and a future stop() waits on until there are none
        self.in_flight = 0
        self.idle_waiter: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.date = formatdate(usegmt=True)
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def protocol(self) -> KvProtocol:
        return KvProtocol(self)

    async def start(self, host: str, port: int, ssl: Any = None) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.protocol, host, port, reuse_address=True, ssl=ssl, backlog=1024
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="http-sweep")

    async def _sweep(self) -> None:
        """Once a second: refresh the Date header, close connections idle too long."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.date = formatdate(usegmt=True)
            for conn in list(self.connections):
                conn.idle += 1
                if conn.idle > self.idle_sweeps and not conn.busy:
                    conn.close()

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let requests in progress answer (up to `timeout`), close."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.stopping = True
            if not conn.busy:
                conn.close()
        if self.in_flight:
            self.idle_waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.idle_waiter), timeout)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)


class KvProtocol(asyncio.Protocol):
    def __init__(self, server: KvServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.stopping = False
        #: sweeps since the last bytes arrived
        self.idle = 0
        self._buf = b""
        self._extra: list[bytes] = []
        self._size = 0
        self._head: Head | None = None
        self._head_end = 0
        self._eof = False
        self._reading_paused = False
        self._writing_paused = False
        #: after a 413: bytes of the refused body still to read and drop
        self._discard: int | None = None
        self._in_process = False

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.connections) >= self.server.max_connections:
            # over the descriptor budget: storage must keep the descriptors it needs
            self.server.refused_connections += 1
            self.transport.abort()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.idle = 0
        if self._discard is not None:  # lingering after a 413: drop the unread body
            self._discard -= len(data)
            if self._discard <= 0:
                self.close()
            return
        if self._size:
            self._extra.append(data)
        else:
            self._buf = data
        self._size += len(data)
        if self.busy or self._writing_paused:
            if self._size > MAX_BUFFER and not self._reading_paused and self.transport:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        self._eof = True
        return self.busy  # keep the transport open until the answer is written

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if not self.busy:
            self._process()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- requests ----------------------------------------------------------------------
    def _joined(self) -> bytes:
        if self._extra:
            self._buf = b"".join([self._buf, *self._extra])
            self._extra.clear()
        return self._buf

    def _process(self) -> None:
        # requests that finish synchronously end in `_finish` while this loop is still on
        # the stack: the loop then takes the next pipelined request (no recursion)
        self._in_process = True
        try:
            self._serve_buffered()
        finally:
            self._in_process = False

    def _serve_buffered(self) -> None:
        while not self.busy and not self._writing_paused and self.transport is not None:
            head = self._head
            if head is None:
                if not self._size:
                    break
                buf = self._joined()
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if self._size > MAX_HEAD or self._eof:
                        self._hand_off()
                    break
                parsed = parse_head(buf[:end]) if end <= MAX_HEAD else None
                if parsed is None or route(parsed) is not None:
                    self._hand_off()
                    break
                if parsed.length > self.server.value_max_bytes:
                    self._too_large(parsed, end + 4)
                    break
                head = self._head = parsed
                self._head_end = end + 4
            need = self._head_end + head.length
            if self._size < need:
                break
            buf = self._joined()
            body = buf[self._head_end : need] if head.method == "PUT" else None
            self._buf = buf[need:]
            self._size -= need
            self._head = None
            self._dispatch(head, body)
        if self._reading_paused and not self.busy and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._eof and not self.busy and not self._size:
            self.close()

    def _dispatch(self, head: Head, body: bytes | None) -> None:
        server = self.server
        start = time.perf_counter()
        headers = head.headers
        if server.auth.enabled:
            try:
                server.auth.check("client", headers.get("authorization"))
            except DynamoError as exc:
                self._answer(head, error_reply(exc), start)
                return
        if self.stopping or not server.admission.try_enter():
            reason = "the node is stopping" if self.stopping else "too many concurrent requests"
            self._answer(head, error_reply(Unavailable(reason)), start)
            return
        path, _, query = head.target.partition("?")
        work: Coroutine[Any, Any, Reply]
        if head.method == "GET":
            work = server.api.get(path, query)
        else:
            work = server.api.write(
                path, query, headers.get("x-dynamo-context"), headers.get("content-type"), body
            )
        self.busy = True
        server.in_flight += 1
        if EAGER_TASKS:
            task = asyncio.Task(  # type: ignore[call-arg]
                self._run(work, head, start), loop=server.loop, eager_start=True
            )
            if not task.done():  # hold it until it is (the loop keeps only weak references)
                server.tasks.add(task)
                task.add_done_callback(server.tasks.discard)
        else:
            self._step(work, head, start)

    async def _run(self, work: Coroutine[Any, Any, Reply], head: Head, start: float) -> None:
        """The request as an eager task (Python >= 3.12): run at once, no loop round."""
        try:
            reply = await work
        except BaseException as exc:
            reply = _failure(exc, head)
        self._finish(head, reply, start)

    def _step(self, work: Coroutine[Any, Any, Reply], head: Head, start: float) -> None:
        """Python 3.11 has no eager tasks: run the request's coroutine up to its next
        suspension here, without a Task; most GETs finish in this first step, and the
        rest resume from the future they wait on (as Task.__step does). Code on this
        path runs outside any task: on 3.11 nothing it uses needs one (wait_for and the
        futures do not; asyncio.timeout() would, and is not used)."""
        try:
            waiting = work.send(None)
        except StopIteration as done:
            reply: Reply = done.value
        except BaseException as exc:
            reply = _failure(exc, head)
        else:
            if getattr(waiting, "_asyncio_future_blocking", False):
                waiting._asyncio_future_blocking = False  # as Task.__step does
                waiting.add_done_callback(lambda _f: self._step(work, head, start))
            else:  # a bare yield (asyncio.sleep(0)): resume on the next loop iteration
                asyncio.get_running_loop().call_soon(self._step, work, head, start)
            return
        self._finish(head, reply, start)

    def _finish(self, head: Head, reply: Reply, start: float) -> None:
        server = self.server
        server.admission.leave()
        server.in_flight -= 1
        if not server.in_flight and server.idle_waiter is not None:
            server.idle_waiter.set_result(None)
            server.idle_waiter = None
        self.busy = False
        self._answer(head, reply, start)
        if not self._in_process:
            self._process()

    def _answer(self, head: Head, reply: Reply, start: float, close: bool = True) -> None:
        keep_alive = head.keep_alive and not self.stopping
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(render(reply, keep_alive, self.server.date))
            if not keep_alive and close:
                self.transport.close()
        self.server.metrics.observe(
            KV_ROUTE_NAME, head.method, reply.status, time.perf_counter() - start
        )

    def _too_large(self, head: Head, head_end: int) -> None:
        """413 without buffering the body, then close. Closing at once, with the client
        still sending, would make the kernel reset the connection, and a reset can
        destroy the 413 before the client reads it: so the body is read and dropped
        first, for at most LINGER_S (aiohttp's and nginx's "lingering close")."""
        exc = PayloadTooLarge(
            f"the value is {head.length} bytes; the limit is {self.server.value_max_bytes}"
        )
        head.keep_alive = False
        self._answer(head, error_reply(exc), time.perf_counter(), close=False)
        self._discard = head_end + head.length - self._size
        self._buf, self._extra, self._size = b"", [], 0
        if self._discard <= 0:
            self.close()
        elif self.transport is not None:
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
            asyncio.get_running_loop().call_later(LINGER_S, self.close)

    def _hand_off(self) -> None:
        """Give the connection, and the bytes received so far, to aiohttp."""
        transport = self.transport
        if transport is None:
            return
        data = self._joined()
        self._buf, self._size = b"", 0
        self.transport = None
        self.server.connections.discard(self)
        proto = self.server.fallback()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self._reading_paused:
            transport.resume_reading()
        if data:
            proto.data_received(data)
        if self._eof:
            proto.eof_received()


__all__ = ["CONTEXT_HEADER", "Head", "KvProtocol", "KvServer", "parse_head", "render", "route"]
