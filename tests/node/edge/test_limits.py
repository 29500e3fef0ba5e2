"""Write limits and request checks on in-process nodes (the in-memory transport): the
sibling and object-size limits of client writes (never of replication), the context
bound to its key, strict query parameters, `maybe_applied` on a failed write, and the
effective N/R/W of a cluster smaller than N."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from dynamo_node.core.context import ContextCodec
from dynamo_node.core.errors import (
    DynamoError,
    InvalidContext,
    InvalidParameter,
    ObjectTooLarge,
    QuorumNotMet,
    TooManySiblings,
)
from dynamo_node.core.vclock import Dot, VClock
from dynamo_node.core.versions import Object, Sibling
from dynamo_node.edge.kvapi import KvApi
from dynamo_node.net.transport import Handler, RemoteError
from dynamo_node.node import Node
from dynamo_node.store.storage import MemoryStorage, storage_key
from tests.node.cluster.test_coordinator import Net, make_cluster

pytestmark = pytest.mark.timeout(60)

MAX = 5
WARN = 2


@pytest.fixture
async def small() -> AsyncIterator[tuple[Net, list[Node]]]:
    net, nodes = await make_cluster(3, siblings_max=MAX, siblings_warn=WARN, object_max_bytes=4096)
    yield net, nodes
    for node in nodes:
        await node.stop()


async def blind(node: Node, key: bytes, value: bytes = b"v") -> Object:
    return await node.coordinator.put(key, VClock(), value, "", 3, 1000)


def stored(nodes: list[Node], key: bytes) -> list[int]:
    return [len(n.replica.read(key).siblings) for n in nodes]


# --- siblings ---------------------------------------------------------------------------
async def test_a_blind_write_past_siblings_max_is_refused_and_stored_nowhere(
    small: tuple[Net, list[Node]],
) -> None:
    _, nodes = small
    key = storage_key("hot")
    for i in range(MAX):
        await blind(nodes[i % 3], key, b"%d" % i)
    assert stored(nodes, key) == [MAX] * 3
    for node in nodes:
        with pytest.raises(TooManySiblings) as caught:
            await blind(node, key, b"one too many")
        assert caught.value.code == "too_many_siblings" and caught.value.status == 409
        assert "read the key" in caught.value.message and "context" in caught.value.message
    assert stored(nodes, key) == [MAX] * 3
    assert all(n.hints.pending == 0 for n in nodes)
    assert sum(n.replica.stats.siblings_refused for n in nodes) == 3
    assert sum(n.replica.stats.siblings_warned for n in nodes) == MAX - WARN
    # a write with the context of a read resolves them, and is accepted
    obj = await nodes[0].coordinator.get(key, 3, 1000)
    resolved = await nodes[1].coordinator.put(key, obj.context(), b"merged", "", 3, 1000)
    assert [s.value for s in resolved.siblings] == [b"merged"]
    assert stored(nodes, key) == [1, 1, 1]


async def test_a_write_that_resolves_some_siblings_is_accepted_at_the_limit(
    small: tuple[Net, list[Node]],
) -> None:
    _, nodes = small
    key = storage_key("partial")
    first = await blind(nodes[0], key)
    for _ in range(MAX - 1):
        await blind(nodes[0], key)
    # the context of the first version only: it replaces one sibling, adds one
    obj = await nodes[0].coordinator.put(key, first.context(), b"r", "", 3, 1000)
    assert len(obj.siblings) == MAX


async def test_a_forwarded_write_is_refused_with_the_replicas_reason() -> None:
    """A coordinator outside the key's preference list forwards the put to a replica:
    the replica's refusal is the answer (not a failed replica to try the next one on)."""
    net, nodes = await make_cluster(4, siblings_max=MAX, siblings_warn=WARN)
    for node_id, handler in list(net.registry.items()):  # errors as TcpTransport has them
        net.registry[node_id] = as_remote(handler)
    try:
        key = next(
            k
            for k in (storage_key(f"key-{i}") for i in range(1000))
            if "m3" not in [t for t, _ in nodes[3].view.placement(int.from_bytes(k[:8])).targets]
        )
        for _ in range(MAX):
            await blind(nodes[3], key)
        with pytest.raises(TooManySiblings) as caught:
            await blind(nodes[3], key)
        assert not caught.value.message.startswith("too_many_siblings")
        assert "limit is 5" in caught.value.message
        assert max(stored(nodes, key)) == MAX
    finally:
        for node in nodes:
            await node.stop()


