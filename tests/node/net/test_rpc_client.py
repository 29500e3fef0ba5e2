"""The node-to-node protocol through its client: calls, timeouts, auth, batches, and
fuzzing of the server's frame decoder (garbage from the network closes that connection,
never the server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_node.core.errors import InvalidRequest, PeerError
from dynamo_node.net.framing import BATCH_BYTES
from dynamo_node.net.rpc_client import TcpTransport
from dynamo_node.net.rpc_server import RpcServer
from dynamo_node.net.transport import RemoteError
from tests.harness import free_port
from tests.node.net.test_framing import _frame
from tests.node.net.test_rpc_server import TOKEN, _echo, _server


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


async def test_started_calls_expire_at_their_own_deadlines() -> None:
    """`start` keeps its calls' deadlines in one heap with one timer: each call still
    fails at its own deadline, in deadline order whatever the order of the calls, and
    answered calls are neither failed nor kept."""
    server, port = await _server()
    client = TcpTransport("me", lambda _n: ("127.0.0.1", port), token=TOKEN)
    loop = asyncio.get_running_loop()
    try:
        await client.call("peer", "echo", 0, 2)  # connected: `start` takes the fast path
        t0 = loop.time()
        failed_at: dict[str, float] = {}
        calls = {
            name: client.start("peer", "slow", None, timeout)
            for name, timeout in (("late", 0.6), ("early", 0.2), ("middle", 0.4))
        }
        answered = [client.start("peer", "echo", i, 0.3) for i in range(50)]
        for name, fut in calls.items():
            fut.add_done_callback(lambda _f, name=name: failed_at.setdefault(name, loop.time()))
        assert [await fut for fut in answered] == [["me", i] for i in range(50)]
        for fut in calls.values():
            with pytest.raises(PeerError, match=r"slow timed out after 0\.[246]00s"):
                await fut
        assert sorted(failed_at, key=failed_at.__getitem__) == ["early", "middle", "late"]
        for name, timeout in (("early", 0.2), ("middle", 0.4), ("late", 0.6)):
            assert timeout - 0.01 <= failed_at[name] - t0 < timeout + 0.5
        # the connection answered all along, so it is kept
        assert await client.start("peer", "echo", "still", 2) == ["me", "still"]
        await asyncio.sleep(0)
        assert len(client._deadlines) <= 1  # answered entries left with the last expiry
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


garbage = st.one_of(
    st.binary(min_size=1, max_size=256),
    # batch frames with arbitrary contents
    st.tuples(
        st.integers(0, 9),
        st.from_regex(r"\A(batch|echo)\Z"),
        st.none()
        | st.lists(
            st.none() | st.text(max_size=6) | st.lists(st.integers(0, 3), max_size=3), max_size=4
        ),
    ).map(lambda t: _frame(list(t))),
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


# --- batches -----------------------------------------------------------------------
def _fast_echo(method: str, args: Any, caller: str) -> tuple[bool, Any]:
    """The synchronous path (as the node serves replica writes): even numbers only."""
    if method == "echo" and isinstance(args, int) and args % 2 == 0:
        return True, [caller, args, "fast"]
    if method == "echo" and args == "refuse":
        raise InvalidRequest("refused on the fast path")
    return False, None


class _Answers:
    def __init__(self) -> None:
        self.got: dict[Any, tuple[Any, BaseException | None]] = {}
        self.done = asyncio.Event()
        self.expected = 0

    def reply(self, key: Any) -> Any:
        self.expected += 1

        def answer(result: Any, exc: BaseException | None) -> None:
            assert key not in self.got  # each call is answered once
            self.got[key] = (result, exc)
            if len(self.got) == self.expected:
                self.done.set()

        return answer

    async def all(self) -> dict[Any, tuple[Any, BaseException | None]]:
        await asyncio.wait_for(self.done.wait(), 5)
        return self.got


@contextlib.asynccontextmanager
async def _connected(server: RpcServer | None = None) -> AsyncIterator[TcpTransport]:
    """A client connected to `server` (default: the echo server), both closed after."""
    server = server or RpcServer(_echo, TOKEN)
    port = free_port()
    await server.start("127.0.0.1", port)
    client = TcpTransport("me", lambda _n: ("127.0.0.1", port), token=TOKEN)
    try:
        await client.call("peer", "echo", 0, 2)  # connected, features known
        yield client
    finally:
        await client.close()
        await server.stop()


async def test_posted_calls_of_one_iteration_travel_in_one_batch() -> None:
    async with _connected(RpcServer(_echo, TOKEN, fast=_fast_echo)) as client:
        before = client.calls
        answers = _Answers()
        for i in range(10):  # fast (even) and task-served (odd) calls in one batch
            client.post("peer", "echo", i, 2, answers.reply(i))
        client.post("peer", "nope", None, 2, answers.reply("nope"))
        client.post("peer", "echo", "refuse", 2, answers.reply("refuse"))
        got = await answers.all()
        assert client.calls - before == 2  # one frame per method
        for i in range(10):
            expected = ["me", i, "fast"] if i % 2 == 0 else ["me", i]
            assert got[i] == (expected, None)
        for key, message in (("nope", "unknown method"), ("refuse", "refused on the fast")):
            result, exc = got[key]
            assert result is None and isinstance(exc, RemoteError)
            assert exc.remote_code == "invalid_request" and message in str(exc)
        # the next iteration's posts make a new batch
        more = _Answers()
        client.post("peer", "echo", 20, 2, more.reply(20))
        assert (await more.all())[20] == (["me", 20, "fast"], None)
        assert client.calls - before == 3


async def test_large_batches_split_and_bad_arguments_fail_their_own_post() -> None:
    async with _connected() as client:
        before = client.calls
        answers = _Answers()
        big = {i: bytes([i]) * (BATCH_BYTES * 2 // 5) for i in range(5)}
        for i, value in big.items():
            client.post("peer", "echo", value, 5, answers.reply(i))
        refused: list[Any] = []
        with pytest.raises(TypeError):
            client.post("peer", "echo", object(), 5, lambda *outcome: refused.append(outcome))
        got = await answers.all()
        assert got == {i: (["me", value], None) for i, value in big.items()}
        # 2/5 of the cap each: frames of 2, 2 and 1 calls, none near MAX_FRAME
        assert client.calls - before == 3
        assert refused == []  # a refused post is never answered


async def test_a_batch_fails_every_call_at_its_deadline_or_when_the_connection_drops() -> None:
    server = RpcServer(_echo, TOKEN)
    loop = asyncio.get_running_loop()
    async with _connected(server) as client:
        answers = _Answers()
        t0 = loop.time()
        client.post("peer", "slow", 1, 0.2, answers.reply(1))
        client.post("peer", "slow", 2, 0.3, answers.reply(2))  # the batch's deadline
        got = await answers.all()
        assert loop.time() - t0 >= 0.29
        for key in (1, 2):
            result, exc = got[key]
            assert result is None and isinstance(exc, PeerError)
            assert "slow timed out after 0.3" in str(exc)

        # the silent connection was dropped at that timeout: connect again, then lose it
        # with a batch in flight
        await client.call("peer", "echo", 0, 2)
        lost = _Answers()
        client.post("peer", "slow", 3, 5, lost.reply(3))
        await asyncio.sleep(0)  # the batch leaves when this iteration's output flushes
        assert len(client._deadlines) >= 1 and not lost.got
        for conn in list(server.connections):
            conn.close()
        result, exc = (await lost.all())[3]
        assert result is None and isinstance(exc, PeerError) and "connection lost" in str(exc)


async def test_an_older_server_gets_posted_calls_one_frame_each() -> None:
    """A server that predates batches (its hello answer names no features) is sent
    every posted call in a frame of its own: a rolling upgrade keeps replicating."""
    server = RpcServer(_echo, TOKEN, features=[])
    port = free_port()
    await server.start("127.0.0.1", port)
    client = TcpTransport("me", lambda _n: ("127.0.0.1", port), token=TOKEN)
    try:
        answers = _Answers()
        client.post("peer", "echo", "first", 2, answers.reply("first"))  # connects
        assert (await answers.all())["first"] == (["me", "first"], None)
        before = client.calls
        answers = _Answers()
        for i in range(5):
            client.post("peer", "echo", i, 2, answers.reply(i))
        got = await answers.all()
        assert client.calls - before == 5
        assert got == {i: (["me", i], None) for i in range(5)}
    finally:
        await client.close()
        await server.stop()
