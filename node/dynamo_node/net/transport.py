"""Node-to-node calls: the `Transport` interface and its in-memory twin.

A call names a peer by node id, a method and msgpack-able arguments, and either returns
the peer's result or raises `PeerError` (refused, reset, timed out, or failed remotely).
`rpc_client.TcpTransport` is the real one; `MemoryTransport` connects handlers in one
process, with switchable failures and delays, so the coordinator is tested without
sockets (tests/node/cluster/test_coordinator.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from dynamo_node.core.errors import PeerError

#: the server side: (method, args, caller node id) -> result
Handler = Callable[[str, Any, str], Awaitable[Any]]
#: a posted call's answer, called once: (result, None) or (None, the PeerError)
Reply = Callable[[Any, BaseException | None], None]


class RemoteError(PeerError):
    """The peer answered, with an error (its code and message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.remote_code = code


class Transport(Protocol):
    async def call(self, node: str, method: str, args: Any, timeout: float) -> Any: ...

    def start(self, node: str, method: str, args: Any, timeout: float) -> asyncio.Future[Any]:
        """Like `call`, as a future (no task when a connection is ready)."""

    def post(self, node: str, method: str, args: Any, timeout: float, reply: Reply) -> None:
        """Like `start`, answered through `reply` (called once, from the loop). The
        calls posted to one node for one method during a loop iteration may travel
        together (TcpTransport sends them as one batch frame)."""

    async def close(self) -> None: ...


def deliver(reply: Reply, fut: asyncio.Future[Any]) -> None:
    """Hand a finished call's outcome to `reply` (a done callback)."""
    if fut.cancelled():
        reply(None, PeerError("the call was cancelled"))
    elif fut.exception() is not None:
        reply(None, fut.exception())
    else:
        reply(fut.result(), None)


class MemoryTransport:
    """Peers in one process. `down` nodes refuse; `paused` nodes never answer (like
    SIGSTOP: the call times out); `delay` adds latency per node."""

    def __init__(self, me: str, registry: dict[str, Handler]) -> None:
        self.me = me
        self.registry = registry
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.delay: dict[str, float] = {}
        self.calls: list[tuple[str, str]] = []

    async def call(self, node: str, method: str, args: Any, timeout: float) -> Any:
        self.calls.append((node, method))
        handler = self.registry.get(node)
        if handler is None or node in self.down:
            raise PeerError(f"{node}: connection refused")

        async def run() -> Any:
            if node in self.paused:
                await asyncio.Event().wait()
            if self.delay.get(node):
                await asyncio.sleep(self.delay[node])
            assert handler is not None
            return await handler(method, args, self.me)

        try:
            return await asyncio.wait_for(run(), timeout)
        except TimeoutError:
            raise PeerError(f"{node}: {method} timed out after {timeout:.3f}s") from None

    def start(self, node: str, method: str, args: Any, timeout: float) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self.call(node, method, args, timeout))

    def post(self, node: str, method: str, args: Any, timeout: float, reply: Reply) -> None:
        self.start(node, method, args, timeout).add_done_callback(functools.partial(deliver, reply))

    async def close(self) -> None:
        return None