def as_remote(handler: Handler) -> Handler:
    """A peer's handler whose errors arrive as over TCP: a RemoteError(code, message)."""

    async def wrapped(method: str, args: Any, caller: str) -> Any:
        try:
            return await handler(method, args, caller)
        except DynamoError as exc:
            raise RemoteError(exc.code, exc.message) from None

    return wrapped


async def test_replication_and_hints_are_never_refused(small: tuple[Net, list[Node]]) -> None:
    """What a coordinator accepted is merged whatever its number of siblings (concurrent
    coordinators can take a key past the limit together)."""
    _, nodes = small
    key = storage_key("merged")
    many = Object.of(Sibling(Dot(f"actor-{i}", 1), VClock(), b"x", "", i) for i in range(3 * MAX))
    nodes[0].local.merge(key, many, None)  # replication
    assert stored(nodes, key)[0] == 3 * MAX
    nodes[1].local.merge(key, many, "m2")  # a hint held for m2
    assert nodes[1].hints.pending == 1
    await nodes[1].hints.deliver_once(nodes[1].hint_delivery.deliver, lambda _n: True)
    assert stored(nodes, key)[2] == 3 * MAX
    assert sum(n.replica.stats.siblings_refused for n in nodes) == 0


async def test_a_write_coordinated_on_a_fallback_is_refused_too(
    small: tuple[Net, list[Node]],
) -> None:
    """The hint path (this node stands in for a down replica) is a client write too."""
    _, nodes = small
    key = storage_key("fallback")
    for _ in range(MAX):
        nodes[0].local.put(key, VClock(), b"v", "", "m2")
    assert len(nodes[0].hints.read(key, "m2").siblings) == MAX
    with pytest.raises(TooManySiblings):
        nodes[0].local.put(key, VClock(), b"v", "", "m2")
    assert len(nodes[0].hints.read(key, "m2").siblings) == MAX


async def test_an_object_past_object_max_bytes_is_refused(small: tuple[Net, list[Node]]) -> None:
    _, nodes = small
    key = storage_key("big")
    await blind(nodes[0], key, b"a" * 1500)
    await blind(nodes[0], key, b"b" * 1500)
    with pytest.raises(ObjectTooLarge) as caught:
        await blind(nodes[0], key, b"c" * 1500)
    assert caught.value.code == "object_too_large" and caught.value.status == 413
    assert stored(nodes, key) == [2, 2, 2]
    # resolving the siblings with one large value is fine
    obj = await nodes[0].coordinator.get(key, 3, 1000)
    await nodes[0].coordinator.put(key, obj.context(), b"c" * 3000, "", 3, 1000)
    assert stored(nodes, key) == [1, 1, 1]


# --- maybe_applied ----------------------------------------------------------------------
async def test_a_failed_write_that_reached_a_replica_says_maybe_applied() -> None:
    net, nodes = await make_cluster(3)
    try:
        net.down.add("m2")
        with pytest.raises(QuorumNotMet) as caught:
            await nodes[0].coordinator.put(storage_key("k"), VClock(), b"v", "", 3, 500)
        assert caught.value.maybe_applied
        assert "may have been applied on some replicas" in caught.value.message
        # a read's quorum failure does not say it
        with pytest.raises(QuorumNotMet) as read:
            await nodes[0].coordinator.get(storage_key("k"), 3, 500)
        assert not read.value.maybe_applied
        assert "may have been applied" not in read.value.message
    finally:
        for node in nodes:
            await node.stop()


