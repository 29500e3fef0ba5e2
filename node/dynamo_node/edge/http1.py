"""The node's client port: a lean HTTP/1.1 server for the data path, aiohttp for the rest.

aiohttp's request and response objects cost about 35 µs of CPU per request on this
hardware, as much as the key-value work of a GET itself (bench/single_node.py). So the
client port runs this protocol instead: it parses the request head itself, reads a
Content-Length body, calls `KvApi`, and writes each answer with one `write`. Keep-alive
and pipelined requests are served in order, one at a time per connection.

Every request head on the port, whoever serves it, is checked here first, strictly
(RFC 9110/9112; `parse_head`): method and header names are tokens, field values hold no
control characters, the request target none and no space, lines end in CRLF, HTTP/1.1
has exactly one Host, and the framing is unambiguous (Content-Length digits, once; or
Transfer-Encoding exactly `chunked`; never both). A bad head is answered 400 (414, 431
for the limits below) and ends the connection; nothing after it runs. A request with
`Connection: close` (or HTTP/1.0 without keep-alive) is the last one read.

Everything else (other routes, other methods, chunked bodies, `Expect`, upgrades,
non-ASCII header values) is relayed to aiohttp's protocol on the same connection: this
protocol stays the transport's protocol and passes aiohttp only whole, checked heads
(an absolute-form target rewritten to its path) and the bodies framed as checked, so
the same rules and limits hold on both paths; a bad head later on a relayed connection
is answered, in order, by aiohttp for us (a request carrying REFUSE_HEADER, which no
client may send). Both paths share the auth check and the concurrency limit (`auth`),
the metrics and the error bodies (`kvapi`).

Limits, the same on both paths (aiohttp's own defaults): a request line of at most
MAX_LINE bytes (else 414), header fields of at most MAX_FIELD bytes each and at most
MAX_HEADERS of them, and a head of at most MAX_HEAD bytes in all (else 431). A value
over `value_max_bytes` (by Content-Length) is answered 413 before its body is read,
which is then dropped as it arrives (up to LINGER_S) and the connection closed.
Deadlines: a request head must arrive whole within `http_head_timeout_s` of its first
byte (of the accept, on a fresh connection), and a body must make progress (some bytes)
at least every `http_body_timeout_s`; else 408 if nothing was answered on the
connection yet, and the connection is closed. Idle keep-alive connections are closed
after `keepalive_timeout` seconds. At most `max_connections` connections are open at
once (`config.max_connections`, else the descriptor budget of `fdbudget`): the next
ones are closed at once and counted. Reading pauses while a request is in progress and
MAX_BUFFER is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

from dynamo_node.core.errors import DynamoError, PayloadTooLarge, Unavailable
from dynamo_node.edge.auth import Admission, Authorizer
from dynamo_node.edge.kvapi import (
    CONTEXT_HEADER,
    KV_PREFIX,
    KV_ROUTE_NAME,
    KvApi,
    Reply,
    error_reply,
    json_reply,
)
from dynamo_node.edge.metrics import Metrics

log = logging.getLogger("dynamo.http")

#: the limits of a request head, on both paths (aiohttp's defaults): the request line
#: (414 beyond), one header field line, the number of fields, the whole head (431)
MAX_LINE = 8190
MAX_FIELD = 8190
MAX_HEADERS = 128
MAX_HEAD = 64 * 1024
#: bytes queued beyond the request in progress before reading pauses
MAX_BUFFER = 256 * 1024
KEEPALIVE_TIMEOUT_S = 75.0
#: how long the unread body of a refused request is read and dropped before closing
LINGER_S = 10.0
SWEEP_INTERVAL_S = 1.0
KV_METHODS = frozenset(("GET", "HEAD", "PUT", "DELETE"))
#: headers this server does not handle itself: such a request goes to aiohttp
HAND_OFF_HEADERS = frozenset(("transfer-encoding", "expect", "upgrade"))
#: headers that must not be repeated (nor, for Content-Length, be a list)
SINGLE_HEADERS = frozenset(
    (
        "host",
        "content-length",
        "transfer-encoding",
        "authorization",
        "content-type",
        "x-dynamo-context",
    )
)
#: a relayed request carrying this header is answered by aiohttp with the error it
#: names ("STATUS message"): how a bad head after relayed requests is answered in order.
#: Only this module sends it: a client's request carrying it is refused (400).
REFUSE_HEADER = "x-dynamo-refuse"
_REASONS = {s.value: s.phrase for s in HTTPStatus}
#: Python >= 3.12 starts a task eagerly (asyncio.Task(..., eager_start=True))
EAGER_TASKS = sys.version_info >= (3, 12)

#: RFC 9110 tchar (method, field names), field-value bytes (VCHAR, obs-text, SP, HTAB)
TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_HEX = b"0123456789abcdefABCDEF"
_TOKEN = "[-!#$%&'*+.^_`|~0-9A-Za-z]+"
#: on the latin-1 text of a head: the request line, and the whole head (one match)
_REQUEST_LINE = re.compile(f"({_TOKEN}) ([!-~]+) HTTP/1\\.([01])")
#: field values: VCHAR, obs-text, SP, HTAB (no NUL, CTL, DEL, bare CR or LF)
_HEAD = re.compile(_REQUEST_LINE.pattern + f"(?:\r\n{_TOKEN}:[\t -~\x80-\xff]*)*")
_ERROR_CODES = {
    400: "bad_request",
    408: "request_timeout",
    414: "uri_too_long",
    431: "header_fields_too_large",
}


class BadRequest(Exception):
    """A request head this server refuses: `status` (400, 414, 431) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refusal(status: int, message: str) -> Reply:
    """The error answer to a refused request (and a head deadline: 408)."""
    code = _ERROR_CODES.get(status, "bad_request")
    return json_reply(status, {"error": {"code": code, "message": message}})


