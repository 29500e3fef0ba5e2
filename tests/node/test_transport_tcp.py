"""The node-to-node protocol: calls, timeouts, auth, and fuzzing of its frame decoder
(garbage from the network closes that connection, never the server)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_node.errors import InvalidRequest, PeerError
from dynamo_node.transport_tcp import RpcServer, TcpTransport, _Framer, _Output
from tests.harness import free_port

TOKEN = "cluster-secret"


async def _echo(method: str, args: Any, caller: str) -> Any:
    if method == "echo":
        return [caller, args]
    if method == "slow":
        await asyncio.sleep(5)
    raise InvalidRequest(f"unknown method {method}")


async def _server() -> tuple[RpcServer, int]:
    server = RpcServer(_echo, TOKEN)
    port = free_port()
    await server.start("127.0.0.1", port)
    return server, port


async def test_calls_errors_and_timeouts() -> None:
    server, port = await _server()
    client = TcpTransport("me", lambda _n: ("127.0.0.1", port), token=TOKEN)
    try:
        assert await client.call("peer", "echo", [1, b"x"], 2) == ["me", [1, b"x"]]
        assert await client.start("peer", "echo", "fast", 2) == ["me", "fast"]
        with pytest.raises(PeerError, match="unknown method"):
            await client.call("peer", "nope", None, 2)
        with pytest.raises(PeerError, match="timed out"):
            await client.call("peer", "slow", None, 0.2)
    finally:
        await client.close()
        await server.stop()


async def test_a_wrong_token_is_refused() -> None:
    server, port = await _server()
    client = TcpTransport("me", lambda _n: ("127.0.0.1", port), token="wrong")
    try:
        with pytest.raises(PeerError):
            await client.call("peer", "echo", 1, 2)
    finally:
        await client.close()
        await server.stop()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_the_framer_raises_only_value_errors_on_garbage(data: bytes) -> None:
    framer = _Framer()
    try:
        frames = framer.feed(data)
    except Exception as exc:
        assert isinstance(exc, ValueError) or type(exc).__module__.startswith("msgpack"), exc
    else:
        assert isinstance(frames, list)


def _frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


garbage = st.one_of(
    st.binary(min_size=1, max_size=256),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=8,
    ).map(_frame),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(garbage, min_size=1, max_size=4), st.booleans())
def test_garbage_never_kills_the_server(chunks: list[bytes], after_hello: bool) -> None:
    async def scenario() -> None:
        server, port = await _server()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if after_hello:
                writer.write(_frame([0, "hello", [TOKEN, "fuzzer"]]))
            for chunk in chunks:
                writer.write(chunk)
            await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 5)  # answers or a close, never a hang
            writer.close()
            # the server still serves a well-behaved peer
            client = TcpTransport("me", lambda _n: ("127.0.0.1", port), token=TOKEN)
            try:
                assert await client.call("peer", "echo", 7, 2) == ["me", 7]
            finally:
                await client.close()
        finally:
            await server.stop()

    asyncio.run(scenario())


class _Recorder:
    def __init__(self, events: list[object]) -> None:
        self.events = events

    def write(self, data: bytes) -> None:
        self.events.append(data)

    def is_closing(self) -> bool:
        return False


async def test_frames_of_one_loop_iteration_leave_in_one_write_after_the_hook() -> None:
    events: list[object] = []
    out = _Output(asyncio.get_running_loop(), before=lambda: events.append("before"))
    out.transport = _Recorder(events)  # type: ignore[assignment]
    for frame in (b"a", b"b", b"c"):
        out.add(frame)
    assert events == []  # nothing written while the iteration runs
    await asyncio.sleep(0)
    # the node applies its grouped writes in `before`: replies never precede them
    assert events == ["before", b"abc"]
    out.add(b"d")
    await asyncio.sleep(0)
    assert events == ["before", b"abc", "before", b"d"]
