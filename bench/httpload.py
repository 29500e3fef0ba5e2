"""A lean closed-loop HTTP/1.1 load generator on raw asyncio sockets (uvloop).

One `Conn` per keep-alive connection, one request in flight per connection (like wrk
and YCSB's client threads). Responses are parsed just enough: status, Content-Length or
chunked body, and optionally the value of one header (e.g. X-Dynamo-Context). This
costs a few µs of CPU per request, far below aiohttp's ClientSession, so a single load
process on one core can drive servers that together use another core.

`run_closed_loop` drives `concurrency` workers for warmup + duration seconds; each
worker asks a `next_request(worker_index)` callable for (op, request bytes, on_reply)
and records the latency per op. Throughput and percentiles count only requests started
and finished inside the measured window.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchlib import percentile

OnReply = Callable[[int, bytes | None, bytes], bool] | None
NextRequest = Callable[[int], tuple[str, bytes, OnReply]]


class ConnectionClosed(Exception):
    pass


class Conn(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection; `request()` one at a time."""

    def __init__(self, capture: bytes = b"") -> None:
        self.capture = capture.lower()
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._waiter: asyncio.Future[tuple[int, bytes | None, bytes]] | None = None
        self._head: tuple[int, int, int, bool, bytes | None] | None = None

    @classmethod
    async def open(cls, host: str, port: int, capture: bytes = b"") -> Conn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(capture), host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionClosed(str(exc or "closed by peer")))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes | None, bytes]]:
        fut: asyncio.Future[tuple[int, bytes | None, bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        if self.transport is None:
            fut.set_exception(ConnectionClosed("not connected"))
            return fut
        self._waiter = fut
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        while self._buf and self._waiter is not None:
            if not self._parse():
                return

    def _parse(self) -> bool:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = buf[:end].split(b"\r\n")
            status = int(lines[0][9:12])
            length = -1
            chunked = False
            captured: bytes | None = None
            capture = self.capture
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif capture and name == capture:
                    captured = value.strip()
            self._head = (status, end + 4, length, chunked, captured)
        status, start, length, chunked, captured = self._head
        if chunked:
            body, consumed = _dechunk(buf, start)
            if consumed < 0:
                return False
        else:
            if length < 0:
                length = 0
            if len(buf) < start + length:
                return False
            body = buf[start : start + length]
            consumed = start + length
        self._buf = buf[consumed:]
        self._head = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, captured, body))
        return True


def _dechunk(buf: bytes, pos: int) -> tuple[bytes, int]:
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return b"", -1
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            # no trailers expected; the final CRLF
            if len(buf) < pos + 2:
                return b"", -1
            return b"".join(parts), pos + 2
        if len(buf) < pos + size + 2:
            return b"", -1
        parts.append(buf[pos : pos + size])
        pos += size + 2