@dataclass(slots=True)
class Head:
    method: str
    #: origin-form (the path of an absolute-form target)
    target: str
    keep_alive: bool
    #: lower-case names; a repeated header's values joined with ", "
    headers: dict[str, str]
    length: int = 0
    chunked: bool = False
    #: the target was absolute-form: relayed with its path only
    absolute: bool = False
    #: some header value holds obs-text (bytes >= 0x80): served by aiohttp
    ascii: bool = True


def head_problem(partial: bytes) -> BadRequest | None:
    """What is already wrong with an incomplete head (no CRLF CRLF yet): a bare LF
    (answered at once, not after a timeout), a line or a head over the limits."""
    newlines = partial.count(b"\n")
    if newlines != partial.count(b"\r\n"):
        return BadRequest(400, "lines must end in CRLF")
    first = partial.find(b"\r\n")
    if (first if first >= 0 else len(partial)) > MAX_LINE + (first < 0):
        return BadRequest(414, f"the request line is longer than {MAX_LINE} bytes")
    if newlines > MAX_HEADERS + 1:
        return BadRequest(431, f"more than {MAX_HEADERS} header fields")
    if newlines and len(partial) - partial.rfind(b"\n") - 1 > MAX_FIELD + 1:
        return BadRequest(431, f"a header field is longer than {MAX_FIELD} bytes")
    if len(partial) > MAX_HEAD:
        return BadRequest(431, f"the request head is longer than {MAX_HEAD} bytes")
    return None


def _target(method: str, target: str) -> tuple[str, bool]:
    """The origin-form target (RFC 9112 §3.2) and whether it was absolute-form."""
    if target[0] == "/":
        return target, False
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        end = len(rest)
        for stop in "/?#":
            at = rest.find(stop)
            if 0 <= at < end:
                end = at
        if end == 0:
            raise BadRequest(400, "an absolute-form target needs an authority")
        path = rest[end:]
        return (path if path[:1] == "/" else "/" + path), True
    if target == "*" and method == "OPTIONS":
        return target, False
    raise BadRequest(400, "the request target must be a path or an absolute URI")


def _malformed(raw: bytes, line: str) -> BadRequest:
    """Why a head does not match the grammar (only on that slow path)."""
    if raw.translate(None, _VALUE_BYTES).replace(b"\r\n", b""):
        return BadRequest(400, "control characters or a bare CR or LF in the request head")
    if _REQUEST_LINE.fullmatch(line) is None:
        return BadRequest(400, "the request line must be METHOD TARGET HTTP/1.0 or HTTP/1.1")
    # no colon, an empty name, space before the colon, obsolete line folding
    return BadRequest(400, "a header field name must be a token followed by ':'")


