"""The server side of the node-to-node protocol (wire format: `framing`; client:
`rpc_client`). `RpcServer` listens on the peer port; each connection first says hello,
then sends calls. A call is served synchronously by the optional `FastHandler` when that
takes it (the node serves replica writes so), else by the async `Handler` in a task of
its own; either way its reply is a frame of its own. A batch frame's calls are served
the same way, each in turn, and answered together in one reply once all are done (a
malformed batch is refused with an error and the connection kept; bytes that are not
a frame of a call close the connection). The replies of one event-loop iteration leave in one
write, after the `before` hook.

Before its hello is accepted a connection costs the server almost nothing, token or
not: its first frame may be at most HELLO_MAX_FRAME bytes (a larger length closes the
connection before anything is buffered), must be a hello with the right token (any
token when the server has none; anything else closes the connection, and nothing sent
after it is looked at), and must arrive within `hello_timeout_s`; at most
`max_unauthenticated` connections may be waiting for their hello at once (more are
closed at once). Each refusal is counted in `refused` (and logged at most once per
REFUSAL_LOG_INTERVAL_S). Once the hello is accepted none of this is checked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, cast

from dynamo_node.core.errors import DynamoError, PeerError
from dynamo_node.net.framing import (
    BATCH,
    FEATURES,
    HELLO,
    HELLO_MAX_FRAME,
    Framer,
    Output,
    pack_frame,
)
from dynamo_node.net.transport import Handler

log = logging.getLogger("dynamo.transport")

#: at most one warning per this many seconds about refused connections (a flood of
#: them must not flood the log; `RpcServer.refused` counts every one)
REFUSAL_LOG_INTERVAL_S = 10.0


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: RpcServer) -> None:
        self._server = server
        self._framer = Framer()
        self._transport: asyncio.Transport | None = None
        self._out = Output(asyncio.get_running_loop(), server.before)
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
            self._out.add(pack_frame(obj))

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