async def test_a_write_no_replica_could_take_is_not_maybe_applied() -> None:
    net, nodes = await make_cluster(3)
    try:
        for node in ("m1", "m2"):
            nodes[0].view.detector.unreachable(node)
        storage = nodes[0].storage
        assert isinstance(storage, MemoryStorage)
        storage.failed = OSError("disk full")  # this node's own replica does not serve
        with pytest.raises(QuorumNotMet) as caught:
            await nodes[0].coordinator.put(storage_key("k"), VClock(), b"v", "", None, 500)
        assert not caught.value.maybe_applied
        assert "may have been applied" not in caught.value.message
        storage.failed = None
    finally:
        for node in nodes:
            await node.stop()


# --- the kv API: contexts bound to their key, strict query parameters --------------------
async def test_a_context_of_another_key_is_refused(small: tuple[Net, list[Node]]) -> None:
    _, nodes = small
    api = KvApi(nodes[0], ContextCodec("secret"))
    assert (await api.write("/v1/kv/victim", "", None, "text/plain", b"precious")).status == 204
    other = await api.write("/v1/kv/other", "", None, "text/plain", b"x")
    foreign = other.headers["X-Dynamo-Context"]
    with pytest.raises(InvalidContext, match="issued for another key"):
        await api.write("/v1/kv/victim", "", foreign, "text/plain", b"oops")
    with pytest.raises(InvalidContext, match="issued for another key"):
        await api.write("/v1/kv/victim", "", foreign, None, None)  # a DELETE
    reply = await api.get("/v1/kv/victim", "")
    assert (reply.status, reply.body) == (200, b"precious")
    # its own context still works
    own = reply.headers["X-Dynamo-Context"]
    assert (await api.write("/v1/kv/victim", "", own, "text/plain", b"new")).status == 204
    assert (await api.get("/v1/kv/victim", "")).body == b"new"


async def test_unknown_query_parameters_are_refused(small: tuple[Net, list[Node]]) -> None:
    _, nodes = small
    api = KvApi(nodes[0], ContextCodec())
    for query in ("W=all", "r=1", "w=1&w=2", "x=1"):
        with pytest.raises(InvalidParameter):
            await api.write("/v1/kv/k", query, None, None, b"v")
    for query in ("w=1", "R=1", "r=1&r=2"):
        with pytest.raises(InvalidParameter):
            await api.get("/v1/kv/k", query)
    with pytest.raises(InvalidParameter):
        await api.get("/v1/kv/k", "timeout_ms=abc")
    assert nodes[0].replica.read(storage_key("k")).empty  # nothing was written
    assert (await api.write("/v1/kv/k", "w=all&timeout_ms=900", None, None, b"v")).status == 204
    assert (await api.get("/v1/kv/k", "r=all")).status == 200


# --- the effective N/R/W ----------------------------------------------------------------
@pytest.mark.parametrize(("members", "effective"), [(1, (1, 1, 1)), (2, (2, 2, 2)), (3, (3, 2, 2))])
async def test_status_shows_the_effective_replication(
    members: int, effective: tuple[int, int, int]
) -> None:
    _, nodes = await make_cluster(members)
    try:
        status = nodes[0].status()
        assert (status["n"], status["r"], status["w"]) == (3, 2, 2)  # as configured
        e = status["effective"]
        assert (e["n"], e["r"], e["w"]) == effective
        # what the coordinator really uses
        placement = nodes[0].view.placement(0)
        assert placement.n == e["n"]
    finally:
        for node in nodes:
            await node.stop()


async def test_warnings_are_logged_once_per_key_per_interval(
    small: tuple[Net, list[Node]], caplog: pytest.LogCaptureFixture
) -> None:
    _, nodes = small
    key = storage_key("noisy")
    with caplog.at_level("WARNING", logger="dynamo.replica"):
        for _ in range(MAX):
            await blind(nodes[0], key)
    logged = [r for r in caplog.records if "siblings" in r.getMessage()]
    assert len(logged) == 1  # MAX - WARN writes past the warning, one line
    assert nodes[0].replica.stats.siblings_warned == MAX - WARN
