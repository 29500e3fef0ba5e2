"""Placement: the sloppy-quorum targets of a key, a pure function of the state and of
which nodes serve."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dynamo_node.core.membership import ClusterState, Member, commit, plan
from dynamo_node.core.placement import Lists, Placements, lists, place
from dynamo_node.core.ring import Ring
from tests.node.core.test_ring import examples, rings


def ring(count: int, n: int = 3, partitions: int = 8) -> ClusterState:
    members = [Member(f"m{i}", f"h:{i}", f"h:{i + 100}", "joining") for i in range(count)]
    state = ClusterState.founding("t", members[0], partitions, n)
    for m in members[1:]:
        state = state.with_member(m)
    state = commit(state, plan(state, [m.node for m in members[1:]], []), "m0")
    for t in state.pending_transfers():
        state = state.with_done(t.partition, t.target)
    return state.settle()


def test_all_serving_targets_are_the_preference_list() -> None:
    of = Lists(("a", "b", "c"), ("d", "e"), ())
    placed = place(of, lambda _node: True)
    assert placed.n == 3
    assert placed.targets == (("a", None), ("b", None), ("c", None))
    assert placed.fallbacks == ("d", "e") and placed.unplaced == ()


def test_a_down_replica_is_stood_in_for_by_the_next_serving_node_of_the_walk() -> None:
    of = Lists(("a", "b", "c"), ("d", "e", "f"), ("g",))
    placed = place(of, lambda node: node not in {"b", "d"})
    assert placed.targets == (("a", None), ("e", "b"), ("c", None))
    assert placed.fallbacks == ("f",)  # d is down, e is used
    assert placed.pending == ("g",)


def test_a_replica_no_node_can_stand_in_for_is_unplaced() -> None:
    of = Lists(("a", "b", "c"), ("d",), ())
    placed = place(of, lambda node: node in {"a"})
    assert placed.targets == (("a", None),)
    assert placed.unplaced == ("b", "c")


def test_lists_follow_the_state() -> None:
    state = ring(5)
    for p in range(state.partitions):
        of = lists(state, p)
        assert list(of.primaries) == state.preference_list(p)
        assert len(set(of.primaries)) == 3
        assert set(of.rest).isdisjoint(of.primaries)
        assert set(of.primaries) | set(of.rest) == set(state.ring_nodes())


def test_the_cache_is_per_state() -> None:
    small, big = ring(3), ring(5)
    cache = Placements()
    first = cache.of(small, 1)
    assert cache.of(small, 1) is first
    assert cache.of(big, 1) == lists(big, 1)
    assert cache.of(small, 1) == first and cache.of(small, 1) is not first


def ring_targets(ring: Ring, p: int, n: int, up: set[str]) -> list[tuple[str, str | None]]:
    """`place` on one ring, with `up` as the serving nodes."""
    primaries = tuple(ring.preference_list(p, n))
    rest = tuple(node for node in ring.walk(p) if node not in primaries)
    return list(place(Lists(primaries, rest, ()), up.__contains__).targets)


def test_targets_on_a_ring_example() -> None:
    ring = Ring(1, ("a", "b", "c", "d", "e", "a", "b", "c"))
    assert ring_targets(ring, 0, 3, {"a", "b", "c", "d", "e"}) == [
        ("a", None),
        ("b", None),
        ("c", None),
    ]
    assert ring_targets(ring, 0, 3, {"a", "c", "d", "e"}) == [
        ("a", None),
        ("d", "b"),
        ("c", None),
    ]
    assert ring_targets(ring, 0, 3, {"c", "e"}) == [("e", "a"), ("c", None)]
    assert ring_targets(ring, 0, 3, set()) == []


@given(rings(max_nodes=10), st.data())
@examples(150)
def test_targets_on_a_ring(ring: Ring, data: st.DataObject) -> None:
    p = data.draw(st.integers(0, ring.partitions - 1))
    n = data.draw(st.integers(1, 5))
    nodes = list(ring.nodes())
    down = set(data.draw(st.lists(st.sampled_from(nodes), unique=True)))
    up = set(nodes) - down
    primaries = ring.preference_list(p, n)
    targets = ring_targets(ring, p, n, up)

    chosen = [node for node, _ in targets]
    hints = [hint for _, hint in targets if hint is not None]
    assert len(targets) <= n
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= up
    assert set(hints) <= down & set(primaries)
    assert len(set(hints)) == len(hints)
    for node, hint in targets:
        assert (hint is None) == (node in primaries)
    assert [node for node, hint in targets if hint is None] == [q for q in primaries if q in up]
    # fallbacks are the first up nodes after the primaries in the walk
    spare = [node for node in ring.walk(p)[len(primaries) :] if node in up]
    down_primaries = [q for q in primaries if q in down]
    assert [node for node, hint in targets if hint] == spare[: len(down_primaries)]
    assert hints == down_primaries[: len(hints)]
    assert len(targets) == len(primaries) - len(down_primaries) + min(
        len(down_primaries), len(spare)
    )
