"""The wire format of the node-to-node protocol: length-prefixed msgpack frames over one
TCP connection per peer pair, multiplexed by request id.

Frames: 4-byte big-endian length, then msgpack:
    request  [id, method, args]          response [id, 0, result] | [id, 1, [code, msg]]
    batch    [id, "batch", [method, [args, ...]]]
             response [id, 0, [[0, result] | [1, [code, msg]], ...]], one entry per call
The first frame on a connection is the hello [0, "hello", [token, node_id]]; the server
answers it with ["ok", [features]] (a server that predates batches answered "ok": the
client then sends every call in its own frame). Frames larger than MAX_FRAME are
refused; the first frame (the hello) may be at most HELLO_MAX_FRAME bytes.

`Framer` splits a received byte stream into decoded frames; `Output` writes the frames
of one event-loop iteration in one `write`. The server is `rpc_server`, the client
`rpc_client`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import msgpack

from dynamo_node.core.codec import pack

MAX_FRAME = 64 * 1024 * 1024
#: the largest first frame (the hello) of a connection: a hello is tens of bytes
HELLO_MAX_FRAME = 4096
#: the frame header: the length of the msgpack body that follows
LEN = struct.Struct(">I")
HELLO = "hello"
#: the method name of a batch frame (never a handler's)
BATCH = "batch"
#: a batch is sent as soon as its calls' encodings reach this size (frames stay far
#: below MAX_FRAME however many large values one iteration posts)
BATCH_BYTES = 1024 * 1024
#: what this server understands beyond single calls, announced in its hello reply
FEATURES = [BATCH]


def pack_frame(obj: Any) -> bytes:
    """`obj` as one frame: its length, then its msgpack."""
    body = pack(obj)
    return LEN.pack(len(body)) + body


class Framer:
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
                (size,) = LEN.unpack_from(buf, pos)
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
        (size,) = LEN.unpack_from(buf, 0)
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


class Output:
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
