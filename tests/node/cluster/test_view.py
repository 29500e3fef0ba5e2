"""ClusterView: the state set, persisted and announced in one place; liveness; who
serves; a fresh directory the ring lists becomes a replacement."""

from __future__ import annotations

from dataclasses import replace

from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.liveness import FailureDetector
from dynamo_node.core.membership import ClusterState, Member, commit, plan
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.identity import META_STATE
from dynamo_node.store.storage import Family, MemoryStorage, storage_key

ME = Member("m0", "h:1", "h:2", "joining")
OTHER = Member("m1", "o:1", "o:2", "joining")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view_of(
    storage: MemoryStorage, fresh: bool = False, clock: Clock | None = None, me: Member = ME
) -> ClusterView:
    commit_log = GroupCommit(storage, "wal", 0.01)
    return ClusterView(
        me, storage, commit_log, FailureDetector(me.node, 5.0), clock or Clock(), fresh, "c"
    )


def two() -> ClusterState:
    """m0 and m1, both owning partitions (N=2)."""
    state = ClusterState.founding("c", ME, 8, 2).with_member(OTHER)
    state = commit(state, plan(state, ["m1"], []), "m0")
    for t in state.pending_transfers():
        state = state.with_done(t.partition, t.target)
    return state.settle()


def test_a_state_set_is_persisted_and_loaded_by_the_next_start() -> None:
    storage = MemoryStorage()
    view = view_of(storage)
    assert view.state is None
    view.set_state(two())
    assert view_of(storage).state == view.state
    assert view.require_state() is view.state


def test_subscribers_hear_each_new_state_once() -> None:
    view = view_of(MemoryStorage())
    heard: list[ClusterState] = []
    view.subscribe(heard.append)
    state = two()
    view.set_state(state)
    view.set_state(state)  # the same state again: nothing new
    assert heard == [view.state]


def test_this_nodes_new_addresses_are_announced_in_the_state() -> None:
    view = view_of(MemoryStorage())
    stale = two().with_member(replace(ME, address="old:1", peer="old:2"))
    view.set_state(stale)
    mine = view.require_state().members["m0"]
    assert (mine.address, mine.peer) == ("h:1", "h:2")


def test_an_unreadable_saved_state_waits_for_gossip() -> None:
    storage = MemoryStorage()
    storage.write([(Family.META, META_STATE, b"\xc1 not msgpack")])
    assert view_of(storage).state is None


def test_a_fresh_directory_listed_in_the_ring_is_a_replacement_until_refilled() -> None:
    storage = MemoryStorage()
    view = view_of(storage, fresh=True)
    view.set_state(two())
    assert view.replacing and view.require_state().members["m0"].replacing
    view.partition_refilled(3)
    assert view_of(storage).refill_done == {3}  # progress survives a restart
    view.finish_replacing()
    assert not view.replacing and not view.require_state().members["m0"].replacing
    assert not view_of(storage).replacing


def test_a_founding_node_is_never_a_replacement() -> None:
    view = view_of(MemoryStorage(), fresh=True)
    view.found(ClusterState.founding("c", ME, 8, 2))
    assert not view.replacing


def test_serving_means_up_and_not_refilling_and_own_storage_writable() -> None:
    clock = Clock()
    storage = MemoryStorage()
    view = view_of(storage, clock=clock)
    view.set_state(two())
    assert view.serving("m0") and not view.serving("m1")  # never heard of m1 yet
    view.heard_all()
    assert view.serving("m1")
    clock.now += 6.0  # past failure_timeout_s
    assert not view.serving("m1") and view.member_state(OTHER) == "down"
    view.report_alive("m1")
    assert view.serving("m1")
    view.report_unreachable("m1")
    assert not view.is_up("m1")
    view.report_alive("m1")
    view.set_state(view.require_state().with_member(replace(OTHER, replacing=True)))
    assert view.is_up("m1") and not view.serving("m1")
    storage.failed = OSError("disk full")
    assert not view.serving("m0")


def test_placement_and_replicas_of_a_key() -> None:
    view = view_of(MemoryStorage())
    view.set_state(two())
    view.heard_all()
    key = storage_key("k")
    assert sorted(view.replicates(key)) == ["m0", "m1"]
    assert view.replicates_here(key)
    placed = view.placement(int.from_bytes(key[:8]))
    assert sorted(t for t, _ in placed.targets) == ["m0", "m1"]
    assert view.replicas_per_key() == 2


def test_gone_and_foreign_gossip() -> None:
    view = view_of(MemoryStorage())
    view.set_state(two().with_member(replace(OTHER, status="left")))
    assert view.gone("m1") and not view.gone("m0")
    view.refuse_foreign("x")
    view.refuse_foreign("x")
    assert (view.foreign_gossip, view.foreign_cluster) == (2, "x")