def parse_head(raw: bytes) -> Head:
    """A request head (without its final CRLF CRLF), checked strictly; BadRequest for
    anything RFC 9110/9112 does not allow or that is ambiguous to frame."""
    text = raw.decode("latin-1")  # one byte, one character
    lines = text.split("\r\n")
    if len(lines[0]) > MAX_LINE:
        raise BadRequest(414, f"the request line is longer than {MAX_LINE} bytes")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header fields")
    headers: dict[str, str] = {}
    for field in lines[1:]:
        if len(field) > MAX_FIELD:
            raise BadRequest(431, f"a header field is longer than {MAX_FIELD} bytes")
        name, _, value = field.partition(":")
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            if name in SINGLE_HEADERS:
                raise BadRequest(400, f"the {name} header must not be repeated")
            headers[name] += ", " + value
        else:
            headers[name] = value
    matched = _HEAD.fullmatch(text)
    if matched is None:
        raise _malformed(raw, lines[0])
    method, target, minor = matched.group(1, 2, 3)
    keep_alive = http11 = minor == "1"
    absolute = False
    if target[0] != "/":
        target, absolute = _target(method, target)
    if REFUSE_HEADER in headers:
        raise BadRequest(400, f"the {REFUSE_HEADER} header is reserved")
    if http11 and "host" not in headers:
        raise BadRequest(400, "an HTTP/1.1 request needs a Host header")
    head = Head(method, target, keep_alive, headers, 0, False, absolute, raw.isascii())
    length = headers.get("content-length")
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if length is not None:
            raise BadRequest(400, "Content-Length and Transfer-Encoding together")
        if not http11 or coding.lower() != "chunked":
            raise BadRequest(400, "the only transfer coding accepted is 'chunked'")
        head.chunked = True
    elif length is not None:
        if not (length.isascii() and length.isdigit()) or len(length) > 18:
            raise BadRequest(400, "Content-Length must be one decimal number")
        head.length = int(length)
    connection = headers.get("connection")
    if connection is not None:
        tokens = {t.strip().lower() for t in connection.split(",")}
        if "close" in tokens:
            head.keep_alive = False
        elif "keep-alive" in tokens:
            head.keep_alive = True
    return head


def route(head: Head) -> str | None:
    """Why `head` must go to aiohttp, or None when this server serves it."""
    if head.method not in KV_METHODS:
        return "method"
    target = head.target
    if not target.startswith(KV_PREFIX) or len(target) == len(KV_PREFIX) or "#" in target:
        return "route"
    if target[len(KV_PREFIX)] == "?":
        return "route"
    if not head.ascii:
        return "non-ascii"
    if not HAND_OFF_HEADERS.isdisjoint(head.headers):
        return "framing"
    if head.length and head.method != "PUT":
        return "framing"  # a GET or DELETE with a body: aiohttp reads and ignores it
    return None


def relayed_head(head: Head, raw: bytes) -> bytes:
    """The head as relayed to aiohttp: as received, with an absolute-form target
    replaced by its path."""
    if not head.absolute:
        return raw
    line_end = raw.find(b"\r\n")
    line = raw[:line_end] if line_end >= 0 else raw
    method, _target_raw, version = line.split(b" ")
    return b" ".join((method, head.target.encode("ascii"), version)) + raw[len(line) :]


def refuse_request(status: int, message: str) -> bytes:
    """The request relayed to aiohttp in place of a refused one (REFUSE_HEADER)."""
    return (
        f"GET / HTTP/1.1\r\nHost: -\r\nConnection: close\r\n"
        f"{REFUSE_HEADER}: {status} {message}\r\n\r\n"
    ).encode("ascii", "replace")


def chunk_size(line: bytes) -> int | None:
    """The size of a chunk-size line (without its CRLF; extensions ignored), or None
    when it is not one."""
    size = line.partition(b";")[0].rstrip(b" \t")
    if not size or len(size) > 16 or size.translate(None, _HEX):
        return None
    if line.translate(None, _VALUE_BYTES):
        return None
    return int(size, 16)


