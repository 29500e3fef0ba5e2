"""ClusterState: founding, members, plans and commits, transfers, merge algebra, wire."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_node.core.membership import (
    ClusterState,
    Member,
    PlanError,
    Transfer,
    commit,
    members_in,
    plan,
    plan_transfers,
)
from dynamo_node.core.ring import Ring

Q = 16
N = 3

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def member(node: str) -> Member:
    i = ord(node[-1])
    return Member(node, f"127.0.0.1:{7000 + i}", f"127.0.0.1:{17000 + i}")


def founded(*others: str, q: int = Q, n: int = N) -> ClusterState:
    """Cluster "c1" founded by node a, with `others` known (joining)."""
    state = ClusterState.founding("c1", member("a"), q, n)
    for node in others:
        state = state.with_member(member(node))
    return state


def finish(state: ClusterState) -> ClusterState:
    """Complete every pending transfer, one at a time, as the nodes would."""
    while state.next is not None:
        t = state.pending_transfers()[0]
        state = state.with_done(t.partition, t.target).settle()
    return state


def joined(*nodes: str) -> ClusterState:
    """A settled cluster of a + nodes."""
    state = founded(*nodes)
    state = commit(state, plan(state, list(nodes), []), "a")
    return finish(state)


# --- founding and members --------------------------------------------------------------


def test_founding() -> None:
    state = ClusterState.founding("c1", member("a"), Q, N)
    assert state.cluster == "c1" and state.n == N and state.partitions == Q
    assert state.members["a"].status == "valid" and state.members["a"].gen == 1
    assert state.ring.owners == ("a",) * Q
    assert state.ring.version == state.version == 1
    assert state.next is None and not state.in_transition()
    assert state.preference_list(0) == ["a"]  # fewer nodes than N
    assert state.owned_by("a") == list(range(Q))
    assert state.replicas_of("a") == list(range(Q))
    assert state.transfers() == [] and state.pending_transfers() == []
    assert state.ring_nodes() == ["a"]


def test_with_member_generations() -> None:
    state = founded()
    b = member("b")
    s1 = state.with_member(b)
    assert s1.members["b"].gen == 1 and s1.members["b"].status == "joining"
    s2 = s1.with_member(replace(b, address="10.0.0.2:7070"))
    assert s2.members["b"].gen == 2 and s2.members["b"].address == "10.0.0.2:7070"
    # the generation always grows by one, whatever the record claims
    s3 = s2.with_member(replace(b, gen=100))
    assert s3.members["b"].gen == 3
    s4 = s3.with_member(replace(b, gen=0))
    assert s4.members["b"].gen == 4
    # a new record keeps its own generation if it has one
    assert state.with_member(replace(member("c"), gen=7)).members["c"].gen == 7
    assert state.with_member(replace(member("a"), address="x:1")).members["a"].gen == 2
    # states are immutable values
    assert "b" not in state.members and s1.members["b"].gen == 1
    # a member change alone is not a ring change
    assert s4.version == state.version


def test_members_in() -> None:
    state = joined("b", "c")
    state = state.with_member(member("d"))
    assert [m.node for m in members_in(state, ["valid"])] == ["a", "b", "c"]
    assert [m.node for m in members_in(state, ["joining", "valid"])] == ["a", "b", "c", "d"]


# --- plans and commits -------------------------------------------------------------------


def test_plan_and_commit_a_join() -> None:
    state = founded("b", "c")
    staged = plan(state, ["b", "c"], [])
    assert staged.joins == ("b", "c") and staged.leaves == ()
    assert set(staged.ring.nodes()) == {"a", "b", "c"}
    counts = [len(staged.ring.owned_by(x)) for x in "abc"]
    assert max(counts) - min(counts) <= 1
    assert list(staged.transfers) == plan_transfers(state.ring, staged.ring, N)
    d = staged.to_dict()
    assert d["joins"] == ["b", "c"] and sum(d["ownership"].values()) == Q

    new = commit(state, staged, "a")
    assert new.members["b"].status == "valid" and new.members["c"].status == "valid"
    assert new.members["b"].gen == state.members["b"].gen + 1
    assert new.next is not None and new.next.owners == staged.ring.owners
    assert new.epoch == state.epoch + 1 and new.claimant == "a"
    assert new.version == state.version + 1
    assert new.in_transition()
    assert new.transfers() == list(staged.transfers)
    # nothing switched yet: the old ring still serves every partition
    for p in range(Q):
        assert new.preference_list(p) == ["a"]
        assert not new.switched(p)
    with pytest.raises(PlanError):
        plan(new, [], ["b"])


def test_plan_and_commit_a_leave() -> None:
    state = joined("b", "c", "d")
    assert set(state.ring.nodes()) == {"a", "b", "c", "d"}
    staged = plan(state, [], ["d"])
    assert "d" not in staged.ring.nodes()
    new = commit(state, staged, "b")
    assert new.members["d"].status == "leaving"
    assert new.claimant == "b"
    assert all(t.target != "d" for t in new.transfers())
    done = finish(new)
    assert done.members["d"].status == "left"
    assert done.ring.nodes() == ("a", "b", "c")
    assert done.replicas_of("d") == [] and done.owned_by("d") == []
    # a node that left can be joined again
    again = commit(done, plan(done, ["d"], []), "a")
    assert again.members["d"].status == "valid"
    assert "d" in finish(again).ring.nodes()


def test_join_and_leave_in_one_plan() -> None:
    state = joined("b", "c").with_member(member("d"))
    new = commit(state, plan(state, ["d"], ["b"]), "c")
    assert new.members["d"].status == "valid" and new.members["b"].status == "leaving"
    final = finish(new)
    assert final.ring.nodes() == ("a", "c", "d")
    assert final.members["b"].status == "left"


def test_plan_errors() -> None:
    state = founded("b")
    with pytest.raises(PlanError):
        plan(state, ["zz"], [])  # unknown node
    with pytest.raises(PlanError):
        plan(state, [], ["b"])  # b is known but owns nothing
    with pytest.raises(PlanError):
        plan(state, [], ["zz"])
    with pytest.raises(PlanError):
        plan(state, [], ["a"])  # would remove every node
    new = commit(state, plan(state, ["b"], []), "a")
    assert new.in_transition()
    with pytest.raises(PlanError):
        plan(new, [], [])  # during a transition, even an empty plan
    with pytest.raises(PlanError):
        plan(new.with_member(member("c")), ["c"], [])
    # after the transition, planning works again
    assert plan(finish(new).with_member(member("c")), ["c"], []).joins == ("c",)
    assert issubclass(PlanError, ValueError)


def _check_transfers(old: Ring, new: Ring, n: int, transfers: list[Transfer]) -> None:
    for p in range(old.partitions):
        before, after = old.preference_list(p, n), new.preference_list(p, n)
        mine = [t for t in transfers if t.partition == p]
        # every node gaining p receives it exactly once, from a node that had it
        assert sorted(t.target for t in mine) == sorted(x for x in after if x not in before)
        for t in mine:
            assert t.source in before and t.target not in before
            assert t.source != t.target


@given(
    start=st.sets(st.sampled_from("abcdefg"), min_size=1, max_size=5),
    joins=st.sets(st.sampled_from("abcdefg"), max_size=3),
    leaves=st.sets(st.sampled_from("abcdefg"), max_size=3),
    q=st.sampled_from([4, 8, 16, 32]),
    n=st.integers(1, 4),
)
@SETTINGS
def test_transfers_implied_by_any_plan(
    start: set[str], joins: set[str], leaves: set[str], q: int, n: int
) -> None:
    others = sorted(start - {"a"})
    state = ClusterState.founding("c1", member("a"), q, n)
    for x in "bcdefg":
        state = state.with_member(member(x))
    if others:
        state = finish(commit(state, plan(state, others, []), "a"))
    joins_l = sorted(joins - set(state.ring.nodes()))
    leaves_l = sorted(leaves & set(state.ring.nodes()))
    if set(leaves_l) >= set(state.ring.nodes()) and not joins_l:
        with pytest.raises(PlanError):
            plan(state, joins_l, leaves_l)
        return
    staged = plan(state, joins_l, leaves_l)
    _check_transfers(state.ring, staged.ring, n, list(staged.transfers))
    new = commit(state, staged, "a")
    _check_transfers(state.ring, new.next or new.ring, n, new.transfers())
    final = finish(new)
    assert final.next is None and not final.in_transition()
    expected = (set(state.ring.nodes()) - set(leaves_l)) | set(joins_l)
    if len(expected) <= q:
        assert set(final.ring.nodes()) == expected
    else:  # more nodes than partitions: Q of them own one partition each
        assert set(final.ring.nodes()) <= expected and len(final.ring.nodes()) == q
    for x in leaves_l:
        if x not in joins_l:
            assert final.members[x].status == "left"


def test_partition_switches_only_when_all_its_transfers_are_done() -> None:
    state = joined("b")  # two nodes, N=3: every node replicates everything
    state = state.with_member(member("c")).with_member(member("d"))
    new = commit(state, plan(state, ["c", "d"], []), "a")
    old_ring, next_ring = new.ring, new.next
    assert next_ring is not None
    by_partition: dict[int, list[Transfer]] = {}
    for t in new.transfers():
        by_partition.setdefault(t.partition, []).append(t)
    assert any(len(ts) >= 2 for ts in by_partition.values())

    current = new
    for p in sorted(by_partition):
        ts = by_partition[p]
        for i, t in enumerate(ts):
            assert not current.switched(p)
            assert current.preference_list(p) == old_ring.preference_list(p, N)
            # until the switch, writes go to every gaining node (done or not)
            assert sorted(current.gaining(p)) == sorted(x.target for x in ts)
            assert current.pending_transfers()
            version = current.version
            current = current.with_done(p, t.target).settle()
            assert current.version == version + 1
            if i < len(ts) - 1:
                assert not current.switched(p)
        if current.next is None:
            break  # the last transfer settled the whole plan
        assert current.switched(p)
        assert current.preference_list(p) == next_ring.preference_list(p, N)
        assert current.owner(p) == next_ring.owner(p)
        assert current.gaining(p) == []
        # partitions whose transfers are not finished still use the old ring
        for other in by_partition:
            if other > p:
                assert current.preference_list(other) == old_ring.preference_list(other, N)
    assert current.next is None
    assert current.ring.owners == next_ring.owners


def test_partitions_without_transfers_switch_at_once() -> None:
    state = joined("b", "c", "d").with_member(member("e"))
    new = commit(state, plan(state, ["e"], []), "a")
    moved = {t.partition for t in new.transfers()}
    assert 0 < len(moved) < Q
    for p in range(Q):
        if p not in moved:
            assert new.switched(p)
            assert new.preference_list(p) == new.next.preference_list(p, N)  # type: ignore[union-attr]


def test_settle() -> None:
    state = joined("b", "c", "d")
    new = commit(state, plan(state, [], ["c"]), "a")
    assert new.settle() == new  # still transferring: nothing to settle
    all_done = new
    for t in new.transfers():
        all_done = replace(all_done, done=all_done.done | {(t.partition, t.target)})
    assert not all_done.in_transition() and all_done.next is not None
    settled = all_done.settle()
    assert settled.next is None and settled.done == frozenset()
    assert settled.ring.owners == new.next.owners  # type: ignore[union-attr]
    assert settled.ring.version == all_done.version  # the version does not go back
    assert settled.members["c"].status == "left"
    assert settled.members["a"] == new.members["a"]
    assert settled.settle() == settled  # idempotent
    assert settled.epoch == new.epoch and settled.claimant == new.claimant


def test_version_strictly_increases_through_commit_and_transfers() -> None:
    state = founded("b", "c", "d", "e")
    versions = [state.version]
    for joins, leaves in ((["b", "c"], []), (["d", "e"], []), ([], ["a", "c"]), (["a"], ["e"])):
        state = commit(state, plan(state, joins, leaves), "b")
        assert state.version > versions[-1]
        versions.append(state.version)
        while state.next is not None:
            t = state.pending_transfers()[0]
            state = state.with_done(t.partition, t.target)
            assert state.version == versions[-1] + 1
            state = state.settle()
            assert state.version == versions[-1] + 1
            versions.append(state.version)
    assert versions == sorted(set(versions))


def test_commit_without_moves_settles_immediately() -> None:
    # with n >= number of nodes every node replicates every partition: after joining b
    # into a 2-node ring nothing new is gained by adding nobody
    state = joined("b")
    staged = plan(state, [], [])
    new = commit(state, staged, "a")
    assert new.next is None or not new.in_transition()
    assert new.version > state.version


# --- merge ---------------------------------------------------------------------------------

NODES = ("a", "b", "c", "d")
SIM = ("a", "b", "c")  # the nodes that hold a state (and may commit plans)

op_strategy = st.tuples(
    st.sampled_from(["commit", "commit", "done", "done", "done", "merge", "merge"]),
    st.sampled_from(range(len(SIM))),
    st.sampled_from(range(len(SIM))),
    st.sets(st.sampled_from(NODES), max_size=2),
    st.sets(st.sampled_from(NODES), max_size=2),
    st.integers(0, 10_000),
)


def simulate(ops: list[tuple[str, int, int, set[str], set[str], int]]) -> list[ClusterState]:
    """Nodes a, b, c each hold a state grown from one founding state by committing plans
    (as claimant), completing transfers (with_done + settle, as a node does) and merging
    each other's states (gossip). Returns every state that occurred."""
    base = founded("b", "c", "d", q=8, n=2)
    states = [base] * len(SIM)
    seen = [base]
    for kind, i, j, joins, leaves, pick in ops:
        s = states[i]
        if kind == "commit":
            js = sorted(x for x in joins if x not in s.ring.nodes())
            ls = sorted(x for x in leaves if x in s.ring.nodes() and x not in js)
            try:
                staged = plan(s, js, ls)
            except PlanError:
                continue
            s = commit(s, staged, SIM[i])
        elif kind == "done":  # complete a few transfers, in some order
            if not s.pending_transfers():
                continue
            for k in range(1 + pick % 6):
                pending = s.pending_transfers()
                if not pending:
                    break
                t = pending[(pick + k * 7) % len(pending)]
                s = s.with_done(t.partition, t.target).settle()
        else:
            s = s.merge(states[j])
        states[i] = s
        seen.append(s)
    return seen


