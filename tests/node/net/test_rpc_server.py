"""The RPC server against raw connections: what a connection may do before its hello
(frame size, deadline, how many may wait, nothing after a bad hello is served), and a
malformed batch is refused while the connection is kept."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from dynamo_node.core.errors import InvalidRequest
from dynamo_node.net.framing import BATCH, BATCH_BYTES, HELLO_MAX_FRAME, Framer
from dynamo_node.net.rpc_server import RpcServer
from tests.harness import free_port
from tests.node.net.test_framing import _frame

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


async def test_a_malformed_batch_is_refused_and_the_connection_kept() -> None:
    server, port = await _server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        framer = Framer()

        async def frame() -> Any:
            while True:
                got = framer.feed(await asyncio.wait_for(reader.read(65536), 5))
                if got:
                    assert len(got) == 1
                    return got[0]

        writer.write(_frame([0, "hello", [TOKEN, "raw"]]))
        assert await frame() == [0, 0, ["ok", [BATCH]]]
        for i, bad in enumerate(([], "echo", ["echo", "x"], [BATCH, []], [7, []])):
            writer.write(_frame([i + 1, BATCH, bad]))
            msg_id, status, error = await frame()
            assert (msg_id, status, error[0]) == (i + 1, 1, "invalid_request")
        writer.write(_frame([9, BATCH, ["echo", [1, 2]]]))
        assert await frame() == [9, 0, [[0, ["raw", 1]], [0, ["raw", 2]]]]
        writer.close()
    finally:
        await server.stop()


async def _closed(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    """Whether the server closes the connection (within `timeout`) without answering."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True


async def test_before_the_hello_a_connection_is_held_to_little() -> None:
    """The first frame is at most HELLO_MAX_FRAME, arrives within hello_timeout_s, and
    at most max_unauthenticated connections wait for theirs; each refusal is counted."""
    server = RpcServer(_echo, TOKEN, hello_timeout_s=0.5, max_unauthenticated=2)
    port = free_port()
    await server.start("127.0.0.1", port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack(">I", HELLO_MAX_FRAME + 1) + b"\0" * 100)
        assert await _closed(reader)
        assert server.refused == 1
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.05)
        extra_reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed(extra_reader, 0.4)  # beyond the limit: at once
        for silent_reader, _ in silent:  # then the deadline closes the others
            assert await _closed(silent_reader)
        assert server.refused == 4 and not server.waiting
        # a hello with a large frame behind it in the same write: both served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        big = b"x" * (BATCH_BYTES // 2)
        writer.write(_frame([0, "hello", [TOKEN, "peer"]]) + _frame([1, "echo", big]))
        framer, got = Framer(), []
        while len(got) < 2:
            got += framer.feed(await asyncio.wait_for(reader.read(65536), 5))
        assert got == [[0, 0, ["ok", [BATCH]]], [1, 0, ["peer", big]]]
        await asyncio.sleep(0.7)  # past the hello deadline: kept
        writer.write(_frame([2, "echo", 1]))
        assert framer.feed(await asyncio.wait_for(reader.read(65536), 5)) == [[2, 0, ["peer", 1]]]
        assert server.refused == 4 and not server.waiting
        writer.close()
    finally:
        await server.stop()


async def test_nothing_after_a_bad_hello_is_served() -> None:
    calls: list[Any] = []

    async def record(method: str, args: Any, caller: str) -> Any:
        calls.append(method)
        return None

    server = RpcServer(record, TOKEN)
    port = free_port()
    await server.start("127.0.0.1", port)
    try:
        for bad in ("", "wrong", None):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            first = [1, "echo", []] if bad is None else [0, "hello", [bad, "x"]]
            writer.write(
                _frame(first) + _frame([0, "hello", [TOKEN, "x"]]) + _frame([1, "echo", []])
            )
            assert await _closed(reader)
        assert calls == [] and server.refused == 3
    finally:
        await server.stop()