def render(reply: Reply, keep_alive: bool, date: str, body: bool = True) -> bytes:
    """The response, head and body (not for HEAD: `body` False), as one bytes object."""
    status = reply.status
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    for name, value in reply.headers.items():
        lines.append(f"{name}: {value}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append(f"Content-Length: {len(reply.body)}\r\nDate: {date}\r\n\r\n")
    head = "".join(lines).encode("utf-8")
    return head + reply.body if body else head


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
    protocol factory for relayed requests, the limits, and the connections (for the
    deadline sweep and shutdown)."""

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
        config = api.config
        self.api = api
        #: open connections beyond this are closed at once: config.max_connections, else
        #: `max_connections` (the descriptor budget, fdbudget.py), never more than that
        self.max_connections = connection_cap(config.max_connections, max_connections)
        self.refused_connections = 0
        #: connections closed by the head or body deadline
        self.timeouts = 0
        self.auth = auth
        self.admission = admission
        self.metrics = metrics
        self.fallback = fallback
        self.value_max_bytes = api.value_max_bytes
        head_s, body_s = config.http_head_timeout_s, config.http_body_timeout_s
        self.interval = min(SWEEP_INTERVAL_S, head_s / 4, body_s / 4)
        #: deadlines in sweeps: a connection is past one after MORE sweeps than this
        self.idle_sweeps = max(1, math.ceil(keepalive_timeout / self.interval))
        self.head_sweeps = max(1, math.ceil(head_s / self.interval))
        self.body_sweeps = max(1, math.ceil(body_s / self.interval))
        #: sweeps so far (the clock of the head deadline)
        self.ticks = 0
        self.connections: set[KvProtocol] = set()
        #: requests in progress, and a future stop() waits on until there are none
        self.in_flight = 0
        self.idle_waiter: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.date = formatdate(usegmt=True)
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        metrics.add_live(
            lambda: {"http_connections": float(len(self.connections))},
            lambda: {"http_timeouts_total": float(self.timeouts)},
        )

    def protocol(self) -> KvProtocol:
        return KvProtocol(self)

    async def start(self, host: str, port: int, ssl: Any = None) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.protocol, host, port, reuse_address=True, ssl=ssl, backlog=1024
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="http-sweep")

    async def _sweep(self) -> None:
        """Every `interval`: refresh the Date header, enforce the deadlines."""
        last_date = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            self.ticks += 1
            if loop.time() - last_date >= SWEEP_INTERVAL_S:
                last_date = loop.time()
                self.date = formatdate(usegmt=True)
            for conn in list(self.connections):
                conn.idle += 1
                conn.sweep()

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let requests in progress answer (up to `timeout`), close.
        Relayed connections are aiohttp's to close (its runner's cleanup)."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.stopping = True
            if not conn.busy and conn.relay is None:
                conn.close()
        if self.in_flight:
            self.idle_waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.idle_waiter), timeout)
        for conn in list(self.connections):
            if conn.relay is None:
                conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)


#: states of a relayed connection: what the next bytes are
R_HEAD, R_BODY, R_SIZE, R_DATA, R_CRLF, R_TRAILER, R_DONE = range(7)


class KvProtocol(asyncio.Protocol):
    def __init__(self, server: KvServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.stopping = False
        #: sweeps since the last bytes arrived
        self.idle = 0
        #: the sweep tick when the head being read began (None: not reading one)
        self.head_tick: int | None = None
        #: answers written (a deadline answers 408 only when none was)
        self.answered = 0
        #: the last request was read (Connection: close): later bytes are dropped
        self.last = False
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
        #: aiohttp's protocol once requests are relayed to it, and the relay's state
        self.relay: asyncio.Protocol | None = None
        self._rstate = R_HEAD
        self._rleft = 0
        self._rbuf = b""
        self._rtrailers = 0

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.connections) >= self.server.max_connections:
            # over the cap (the descriptor budget): storage must keep the descriptors
            # it needs
            self.server.refused_connections += 1
            self.transport.abort()
            return
        self.server.connections.add(self)
        self.head_tick = self.server.ticks  # a fresh connection owes a head

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.connections.discard(self)
        if self.relay is not None:
            self.relay.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.idle = 0
        if self.relay is not None:
            self._relay_data(data)
            return
        if self.last:
            return  # nothing after the last request runs (RFC 9112 §9.6)
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
        if self.relay is not None:
            return bool(self.relay.eof_received())
        return self.busy  # keep the transport open until the answer is written

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.relay is not None:
            self.relay.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.relay is not None:
            self.relay.resume_writing()
        elif not self.busy:
            self._process()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- deadlines -------------------------------------------------------------------
    def sweep(self) -> None:
        """One tick of the sweep: the head and body deadlines, the keep-alive timeout."""
        server = self.server
        if self.busy or self.transport is None or self._discard is not None:
            return
        reading = self._head is not None or (
            self.relay is not None and self._rstate not in (R_HEAD, R_DONE)
        )
        if self.head_tick is not None and server.ticks - self.head_tick > server.head_sweeps:
            self._expire("head")
        elif reading and self.idle > server.body_sweeps and self._is_reading():
            self._expire("body")
        elif self.relay is None and self.idle > server.idle_sweeps:
            self.close()

    def _is_reading(self) -> bool:
        """Whether the transport reads (not paused by aiohttp's flow control)."""
        is_reading = getattr(self.transport, "is_reading", None)
        return bool(is_reading()) if is_reading is not None else True

    def _expire(self, what: str) -> None:
        self.server.timeouts += 1
        transport = self.transport
        if transport is None:
            return
        if not self.answered and self.relay is None and not transport.is_closing():
            reply = refusal(408, f"the request {what} did not arrive in time")
            transport.write(render(reply, False, self.server.date))
            self.server.metrics.observe("unmatched", "-", 408, 0.0)
        self.last = True
        self._rstate = R_DONE
        transport.close()

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
        while (
            not self.busy
            and not self._writing_paused
            and self.transport is not None
            and self.relay is None
            and not self.last
        ):
            head = self._head
            if head is None:
                if not self._size:
                    break
                buf = self._joined()
                if buf[:2] == b"\r\n":  # empty lines before a request are ignored
                    while buf[:2] == b"\r\n":
                        buf = buf[2:]
                    self._buf, self._size = buf, len(buf)
                    if not buf:
                        break
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if self.head_tick is None:
                        self.head_tick = self.server.ticks
                    problem = head_problem(buf)
                    if problem is not None:
                        self._refuse(problem)
                    elif self._eof:
                        self.close()
                    break
                self.head_tick = None
                try:
                    if end > MAX_HEAD:
                        raise BadRequest(431, f"the request head is longer than {MAX_HEAD} bytes")
                    parsed = parse_head(buf[:end])
                except BadRequest as exc:
                    self._refuse(exc)
                    break
                if route(parsed) is not None:
                    self._hand_off(parsed, end + 4)
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
            self._head = None
            if head.keep_alive:
                self._buf = buf[need:]
                self._size -= need
            else:  # the last request: what follows is never read (RFC 9112 §9.6)
                self.last = True
                self._buf, self._extra, self._size = b"", [], 0
            self._dispatch(head, body)
        if self._reading_paused and not self.busy and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._eof and not self.busy and not self._size and self.relay is None:
            self.close()

    def _refuse(self, exc: BadRequest) -> None:
        """Answer a bad head and close: nothing after it is read."""
        self.last = True
        self._buf, self._extra, self._size = b"", [], 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(render(refusal(exc.status, exc.message), False, self.server.date))
            transport.close()
        self.answered += 1
        self.server.metrics.observe("unmatched", "-", exc.status, 0.0)

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
        if head.method in ("GET", "HEAD"):
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
        self.answered += 1
        if self.transport is not None and not self.transport.is_closing():
            body = head.method != "HEAD"
            self.transport.write(render(reply, keep_alive, self.server.date, body))
            if not keep_alive and close:
                self.last = True
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

    # --- the relay to aiohttp ------------------------------------------------------------
    def _hand_off(self, head: Head, head_end: int) -> None:
        """Relay this request, and every later one on the connection, to aiohttp: it
        writes to the transport itself; this protocol keeps reading, and passes it only
        checked heads and bodies as framed."""
        transport = self.transport
        if transport is None:
            return
        data = self._joined()
        self._buf, self._extra, self._size = b"", [], 0
        proto = self.relay = self.server.fallback()
        proto.connection_made(transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        first = self._relay_head(head, data[:head_end])
        if self._rstate != R_DONE:
            self._relay_data(data[head_end:], first)
        elif first:
            proto.data_received(first)
        if self._eof and self.transport is not None and not proto.eof_received():
            transport.close()

    def _relay_head(self, head: Head, raw: bytes) -> bytes:
        """A checked head to relay (with its CRLF CRLF); sets the state for its body."""
        self.head_tick = None
        if not head.keep_alive or "upgrade" in head.headers:
            # the last request (an upgrade too: what follows would not be HTTP/1.1)
            self.last = True
        if head.chunked:
            self._rstate = R_SIZE
        elif head.length:
            self._rstate, self._rleft = R_BODY, head.length
        else:
            self._rstate = R_DONE if self.last else R_HEAD
        return relayed_head(head, raw)

    def _relay_data(self, data: bytes, out_first: bytes = b"") -> None:
        """Scan what arrived: whole checked heads and framed bodies go to aiohttp; a bad
        head is answered (in order) through REFUSE_HEADER, then nothing more is read."""
        proto = self.relay
        if proto is None or self._rstate == R_DONE:
            return
        buf = self._rbuf + data if self._rbuf else data
        self._rbuf = b""
        out: list[bytes] = [out_first] if out_first else []
        pos, size = 0, len(buf)
        while pos < size and self._rstate != R_DONE:
            state = self._rstate
            if state in (R_BODY, R_DATA):
                take = min(self._rleft, size - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._rleft -= take
                if not self._rleft:
                    if state == R_DATA:
                        self._rstate = R_CRLF
                    else:
                        self._rstate = R_DONE if self.last else R_HEAD
                continue
            if state == R_CRLF:
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    return self._relay_abort(out)
                out.append(b"\r\n")
                pos += 2
                self._rstate = R_SIZE
                continue
            if state == R_HEAD:
                while buf.startswith(b"\r\n", pos):
                    pos += 2
                if pos >= size:
                    break
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if self.head_tick is None:
                        self.head_tick = self.server.ticks
                    problem = head_problem(buf[pos:])
                    if problem is not None:
                        return self._relay_refuse(out, problem)
                    break
                try:
                    if end - pos > MAX_HEAD:
                        raise BadRequest(431, f"the request head is longer than {MAX_HEAD} bytes")
                    head = parse_head(buf[pos:end])
                except BadRequest as exc:
                    return self._relay_refuse(out, exc)
                out.append(self._relay_head(head, buf[pos : end + 4]))
                pos = end + 4
                continue
            # R_SIZE or R_TRAILER: a line
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if size - pos > MAX_FIELD + 1:
                    return self._relay_abort(out)
                break
            line = buf[pos:end]
            if state == R_SIZE:
                chunk = chunk_size(line)
                if chunk is None:
                    return self._relay_abort(out)
                if chunk:
                    self._rstate, self._rleft = R_DATA, chunk
                else:
                    self._rstate, self._rtrailers = R_TRAILER, 0
            elif line:  # a trailer field
                self._rtrailers += 1
                name, sep, _ = line.partition(b":")
                if (
                    not sep
                    or not name
                    or name.translate(None, TCHAR)
                    or line.translate(None, _VALUE_BYTES)
                    or len(line) > MAX_FIELD
                    or self._rtrailers > MAX_HEADERS
                ):
                    return self._relay_abort(out)
            else:  # the end of the chunked body
                self._rstate = R_DONE if self.last else R_HEAD
            out.append(buf[pos : end + 2])
            pos = end + 2
        if pos < size and self._rstate != R_DONE:
            self._rbuf = buf[pos:]
        if out:
            proto.data_received(b"".join(out))

    def _relay_refuse(self, out: list[bytes], exc: BadRequest) -> None:
        """A bad head on a relayed connection: aiohttp answers it after what it was
        given before (a request carrying REFUSE_HEADER), and closes."""
        self._rstate = R_DONE
        self.last = True
        self.head_tick = None
        out.append(refuse_request(exc.status, exc.message))
        assert self.relay is not None
        self.relay.data_received(b"".join(out))

    def _relay_abort(self, out: list[bytes]) -> None:
        """A malformed chunked body: what came before is relayed, then the connection is
        closed (the request cannot be answered in order any more)."""
        self._rstate = R_DONE
        self.last = True
        if out and self.relay is not None:
            self.relay.data_received(b"".join(out))
        self.close()


def connection_cap(configured: int | None, budget: int) -> int:
    """The client-connection cap: `configured` (config.max_connections) if given, never
    more than the descriptor budget allows (fdbudget.Budget.connections)."""
    if configured is None:
        return budget
    if configured > budget:
        log.warning(
            "max_connections %d is more than the descriptor budget allows: %d",
            configured,
            budget,
        )
        return budget
    return configured


__all__ = [
    "CONTEXT_HEADER",
    "MAX_FIELD",
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_LINE",
    "REFUSE_HEADER",
    "BadRequest",
    "Head",
    "KvProtocol",
    "KvServer",
    "chunk_size",
    "connection_cap",
    "head_problem",
    "parse_head",
    "refusal",
    "render",
    "route",
]
