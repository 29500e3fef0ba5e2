"""PeerServer: the replica calls, the method registry, and the fast path; with the
LocalReplica under it (hints, stale senders) and hint delivery to a node that left."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dynamo_node.cluster.hint_delivery import HintDelivery
from dynamo_node.cluster.local_replica import LocalReplica
from dynamo_node.cluster.peer_server import PeerServer
from dynamo_node.core.codec import clock_to_wire, decode_object, encode_object
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import InvalidRequest, Unavailable
from dynamo_node.core.vclock import VClock
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.hints import HintStore
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import MemoryStorage, storage_key
from tests.node.cluster.test_view import OTHER, two, view_of


def parts(sync_writes: bool = False) -> tuple[PeerServer, LocalReplica]:
    storage = MemoryStorage()
    view = view_of(storage)
    view.set_state(two())
    view.heard_all()
    commit_log = GroupCommit(storage, "wal", 0.01)
    replica = Replica(storage, commit_log, "m0.1", NodeConfig(data_dir=""))
    local = LocalReplica(replica, HintStore(storage, commit_log), commit_log, storage, view, False)
    return PeerServer(view, local, sync_writes), local


def put_args(key: bytes, value: bytes, hint_for: str = "") -> list[Any]:
    return [key, clock_to_wire(VClock()), False, value, "text/plain", hint_for]


async def test_put_then_get_on_the_fast_path() -> None:
    peers, _ = parts()
    key = storage_key("k")
    done, stored = peers.serve_now("put", put_args(key, b"v"), "m1")
    assert done
    done, raw = peers.serve_now("get", [key], "m1")
    assert done and raw == stored
    assert [s.value for s in decode_object(raw).visible()] == [b"v"]


async def test_with_sync_writes_only_reads_take_the_fast_path() -> None:
    peers, _ = parts(sync_writes=True)
    key = storage_key("k")
    assert peers.serve_now("put", put_args(key, b"v"), "m1") == (False, None)
    assert peers.serve_now("get", [key], "m1") == (True, None)


async def test_a_put_for_another_node_is_kept_as_a_hint() -> None:
    peers, local = parts()
    key = storage_key("k")
    await peers.handle("put", put_args(key, b"v", hint_for="m1"), "m1")
    assert local.replica.read(key).empty
    assert local.hints.pending == 1
    assert [s.value for s in local.read(key).visible()] == [b"v"]  # reads see hints


async def test_registered_methods_are_dispatched_and_unknown_ones_refused() -> None:
    peers, _ = parts()

    async def echo(args: Any, caller: str) -> Any:
        return [args, caller]

    peers.register("echo", echo)
    assert await peers.handle("echo", 1, "m1") == [1, "m1"]
    with pytest.raises(ValueError, match="twice"):
        peers.register("echo", echo)
    with pytest.raises(ValueError, match="twice"):
        peers.register("get", echo)
    with pytest.raises(InvalidRequest, match="unknown internal method"):
        await peers.handle("nope", None, "m1")
    assert await peers.handle("ping", None, "m1") == ["m0", peers.view.require_state().version]


async def test_bad_keys_and_values_are_refused() -> None:
    peers, _ = parts()
    with pytest.raises(InvalidRequest, match="bad storage key"):
        await peers.handle("get", [b"short"], "m1")
    with pytest.raises(InvalidRequest, match="value must be bytes"):
        await peers.handle("put", put_args(storage_key("k"), "text"), "m1")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="bad object"):
        await peers.handle("merge", [storage_key("k"), b"\x00junk"], "m1")


async def test_a_replacement_answers_no_read() -> None:
    peers, _ = parts()
    peers.view.replacing = True
    with pytest.raises(Unavailable, match="refilled"):
        await peers.handle("get", [storage_key("k")], "m1")


async def test_merge_many_counts_the_keys_it_received() -> None:
    peers, local = parts()
    counted: list[int] = []
    peers.on_bulk = counted.append
    new = local.replica.new_version(local.replica.read(storage_key("a")), VClock(), b"v", "", [])
    batch = [[storage_key(k), encode_object(new)] for k in ("a", "b")] + [[storage_key("c"), b"x"]]
    assert await peers.handle("merge_many", batch, "m1") == 2  # the undecodable one is skipped
    assert counted == [3]


class NoTransport:
    async def call(self, *args: Any) -> Any:
        raise AssertionError("nothing is sent to a node that left")


async def test_a_hint_for_a_node_that_left_goes_to_the_keys_replicas() -> None:
    _, local = parts()
    view = local.view
    key = storage_key("k")
    local.put(key, VClock(), b"v", "", "m1")
    view.set_state(view.require_state().with_member(replace(OTHER, status="left")))
    transport: Any = NoTransport()
    delivery = HintDelivery(view, local.hints, local.replica, transport, NodeConfig(data_dir=""))
    assert delivery.deliverable("m1")
    done = await local.hints.deliver_once(delivery.deliver, delivery.deliverable)
    assert done == 1 and local.hints.pending == 0
    assert [s.value for s in local.replica.read(key).visible()] == [b"v"]
