"""Property tests for dynamo_node.core.vclock: the causality algebra (pure, no I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_node.core.vclock import Dot, VClock, join

ACTORS = ["a", "b", "c", "d", "e", "f"]

actors = st.sampled_from(ACTORS)
counters = st.integers(min_value=1, max_value=20)
timestamps = st.integers(min_value=0, max_value=10_000)


@st.composite
def vclocks(draw: st.DrawFn, *, max_size: int = len(ACTORS)) -> VClock:
    entries = draw(st.dictionaries(actors, st.tuples(counters, timestamps), max_size=max_size))
    return VClock(entries, pruned=draw(st.booleans()))


dots = st.builds(Dot, actors, counters)


def entries_of(clock: VClock) -> dict[str, tuple[int, int]]:
    return {a: (c, ts) for a, c, ts in clock.items()}


# --- construction and queries ------------------------------------------------------------


def test_empty_clock() -> None:
    clock = VClock()
    assert len(clock) == 0
    assert clock.counters() == {}
    assert clock.counter("a") == 0
    assert clock.timestamp("a") == 0
    assert not clock.pruned
    assert clock == VClock.of({})
    assert not clock.covers(Dot("a", 1))


def test_of_drops_non_positive_counters() -> None:
    clock = VClock.of({"a": 3, "b": 0, "c": -1}, timestamp_ms=7)
    assert clock.counters() == {"a": 3}
    assert clock.timestamp("a") == 7
    assert list(clock.actors()) == ["a"]


def test_equality_ignores_timestamps_and_pruned_flag() -> None:
    a = VClock({"x": (2, 10)})
    b = VClock({"x": (2, 99)}, pruned=True)
    assert a == b
    assert hash(a) == hash(b)
    assert a != VClock({"x": (3, 10)})
    assert a.__eq__(object()) is NotImplemented


def test_repr_mentions_entries_and_pruned() -> None:
    assert repr(VClock.of({"b": 2, "a": 1})) == "VClock({a:1, b:2})"
    assert "pruned" in repr(VClock({"a": (1, 0)}, pruned=True))


@given(vclocks(), dots)
def test_covers_is_counter_comparison(clock: VClock, dot: Dot) -> None:
    assert clock.covers(dot) == (clock.counter(dot.actor) >= dot.counter)


@given(vclocks(), vclocks())
def test_descends_is_pointwise_ge(a: VClock, b: VClock) -> None:
    expected = all(a.counter(x) >= b.counter(x) for x in ACTORS)
    assert a.descends(b) == expected
    assert a.concurrent(b) == (not a.descends(b) and not b.descends(a))
    assert a.concurrent(b) == b.concurrent(a)


@given(vclocks())
def test_descends_reflexive_and_empty(a: VClock) -> None:
    assert a.descends(a)
    assert a.descends(VClock())
    assert not a.concurrent(a)
    assert VClock().descends(a) == (len(a) == 0)


@given(vclocks(), vclocks())
def test_equal_iff_mutual_descent(a: VClock, b: VClock) -> None:
    assert (a == b) == (a.descends(b) and b.descends(a))


@given(vclocks(), vclocks(), vclocks())
def test_descends_transitive(a: VClock, b: VClock, c: VClock) -> None:
    if a.descends(b) and b.descends(c):
        assert a.descends(c)


# --- merge -----------------------------------------------------------------------------------


@given(vclocks(), vclocks())
def test_merge_commutative(a: VClock, b: VClock) -> None:
    ab, ba = a.merge(b), b.merge(a)
    assert ab == ba
    assert ab.counters() == ba.counters()
    # timestamps are chosen deterministically too (max by (counter, ts))
    assert entries_of(ab) == entries_of(ba)
    assert ab.pruned == ba.pruned


@given(vclocks(), vclocks(), vclocks())
def test_merge_associative(a: VClock, b: VClock, c: VClock) -> None:
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    assert left == right
    assert left.counters() == right.counters()
    assert entries_of(left) == entries_of(right)
    assert left.pruned == right.pruned


@given(vclocks())
def test_merge_idempotent(a: VClock) -> None:
    aa = a.merge(a)
    assert aa == a
    assert aa.counters() == a.counters()
    assert entries_of(aa) == entries_of(a)
    assert aa.pruned == a.pruned


@given(vclocks(), vclocks())
def test_merge_is_pointwise_max_and_least_upper_bound(a: VClock, b: VClock) -> None:
    m = a.merge(b)
    for x in ACTORS:
        assert m.counter(x) == max(a.counter(x), b.counter(x))
    assert m.descends(a)
    assert m.descends(b)
    assert not m.concurrent(a)
    assert not m.concurrent(b)
    assert m.pruned == (a.pruned or b.pruned)
    assert set(m.actors()) == set(a.actors()) | set(b.actors())


@given(vclocks(), vclocks(), vclocks())
def test_merge_is_least(a: VClock, b: VClock, c: VClock) -> None:
    if c.descends(a) and c.descends(b):
        assert c.descends(a.merge(b))


@given(vclocks(), vclocks())
def test_merge_absorbs_descendant(a: VClock, b: VClock) -> None:
    if a.descends(b):
        assert a.merge(b) == a
        assert b.merge(a) == a


@given(vclocks(), vclocks())
def test_merge_does_not_mutate_inputs(a: VClock, b: VClock) -> None:
    before_a, before_b = (entries_of(a), a.pruned), (entries_of(b), b.pruned)
    a.merge(b)
    b.merge(a)
    assert (entries_of(a), a.pruned) == before_a
    assert (entries_of(b), b.pruned) == before_b


def test_merge_with_empty_pruned_clock_marks_pruned() -> None:
    a = VClock.of({"a": 1})
    m = a.merge(VClock(pruned=True))
    assert m == a
    assert m.pruned
    assert not a.pruned


@given(st.lists(vclocks(), max_size=5))
def test_join_matches_fold(clocks: list[VClock]) -> None:
    out = join(clocks)
    for c in clocks:
        assert out.descends(c)
    for x in ACTORS:
        assert out.counter(x) == max((c.counter(x) for c in clocks), default=0)
    assert out.pruned == any(c.pruned for c in clocks)
    assert join(reversed(clocks)) == out


# --- add / covers ------------------------------------------------------------------------------


@given(vclocks(), dots, timestamps)
def test_add_covers_dot(clock: VClock, dot: Dot, ts: int) -> None:
    added = clock.add(dot, ts)
    assert added.covers(dot)
    assert added.descends(clock)
    assert added.pruned == clock.pruned
    for x in ACTORS:
        if x != dot.actor:
            assert added.counter(x) == clock.counter(x)
    if clock.covers(dot):
        assert added is clock
    else:
        assert added.counter(dot.actor) == dot.counter
        assert added.timestamp(dot.actor) == ts
        assert not clock.covers(dot)  # the original is untouched


@given(vclocks(), dots, timestamps)
def test_add_never_lowers_a_counter(clock: VClock, dot: Dot, ts: int) -> None:
    added = clock.add(dot, ts)
    assert added.counter(dot.actor) == max(clock.counter(dot.actor), dot.counter)


@given(vclocks(), dots, timestamps)
def test_covers_after_add_is_downward_closed(clock: VClock, dot: Dot, ts: int) -> None:
    added = clock.add(dot, ts)
    for c in range(1, dot.counter + 1):
        assert added.covers(Dot(dot.actor, c))
    assert not added.covers(Dot(dot.actor, added.counter(dot.actor) + 1))


@given(vclocks(), vclocks(), dots)
def test_merge_covers_iff_either_covers(a: VClock, b: VClock, dot: Dot) -> None:
    assert a.merge(b).covers(dot) == (a.covers(dot) or b.covers(dot))


# --- prune -------------------------------------------------------------------------------------

NOW = 1_000_000


@st.composite
def aged_clocks(draw: st.DrawFn) -> VClock:
    # timestamps cluster around the min-age boundary so both young and old entries appear
    entries = draw(
        st.dictionaries(
            actors,
            st.tuples(counters, st.integers(min_value=NOW - 2_000, max_value=NOW)),
            max_size=len(ACTORS),
        )
    )
    return VClock(entries, pruned=draw(st.booleans()))


prune_args = st.tuples(
    st.integers(min_value=0, max_value=len(ACTORS) + 1),
    st.sampled_from([0, 1, 500, 1_000, 1_500, 5_000]),
)


@given(aged_clocks(), prune_args)
def test_prune_only_removes_entries(clock: VClock, args: tuple[int, int]) -> None:
    max_entries, min_age = args
    pruned = clock.prune(max_entries, NOW, min_age)
    before = entries_of(clock)
    after = entries_of(pruned)
    # a subset, with identical counters and timestamps: never raises (or lowers) a counter
    assert set(after) <= set(before)
    for actor, entry in after.items():
        assert entry == before[actor]
    assert clock.descends(pruned)
    # the input is untouched
    assert entries_of(clock) == before


@given(aged_clocks(), prune_args)
def test_prune_marks_pruned_exactly_when_something_was_dropped(
    clock: VClock, args: tuple[int, int]
) -> None:
    max_entries, min_age = args
    pruned = clock.prune(max_entries, NOW, min_age)
    if len(pruned) < len(clock):
        assert pruned.pruned
    else:
        assert pruned is clock
        assert pruned.pruned == clock.pruned


@given(aged_clocks(), prune_args)
def test_prune_never_drops_young_entries(clock: VClock, args: tuple[int, int]) -> None:
    max_entries, min_age = args
    pruned = clock.prune(max_entries, NOW, min_age)
    for actor, counter, ts in clock.items():
        if NOW - ts < min_age:
            assert pruned.counter(actor) == counter, (actor, ts)


@given(aged_clocks(), prune_args)
def test_prune_bounds_old_entries(clock: VClock, args: tuple[int, int]) -> None:
    """Either the clock fits in max_entries, or everything left is too young to prune."""
    max_entries, min_age = args
    pruned = clock.prune(max_entries, NOW, min_age)
    if len(clock) <= max_entries:
        assert pruned is clock
        return
    old_left = [a for a, _, ts in pruned.items() if NOW - ts >= min_age]
    assert len(pruned) <= max_entries or not old_left
    # it drops no more than needed
    assert len(pruned) >= min(max_entries, len(clock))


@given(aged_clocks(), prune_args)
def test_prune_drops_the_oldest_first(clock: VClock, args: tuple[int, int]) -> None:
    max_entries, min_age = args
    pruned = clock.prune(max_entries, NOW, min_age)
    kept = {a: ts for a, _, ts in pruned.items()}
    dropped = {a: ts for a, _, ts in clock.items() if a not in kept}
    for d_actor, d_ts in dropped.items():
        for k_actor, k_ts in kept.items():
            assert (d_ts, d_actor) < (k_ts, k_actor)


@given(aged_clocks(), prune_args)
def test_prune_idempotent(clock: VClock, args: tuple[int, int]) -> None:
    max_entries, min_age = args
    once = clock.prune(max_entries, NOW, min_age)
    twice = once.prune(max_entries, NOW, min_age)
    assert entries_of(twice) == entries_of(once)


@given(vclocks(), st.integers(min_value=0, max_value=10))
def test_prune_with_default_min_age_and_recent_entries_keeps_everything(
    clock: VClock, max_entries: int
) -> None:
    # every timestamp in vclocks() is at most 10 s old relative to now=10_000
    pruned = clock.prune(max_entries, 10_000, 86_400_000)
    assert pruned is clock
    assert entries_of(pruned) == entries_of(clock)


@settings(max_examples=50, deadline=None)
@given(aged_clocks(), aged_clocks(), prune_args)
def test_pruned_clock_only_understates(a: VClock, b: VClock, args: tuple[int, int]) -> None:
    """A pruned clock never claims to have seen an event the full clock has not."""
    max_entries, min_age = args
    full = a.merge(b)
    pruned = full.prune(max_entries, NOW, min_age)
    for actor in ACTORS:
        for c in range(1, 21):
            if pruned.covers(Dot(actor, c)):
                assert full.covers(Dot(actor, c))