def build(
    method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@dataclass
class OpStats:
    latencies_us: array = field(default_factory=lambda: array("d"))
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def summary(self, window_s: float) -> dict[str, Any]:
        lat = sorted(self.latencies_us)
        return {
            "ops": self.ok,
            "ops_per_s": round(self.ok / window_s, 1),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": round(percentile(lat, 50) / 1000, 3),
            "p99_ms": round(percentile(lat, 99) / 1000, 3),
            "p999_ms": round(percentile(lat, 99.9) / 1000, 3),
            "mean_ms": round(sum(lat) / len(lat) / 1000, 3) if lat else None,
        }


@dataclass
class LoadResult:
    window_s: float
    ops: dict[str, OpStats]
    connection_errors: int
    unfinished: int

    @property
    def total_ok(self) -> int:
        return sum(s.ok for s in self.ops.values())

    @property
    def total_errors(self) -> int:
        return sum(s.errors for s in self.ops.values()) + self.connection_errors + self.unfinished

    def summary(self) -> dict[str, Any]:
        lat = sorted(v for s in self.ops.values() for v in s.latencies_us)
        return {
            "window_s": round(self.window_s, 3),
            "ops_per_s": round(self.total_ok / self.window_s, 1),
            "ok": self.total_ok,
            "errors": self.total_errors,
            "connection_errors": self.connection_errors,
            "unfinished_at_end": self.unfinished,
            "p50_ms": round(percentile(lat, 50) / 1000, 3),
            "p99_ms": round(percentile(lat, 99) / 1000, 3),
            "p999_ms": round(percentile(lat, 99.9) / 1000, 3),
            "by_op": {name: s.summary(self.window_s) for name, s in sorted(self.ops.items())},
        }


async def run_closed_loop(
    targets: Sequence[tuple[str, int]],
    next_request: NextRequest,
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    capture: bytes = b"",
    ok_statuses: Sequence[int] = (200, 201, 204),
    request_timeout: float = 10.0,
    on_window: tuple[Callable[[], Any], Callable[[], Any]] | None = None,
) -> LoadResult:
    """`concurrency` connections spread round-robin over `targets`, each with one request
    in flight; measure requests that start after `warmup` and end before the window's end.
    `on_window` = (start, stop) callbacks run when the measured window opens and closes
    (e.g. to meter CPU over exactly that window)."""
    loop = asyncio.get_running_loop()
    if on_window is not None:
        loop.call_later(warmup, on_window[0])
        loop.call_later(warmup + duration, on_window[1])
    ok_set = frozenset(ok_statuses)
    stats: dict[str, OpStats] = {}
    conn_errors = 0
    unfinished = 0
    t_start = loop.time()
    m_start_ns = time.perf_counter_ns() + int(warmup * 1e9)
    m_end_ns = m_start_ns + int(duration * 1e9)

    async def worker(i: int) -> None:
        nonlocal conn_errors, unfinished
        host, port = targets[i % len(targets)]
        conn = await Conn.open(host, port, capture)
        perf = time.perf_counter_ns
        try:
            while True:
                op, data, on_reply = next_request(i)
                t0 = perf()
                if t0 >= m_end_ns:
                    return
                try:
                    status, captured, body = await conn.request(data)
                except (ConnectionClosed, OSError):
                    conn_errors += t0 >= m_start_ns
                    conn.close()
                    await asyncio.sleep(0.01)
                    conn = await Conn.open(host, port, capture)
                    continue
                t1 = perf()
                if t0 < m_start_ns or t1 > m_end_ns:
                    if on_reply is not None:
                        on_reply(status, captured, body)
                    continue
                s = stats.get(op)
                if s is None:
                    s = stats[op] = OpStats()
                good = status in ok_set
                if on_reply is not None:
                    good = on_reply(status, captured, body) and good
                s.statuses[status] = s.statuses.get(status, 0) + 1
                if good:
                    s.ok += 1
                    s.latencies_us.append((t1 - t0) / 1000)
                else:
                    s.errors += 1
        finally:
            conn.close()

    tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
    end = t_start + warmup + duration + request_timeout
    done, pending = await asyncio.wait(tasks, timeout=max(0.1, end - loop.time()))
    for task in pending:
        unfinished += 1
        task.cancel()
    for task in done:
        exc = task.exception()
        if exc is not None:
            conn_errors += 1
    return LoadResult(duration, stats, conn_errors, unfinished)


async def run_fixed(
    targets: Sequence[tuple[str, int]],
    requests: Sequence[tuple[bytes, OnReply]],
    concurrency: int,
    capture: bytes = b"",
    ok_statuses: Sequence[int] = (200, 201, 204),
) -> tuple[int, int, float]:
    """Send each request once (e.g. a preload), `concurrency` at a time.
    Returns (ok, errors, seconds)."""
    ok_set = frozenset(ok_statuses)
    it = iter(requests)
    ok = errors = 0
    t0 = time.perf_counter()

    async def worker(i: int) -> None:
        nonlocal ok, errors
        host, port = targets[i % len(targets)]
        conn = await Conn.open(host, port, capture)
        try:
            for data, on_reply in it:
                for _attempt in range(3):
                    try:
                        status, captured, body = await conn.request(data)
                    except (ConnectionClosed, OSError):
                        conn.close()
                        await asyncio.sleep(0.05)
                        conn = await Conn.open(host, port, capture)
                        continue
                    if on_reply is not None:
                        on_reply(status, captured, body)
                    if status in ok_set:
                        ok += 1
                        break
                else:
                    errors += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return ok, errors, time.perf_counter() - t0