states_strategy = st.lists(op_strategy, min_size=10, max_size=40).map(simulate)


@given(states_strategy, st.data())
@SETTINGS
def test_merge_is_commutative_associative_idempotent(
    seen: list[ClusterState], data: st.DataObject
) -> None:
    x = data.draw(st.sampled_from(seen))
    y = data.draw(st.sampled_from(seen))
    z = data.draw(st.sampled_from(seen))
    assert x.merge(x) == x
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(y).merge(y) == x.merge(y)


@given(states_strategy)
@SETTINGS
def test_gossip_converges_on_one_state(seen: list[ClusterState]) -> None:
    """Folding every state in any order gives the same result, and it is an upper bound:
    merging any of them into it changes nothing."""
    forward = seen[0]
    for s in seen[1:]:
        forward = forward.merge(s)
    backward = seen[-1]
    for s in reversed(seen[:-1]):
        backward = backward.merge(s)
    assert forward == backward
    for s in seen:
        assert forward.merge(s) == forward
        assert forward.version >= 0


def test_merge_is_associative_when_a_leaving_node_changes_address() -> None:
    """A leaving node announces a new address (as ClusterView.set_state does after a pod got a
    new IP) while the partitions it hands off complete on two other nodes. Every order of
    merging these three states must give the same state."""
    state = joined("b", "c", "d", "e")
    new = commit(state, plan(state, [], ["c"]), "a")
    pending = new.pending_transfers()
    assert len(pending) >= 2
    x = y = new
    for t in pending[: len(pending) // 2]:
        x = x.with_done(t.partition, t.target).settle()
    for t in pending[len(pending) // 2 :]:
        y = y.with_done(t.partition, t.target).settle()
    z = new.with_member(replace(new.members["c"], address="10.9.9.9:7070"))
    left_first = x.merge(y).merge(z)
    right_first = x.merge(y.merge(z))
    assert left_first.members["c"] == right_first.members["c"]
    assert left_first == right_first


def test_merge_prefers_the_later_plan_and_unions_done() -> None:
    state = joined("b").with_member(member("c"))
    new = commit(state, plan(state, ["c"], []), "a")
    pending = new.pending_transfers()
    assert len(pending) >= 2
    left = new.with_done(pending[0].partition, pending[0].target)
    right = new.with_done(pending[1].partition, pending[1].target)
    merged = left.merge(right)
    assert merged.done == left.done | right.done
    assert merged.version == new.version + 2
    # the committed plan beats the state before it, whichever side it is on
    assert state.merge(new) == new.merge(state) == new
    # members: the higher generation wins
    moved = state.with_member(replace(state.members["b"], address="10.9.9.9:1"))
    assert moved.members["b"].gen > new.members["b"].gen
    for merged in (new.merge(moved), moved.merge(new)):
        assert merged.members["b"] == moved.members["b"]
        assert merged.next == new.next and merged.epoch == new.epoch


def test_merge_rejects_another_cluster() -> None:
    a = ClusterState.founding("c1", member("a"), Q, N)
    b = ClusterState.founding("c2", member("b"), Q, N)
    with pytest.raises(ValueError):
        a.merge(b)


# --- wire ----------------------------------------------------------------------------------


def _interesting_states() -> list[ClusterState]:
    state = founded("b", "c", "d")
    mid = commit(state, plan(state, ["b", "c"], []), "a")
    t = mid.pending_transfers()[0]
    part = mid.with_done(t.partition, t.target)
    final = finish(part)
    leaving = commit(final, plan(final, [], ["b"]), "c")
    return [state, mid, part, final, leaving, finish(leaving)]


@pytest.mark.parametrize("index", range(6))
def test_wire_round_trip(index: int) -> None:
    state = _interesting_states()[index]
    wire = state.to_wire()
    assert ClusterState.from_wire(wire) == state
    packed = msgpack.packb(wire, use_bin_type=True)
    back = ClusterState.from_wire(msgpack.unpackb(packed, raw=False))
    assert back == state
    assert back.version == state.version
    assert back.to_wire() == wire
    assert [back.preference_list(p) for p in range(Q)] == [
        state.preference_list(p) for p in range(Q)
    ]
    assert back.in_transition() == state.in_transition()


def _valid_wire() -> dict:  # type: ignore[type-arg]
    return _interesting_states()[2].to_wire()


GARBAGE = [
    None,
    [],
    "state",
    b"state",
    42,
    {},
    {"cluster": "c1"},
    {**_valid_wire(), "n": "three"},
    {**_valid_wire(), "n": None},
    {**_valid_wire(), "n": [3]},
    {**_valid_wire(), "n": math.nan},
    {**_valid_wire(), "n": math.inf},
    {**_valid_wire(), "epoch": -math.inf},
    {**_valid_wire(), "ring": "ring"},
    {**_valid_wire(), "ring": {"version": 1, "partitions": 3, "owners": ["a"] * 3}},
    {**_valid_wire(), "ring": {"version": 1, "partitions": 2, "owners": ["a"]}},
    {**_valid_wire(), "ring": None},
    {**_valid_wire(), "next": [1, 2]},
    {**_valid_wire(), "members": None},
    {**_valid_wire(), "members": 5},
    {**_valid_wire(), "members": [["a", "h:1", "h:2", "exploded", 1]]},
    {**_valid_wire(), "members": [["a", "h:1", "h:2", "valid"]]},
    {**_valid_wire(), "members": [["a", "h:1", "h:2", "valid", "one"]]},
    {**_valid_wire(), "members": [["a", "h:1", "h:2", "valid", math.inf]]},
    {**_valid_wire(), "members": [None]},
    {**_valid_wire(), "done": [[1]]},
    {**_valid_wire(), "done": [5]},
    {**_valid_wire(), "done": [["x", "a"]]},
    {**_valid_wire(), "done": [[math.inf, "a"]]},
    {**_valid_wire(), "done": None},
    {k: v for k, v in _valid_wire().items() if k != "claimant"},
    {k: v for k, v in _valid_wire().items() if k != "members"},
]


@pytest.mark.parametrize("raw", GARBAGE, ids=range(len(GARBAGE)))
def test_from_wire_rejects_garbage_with_value_error(raw: object) -> None:
    with pytest.raises(ValueError):
        ClusterState.from_wire(raw)
    # also after a trip through msgpack, as gossip delivers it
    with pytest.raises(ValueError):
        ClusterState.from_wire(msgpack.unpackb(msgpack.packb(raw, use_bin_type=True), raw=False))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(
    field=st.sampled_from(["cluster", "n", "ring", "next", "done", "epoch", "claimant", "members"]),
    value=msgpack_values,
)
@SETTINGS
def test_from_wire_on_a_corrupted_field_decodes_or_raises_value_error(
    field: str, value: object
) -> None:
    raw = {**_valid_wire(), field: value}
    with contextlib.suppress(ValueError):
        ClusterState.from_wire(raw)


@given(msgpack_values)
@SETTINGS
def test_from_wire_on_arbitrary_input_decodes_or_raises_value_error(value: object) -> None:
    with contextlib.suppress(ValueError):
        ClusterState.from_wire(value)


def test_the_replacing_flag_travels_only_when_set() -> None:
    plain = Member("a", "h:1", "h:2", "valid", 3)
    assert len(plain.to_wire()) == 5  # what nodes of the previous release read
    flagged = Member("a", "h:1", "h:2", "valid", 4, replacing=True)
    assert flagged.to_wire()[5] is True
    assert Member.from_wire(flagged.to_wire()) == flagged
    assert Member.from_wire(plain.to_wire()) == plain
    for bad in (["a", "h:1", "h:2", "valid", 4, 1], ["a", "h:1"], "a"):
        with pytest.raises(ValueError):
            Member.from_wire(bad)
    # the higher generation wins a merge, so the flag (and its clearing) spreads
    base = ClusterState.founding("c", plain, 8, 1)
    newer = base.with_member(replace(base.members["a"], replacing=True))
    assert base.merge(newer).members["a"].replacing
    cleared = newer.with_member(replace(newer.members["a"], replacing=False))
    assert not newer.merge(cleared).members["a"].replacing


# --- force-remove and replace (a member gone for good) ---------------------------------------


def test_force_remove_rebuilds_from_survivors_and_never_sources_the_dead_node() -> None:
    state = joined("b", "c", "d")
    staged = plan(state, [], [], removes=["d"])
    assert staged.removed == {"d"} and "d" not in staged.ring.nodes()
    assert staged.transfers, "d's partitions must move somewhere"
    for t in staged.transfers:
        assert t.source != "d"
        before = state.ring.preference_list(t.partition, N)
        assert t.rebuild == ("d" in before)
    assert staged.to_dict()["removes"] == ["d"]
    new = commit(state, staged, "a")
    assert new.removed == {"d"} and new.members["d"].status == "leaving"
    assert all(t.source != "d" for t in new.pending_transfers())
    done = finish(new)
    assert done.members["d"].status == "left" and done.removed == frozenset()
    assert "d" not in done.ring.nodes()
    # the rebuilt partitions' new replicas hold every partition d replicated
    for p in range(Q):
        assert "d" not in done.preference_list(p)


def test_replace_gives_the_new_node_exactly_the_old_nodes_partitions() -> None:
    state = joined("b", "c", "d")
    state = state.with_member(member("e"))
    staged = plan(state, [], [], replaces={"c": "e"})
    assert staged.removed == {"c"}
    assert staged.ring.owned_by("e") == state.ring.owned_by("c")
    for p in range(Q):
        before = state.ring.preference_list(p, N)
        assert staged.ring.preference_list(p, N) == [("e" if x == "c" else x) for x in before]
    assert {t.target for t in staged.transfers} == {"e"}
    assert all(t.rebuild and t.source != "c" for t in staged.transfers)
    assert len(staged.transfers) == len(state.replicas_of("c"))
    new = commit(state, staged, "a")
    assert new.members["e"].status == "valid" and new.members["c"].status == "leaving"
    done = finish(new)
    assert done.members["c"].status == "left" and "c" not in done.ring.nodes()
    assert done.ring.owned_by("e") == state.ring.owned_by("c")


def test_removed_survives_the_wire_and_merge_and_is_absent_when_empty() -> None:
    state = joined("b", "c", "d")
    plain = state.to_wire()
    assert "removed" not in plain  # what nodes of the previous release read
    new = commit(state, plan(state, [], [], removes=["b"]), "a")
    wire = msgpack.unpackb(msgpack.packb(new.to_wire()), raw=False)
    back = ClusterState.from_wire(wire)
    assert back == new and back.removed == {"b"}
    assert state.merge(new).removed == {"b"} and new.merge(state).removed == {"b"}
    with pytest.raises(ValueError):
        ClusterState.from_wire({**wire, "removed": "b"})


def test_remove_and_replace_plan_errors() -> None:
    state = joined("b", "c")
    state = state.with_member(member("e"))
    with pytest.raises(PlanError, match="owns nothing"):
        plan(state, [], [], removes=["e"])
    with pytest.raises(PlanError, match="only once"):
        plan(state, [], ["b"], removes=["b"])
    with pytest.raises(PlanError, match="already has a place"):
        plan(state, [], [], replaces={"b": "c"})
    with pytest.raises(PlanError, match="unknown node"):
        plan(state, [], [], replaces={"b": "zz"})
    # with N=3 on three nodes every partition lives on all three: two can go, not three
    plan(state, [], [], removes=["b", "c"])
    with pytest.raises(PlanError, match="every node"):
        plan(state, [], [], removes=["a", "b", "c"])
    # with N=1 each partition has one replica: removing its node loses it
    with pytest.raises(PlanError, match="lose every replica"):
        plan(replace(joined("b"), n=1), [], [], removes=["b"])
