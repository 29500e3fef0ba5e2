"""Property tests for dynamo_node.core.versions: sibling sets with dotted version vectors.

The heart of this file is a small pure model of one key replicated on a few nodes
(`Sim`). Nodes coordinate puts exactly as `Replica.new_version` does (a monotonic
per-node floor, `next_counter`, `update`), clients read contexts from one replica or a
quorum of them (and may keep stale contexts around), and replicas exchange whole objects
with `sync`. Beside the product's clocks, the model tracks the *true* causal history of
every version (the set of dots the writer had really seen), which is the oracle for
"no write is lost", "a put supersedes exactly what it has seen", and the pruning rules.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from dynamo_node.core.vclock import Dot, VClock
from dynamo_node.core.versions import (
    Object,
    Sibling,
    SyncResult,
    is_newer_or_equal,
    next_counter,
    sync,
    sync_all,
    update,
)

DAY_MS = 86_400_000
CT = "application/json"

History = frozenset[Dot]


@dataclass(frozen=True)
class Ctx:
    """A client's context: the product's clock plus the model's true history."""

    clock: VClock
    seen: History


EMPTY = Ctx(VClock(), frozenset())


@dataclass
class Sim:
    """One key on `n` replicas; node i is actor f"n{i}"."""

    n: int
    max_entries: int = 10
    min_age: int = DAY_MS
    skew: tuple[int, ...] = ()
    now: int = 1_000_000
    check_prune_rules: bool = False
    replicas: list[Object] = field(default_factory=list)
    floors: list[int] = field(default_factory=list)
    anc: dict[Dot, History] = field(default_factory=dict)
    created: dict[Dot, Sibling] = field(default_factory=dict)
    contexts: list[Ctx] = field(default_factory=list)
    snapshots: list[Object] = field(default_factory=list)
    sync_results: list[tuple[Object, Object, SyncResult]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.replicas = [Object() for _ in range(self.n)]
        self.floors = [0] * self.n

    # --- the oracle ------------------------------------------------------------------
    def history(self, obj: Object) -> History:
        out: set[Dot] = set()
        for s in obj.siblings:
            out.add(s.dot)
            out |= self.anc[s.dot]
        return frozenset(out)

    def maximal(self) -> set[Dot]:
        """Created versions that no other created version has seen."""
        seen: set[Dot] = set()
        for a in self.anc.values():
            seen |= a
        return set(self.created) - seen

    # --- operations ------------------------------------------------------------------
    def clock_of(self, r: int) -> int:
        return self.now + (self.skew[r] if self.skew else 0)

    def read(self, rs: list[int]) -> Ctx:
        obj = sync_all(self.replicas[r] for r in rs).obj
        return Ctx(obj.context(), self.history(obj))

    def put(self, r: int, ctx: Ctx, *, tombstone: bool = False) -> Sibling:
        """Coordinate a put on replica r, as Replica.new_version does."""
        self.now += 1
        current = self.replicas[r]
        actor = f"n{r}"
        self.floors[r] += 1
        counter = next_counter(current, ctx.clock, actor, self.floors[r])
        assert counter >= self.floors[r]
        self.floors[r] = counter
        dot = Dot(actor, counter)
        assert dot not in self.created, "dots must be unique"
        value = None if tombstone else f"{actor}/{counter}".encode()
        new = update(
            current,
            ctx.clock,
            dot,
            value,
            CT,
            self.clock_of(r),
            max_entries=self.max_entries,
            prune_min_age_ms=self.min_age,
        )
        # `update` supersedes exactly the siblings the context covers, adds exactly one
        expected = {s.dot for s in current.siblings if not ctx.clock.covers(s.dot)} | {dot}
        assert {s.dot for s in new.siblings} == expected
        (sib,) = [s for s in new.siblings if s.dot == dot]
        self.anc[dot] = ctx.seen
        self.created[dot] = sib
        self.replicas[r] = new
        self.snapshots.append(new)
        return sib

    def sync(self, src: int, dst: int) -> SyncResult:
        a, b = self.replicas[dst], self.replicas[src]
        res = sync(a, b)
        self.sync_results.append((a, b, res))
        if self.check_prune_rules:
            check_prune_rules(self, a, b, res)
        self.replicas[dst] = res.obj
        self.snapshots.append(res.obj)
        return res

    def merged(self) -> Object:
        return sync_all(self.replicas).obj


def subset(bits: int, n: int) -> list[int]:
    rs = [i for i in range(n) if bits >> i & 1]
    return rs or [bits % n]


Op = tuple[str, int, int, bool]
OPS = ("put_full", "put_blind", "put_stale", "put_quorum", "read", "sync", "sync2", "tick")
op_st = st.tuples(
    st.sampled_from(OPS),
    st.integers(min_value=0, max_value=63),
    st.integers(min_value=0, max_value=63),
    st.booleans(),
)


def run(sim: Sim, ops: list[Op]) -> Sim:
    n = sim.n
    for kind, x, y, flag in ops:
        r = x % n
        if kind == "put_full":
            sim.put(r, sim.read([r]), tombstone=flag)
        elif kind == "put_blind":
            sim.put(r, EMPTY, tombstone=flag)
        elif kind == "put_stale":
            ctx = sim.contexts[y % len(sim.contexts)] if sim.contexts else EMPTY
            sim.put(r, ctx, tombstone=flag)
        elif kind == "put_quorum":
            sim.put(r, sim.read(subset(y, n)), tombstone=flag)
        elif kind == "read":
            sim.contexts.append(sim.read(subset(y, n)))
        elif kind in ("sync", "sync2"):
            dst = y % n
            if dst != r:
                sim.sync(r, dst)
                if kind == "sync2" or flag:
                    sim.sync(dst, r)
        else:  # tick
            sim.now += y * 1_000
    return sim


def check_prune_rules(sim: Sim, a: Object, b: Object, res: SyncResult) -> None:
    """Pruning may resurrect an ancestor only visibly, and may never drop a non-ancestor."""
    union = {s.dot for s in a.siblings + b.siblings}
    kept = {s.dot for s in res.obj.siblings}
    assert kept <= union
    for dropped in union - kept:
        assert any(dropped in sim.anc[k] for k in kept), (
            f"sync dropped {dropped}, which is not an ancestor of any kept version {sorted(kept)}"
        )
    silent = [(s, t) for s in kept for t in kept if s in sim.anc[t]]
    assert not silent or res.prune_suspects > 0, (
        f"ancestor kept beside its descendant with prune_suspects == 0: "
        f"{[(s, t, sim.created[t].past) for s, t in silent]}\n a={a}\n b={b}"
    )


def resurrected(sim: Sim, obj: Object) -> bool:
    kept = {s.dot for s in obj.siblings}
    return any(s in sim.anc[t] for s in kept for t in kept)


def kept_pruned_past(res: SyncResult) -> bool:
    return any(s.past.pruned for s in res.obj.siblings)


SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
n_st = st.integers(min_value=2, max_value=4)
ops_st = st.lists(op_st, min_size=1, max_size=40)


def sim_without_pruning(n: int, ops: list[Op]) -> Sim:
    return run(Sim(n), ops)


def siblings_equal(a: Object, b: Object) -> bool:
    """== plus the parts == ignores (past timestamps are not compared by VClock.__eq__)."""
    return a == b and [list(s.past.items()) for s in a.siblings] == [
        list(s.past.items()) for s in b.siblings
    ]


# --- the model itself stays honest ------------------------------------------------------------


@SLOW
@given(n_st, ops_st)
def test_model_dots_unique_and_pasts_exact_without_pruning(n: int, ops: list[Op]) -> None:
    sim = sim_without_pruning(n, ops)
    for dot, sib in sim.created.items():
        assert sib.dot == dot
        assert not sib.past.pruned
        # the product's clock states exactly the true history (vector-clock downward closure)
        for other in sim.created:
            assert sib.past.covers(other) == (other in sim.anc[dot]), (dot, other)


# --- sync algebra over a shared causal history -------------------------------------------------


@st.composite
def history_and_picks(
    draw: st.DrawFn,
    /,
    ops_strategy: st.SearchStrategy[list[Op]] = ops_st,
    max_entries: int = 10,
    min_age: int = DAY_MS,
) -> tuple[Sim, list[Object]]:
    n = draw(n_st)
    ops = draw(ops_strategy)
    sim = run(Sim(n, max_entries=max_entries, min_age=min_age), ops)
    pool = [Object(), *sim.snapshots, *sim.replicas]
    picks = [pool[draw(st.integers(min_value=0, max_value=len(pool) - 1))] for _ in range(3)]
    return sim, picks


@SLOW
@given(history_and_picks())
def test_sync_commutative(data: tuple[Sim, list[Object]]) -> None:
    _, (a, b, _c) = data
    ab, ba = sync(a, b), sync(b, a)
    assert ab.obj == ba.obj
    assert siblings_equal(ab.obj, ba.obj)
    assert ab.prune_suspects == ba.prune_suspects == 0


@SLOW
@given(history_and_picks())
def test_sync_associative(data: tuple[Sim, list[Object]]) -> None:
    _, (a, b, c) = data
    left = sync(sync(a, b).obj, c).obj
    right = sync(a, sync(b, c).obj).obj
    assert left == right
    assert siblings_equal(left, right)
    assert sync_all([a, b, c]).obj == left
    assert sync_all([c, a, b]).obj == left


@SLOW
@given(history_and_picks())
def test_sync_idempotent(data: tuple[Sim, list[Object]]) -> None:
    _, (a, b, _c) = data
    assert sync(a, a).obj == a
    ab = sync(a, b).obj
    assert sync(ab, b).obj == ab
    assert sync(ab, a).obj == ab
    assert sync(ab, ab).obj == ab
    assert sync(a, Object()).obj == a
    assert sync(Object(), a).obj == a
    assert is_newer_or_equal(ab, a)
    assert is_newer_or_equal(ab, b)


@SLOW
@given(history_and_picks())
def test_sync_result_keeps_exactly_the_unseen(data: tuple[Sim, list[Object]]) -> None:
    """sync keeps a version iff no other version in either input has seen it."""
    sim, (a, b, _c) = data
    union = {s.dot for s in a.siblings + b.siblings}
    kept = {s.dot for s in sync(a, b).obj.siblings}
    assert kept == {d for d in union if not any(d in sim.anc[o] for o in union)}


# --- puts: what they supersede ------------------------------------------------------------------


@SLOW
@given(history_and_picks(), st.integers(min_value=0, max_value=63), st.booleans())
def test_put_supersedes_exactly_what_its_context_covers(
    data: tuple[Sim, list[Object]], pick: int, tombstone: bool
) -> None:
    sim, (obj, _b, _c) = data
    contexts = [EMPTY, *sim.contexts, *(sim.read([r]) for r in range(sim.n))]
    ctx = contexts[pick % len(contexts)]
    dot = Dot("zz", 1)  # an actor no sim node uses: a fresh event
    new = update(obj, ctx.clock, dot, None if tombstone else b"v", CT, sim.now + 1)
    survivors = [s for s in obj.siblings if not ctx.clock.covers(s.dot)]
    assert {s.dot for s in new.siblings} == {s.dot for s in survivors} | {dot}
    for s in survivors:  # the survivors are untouched
        assert s in new.siblings
    (fresh,) = [s for s in new.siblings if s.dot == dot]
    assert fresh.past == ctx.clock
    assert fresh.tombstone == tombstone
    # and a replica that syncs with the new version drops exactly the same ones
    assert {s.dot for s in sync(obj, Object((fresh,))).obj.siblings} == {
        s.dot for s in new.siblings
    }


@SLOW
@given(history_and_picks(), st.integers(min_value=0, max_value=3))
def test_put_without_context_is_sibling_of_everything(
    data: tuple[Sim, list[Object]], r: int
) -> None:
    sim, (obj, _b, _c) = data
    actor = f"n{r % sim.n}"
    counter = next_counter(obj, VClock(), actor, sim.floors[r % sim.n])
    dot = Dot(actor, counter)
    new = update(obj, VClock(), dot, b"blind", CT, sim.now + 1)
    assert len(new.siblings) == len(obj.siblings) + 1
    assert {s.dot for s in new.siblings} == {s.dot for s in obj.siblings} | {dot}
    for s in obj.siblings:
        assert s in new.siblings
    # and it stays a sibling of all of them through any sync
    assert sync(new, obj).obj == new


def test_put_without_context_through_same_coordinator() -> None:
    """Two blind writes coordinated by the same node never hide each other (the dots)."""
    obj = Object()
    for i in range(1, 4):
        counter = next_counter(obj, VClock(), "n0", i - 1)
        obj = update(obj, VClock(), Dot("n0", counter), f"{i}".encode(), CT, 1000 + i)
        assert len(obj.siblings) == i
    assert [s.value for s in obj.siblings] == [b"1", b"2", b"3"]


# --- sequential read-modify-write never grows siblings -------------------------------------------


Step = tuple[int, int, bool, list[tuple[int, int]]]
rmw_st = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # coordinator
        st.integers(min_value=0, max_value=15),  # which replicas the read sees (+ the latest)
        st.booleans(),  # delete instead of put
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=3),  # syncs
    ),
    min_size=1,
    max_size=30,
)


@SLOW
@given(st.integers(min_value=2, max_value=4), rmw_st)
def test_sequential_read_modify_write_never_has_siblings(n: int, steps: list[Step]) -> None:
    sim = Sim(n)
    latest: int | None = None
    for coord, bits, tombstone, syncs in steps:
        r = coord % n
        # a sequential client reads at least the replica holding the latest write
        rs = subset(bits, n)
        if latest is not None and latest not in rs:
            rs.append(latest)
        sim.put(r, sim.read(rs), tombstone=tombstone)
        latest = r
        for x, y in syncs:
            if x % n != y % n:
                res = sim.sync(x % n, y % n)
                assert len(res.obj.siblings) <= 1, res.obj
        for obj in sim.replicas:
            assert len(obj.siblings) <= 1, obj
        assert len(sim.merged().siblings) == 1
    for a, b in itertools.combinations(sim.snapshots, 2):
        assert len(sync(a, b).obj.siblings) <= 1


# --- concurrent writers ------------------------------------------------------------------------


@SLOW
@given(
    st.integers(min_value=2, max_value=4),
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=3),
    st.booleans(),
)
def test_k_blind_writes_give_k_siblings_and_one_put_resolves(
    n: int, coordinators: list[int], resolver: int, base: bool
) -> None:
    sim = Sim(n)
    if base:  # an existing value every writer has read (a shared, then stale, context)
        sim.put(0, EMPTY)
        for r in range(1, n):
            sim.sync(0, r)
        ctx = sim.read([0])
    else:
        ctx = EMPTY
    for c in coordinators:
        sim.put(c % n, ctx)  # writers never see each other's writes
    merged = sim.merged()
    k = len(coordinators)
    assert len(merged.siblings) == k
    assert len(merged.visible()) == k
    assert {s.dot for s in merged.siblings} == set(sim.created) - {
        d for d in sim.created if d in ctx.seen
    }
    # one put with the joined context resolves them all
    r = resolver % n
    sim.put(r, Ctx(merged.context(), sim.history(merged)))
    for other in range(n):
        if other != r:
            sim.sync(r, other)
            sim.sync(other, r)
    assert len(sim.merged().siblings) == 1
    for obj in sim.replicas:
        assert len(obj.siblings) == 1
    assert len({s.dot for obj in sim.replicas for s in obj.siblings}) == 1


# --- no acknowledged write is lost ---------------------------------------------------------------


@SLOW
@given(n_st, ops_st)
def test_no_acknowledged_write_is_lost(n: int, ops: list[Op]) -> None:
    sim = sim_without_pruning(n, ops)
    merged = sim.merged()
    present = {s.dot: s for s in merged.siblings}
    for dot in sim.created:
        assert dot in present or any(s.past.covers(dot) for s in present.values()), dot
        # ...and covered only by versions that really saw it
        for s in present.values():
            if s.past.covers(dot):
                assert dot in sim.anc[s.dot]
    # exactly the maximal versions survive: none lost, no ancestor beside a descendant
    assert set(present) == sim.maximal()
    # every replica, and every sync along the way, holds only unseen versions
    for a, b, res in sim.sync_results:
        assert res.prune_suspects == 0
        kept = {s.dot for s in res.obj.siblings}
        for s in a.siblings + b.siblings:
            assert s.dot in kept or any(s.dot in sim.anc[k] for k in kept)


@SLOW
@given(n_st, ops_st)
def test_visible_hides_tombstones_in_history(n: int, ops: list[Op]) -> None:
    sim = sim_without_pruning(n, ops)
    for obj in [*sim.snapshots, sim.merged()]:
        live = [s for s in obj.siblings if s.value is not None]
        assert list(obj.visible()) == live
        assert obj.all_tombstones() == (bool(obj.siblings) and not live)


# --- clock pruning ---------------------------------------------------------------------------


# biased towards what makes pruning bite: many writers, wide quorum reads, stale replicas
PRUNE_OPS = (
    ["put_blind"] * 3
    + ["put_quorum"] * 3
    + ["sync"] * 3
    + ["put_stale"] * 2
    + ["put_full", "sync2", "read", "read", "tick"]
)
prune_op_st = st.tuples(
    st.sampled_from(PRUNE_OPS),
    st.integers(min_value=0, max_value=63),
    st.integers(min_value=0, max_value=63),
    st.booleans(),
)


PRUNE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
prune_ops_st = st.lists(prune_op_st, min_size=15, max_size=50)


def check_pruned_history(sim: Sim) -> None:
    final = sim.replicas
    res = sync_all(final)
    union = {s.dot for o in final for s in o.siblings}
    kept = {s.dot for s in res.obj.siblings}
    for dropped in union - kept:
        assert any(dropped in sim.anc[k] for k in kept)
    # and over arbitrary pairs of (recent) historical states
    for a, b in itertools.combinations([*sim.snapshots[-12:], *final], 2):
        check_prune_rules(sim, a, b, sync(a, b))
    # coverage of the interesting cases (see --hypothesis-show-statistics)
    event(f"pruned pasts: {min(sum(s.past.pruned for s in sim.created.values()), 3)}+")
    results = [res for _a, _b, res in sim.sync_results]
    event(f"sync result holds a pruned past: {any(kept_pruned_past(r) for r in results)}")
    event(f"sync reported suspects: {any(r.prune_suspects for r in results)}")
    event(f"ancestor resurrected: {any(resurrected(sim, r.obj) for r in results)}")


@PRUNE
@given(st.integers(min_value=3, max_value=6), st.integers(min_value=1, max_value=3), prune_ops_st)
def test_pruning_never_silently_resurrects_an_ancestor(
    n: int, max_entries: int, ops: list[Op]
) -> None:
    """With tiny clocks and no minimum age, a later version whose past was pruned, synced
    with its ancestor, either drops the ancestor or reports prune_suspects > 0; and sync
    never drops a version that is not an ancestor of a kept one (node clocks in step)."""
    sim = Sim(n, max_entries=max_entries, min_age=0, check_prune_rules=True)
    run(sim, ops)
    check_pruned_history(sim)


@PRUNE
@given(
    st.integers(min_value=3, max_value=6),
    st.integers(min_value=1, max_value=3),
    prune_ops_st,
    st.lists(st.integers(min_value=-2_000, max_value=2_000), min_size=6, max_size=6),
)
@example(  # the minimal case of test_pruning_resurrection_with_clock_skew_is_reported
    3,
    1,
    [
        ("put_blind", 0, 0, False),
        ("put_blind", 1, 0, False),
        ("put_quorum", 1, 0b011, False),
        ("put_quorum", 2, 0b010, False),
        ("sync", 2, 0, False),
        *[("tick", 0, 0, False)] * 10,
    ],
    [0, 0, -2_000, 0, 0, 0],
)
def test_pruning_never_silently_resurrects_an_ancestor_with_clock_skew(
    n: int, max_entries: int, ops: list[Op], skew: list[int]
) -> None:
    """The same, with each node's wall clock off by up to +-2 s (timestamps are only used
    to choose what to prune, so skew may change *what* is pruned but must not make a
    resurrection silent)."""
    sim = Sim(n, max_entries=max_entries, min_age=0, skew=tuple(skew), check_prune_rules=True)
    run(sim, ops)
    check_pruned_history(sim)


def test_pruning_resurrection_is_reported_example() -> None:
    """A hand-built case: the descendant's past lost the ancestor's actor."""
    sim = Sim(3, max_entries=1, min_age=0, check_prune_rules=True)
    ancestor = sim.put(0, EMPTY)
    sim.sync(0, 1)
    sim.put(2, EMPTY)  # concurrent
    sim.sync(2, 1)
    # a client reads both and resolves them through n1: its past {n0, n2} is pruned to one
    resolved = sim.put(1, sim.read([1]))
    assert resolved.past.pruned
    assert resolved.past.counters() == {"n2": sim.floors[2]}  # the oldest (n0) went
    # n0 still holds only the ancestor: syncing keeps it (pruning hid it) and must say so
    res = sim.sync(1, 0)
    assert {s.dot for s in res.obj.siblings} == {ancestor.dot, resolved.dot}
    assert res.prune_suspects == 1


def test_pruning_resurrection_with_clock_skew_is_reported() -> None:
    """Minimal counterexample found by the skew property below.

    n0 writes s; n1 resolves (s, x) and its past is pruned to {n1} (n0 was oldest); n2,
    whose wall clock is 2 s behind, then writes t with the context of n1's version. t's
    past {n1:4} (pruned) no longer names n0, so s (which t has truly seen) survives a
    sync with t; but the suspect rule also needs s.timestamp_ms <= t.timestamp_ms, which
    the skewed clock breaks: prune_suspects == 0, a silent resurrection."""
    sim = Sim(3, max_entries=1, min_age=0, skew=(0, 0, -2_000), check_prune_rules=True)
    s = sim.put(0, EMPTY)
    sim.put(1, EMPTY)
    sim.put(1, sim.read([0, 1]))  # n1's version: past {n0, n1} pruned to {n1}
    t = sim.put(2, sim.read([1]))  # n2 (clock behind) builds on it
    assert s.dot in sim.anc[t.dot]  # t has truly seen s
    assert t.timestamp_ms < s.timestamp_ms
    # replica 0 has only s; replica 2 only t
    sim.sync(2, 0)  # check_prune_rules: ancestor kept with prune_suspects == 0 -> fails


def test_sync_associative_with_pruned_clocks_example() -> None:
    """With a pruned past, coverage is no longer transitive, so the merge order decides
    whether an ancestor is dropped or resurrected (versions' docstring: associative only
    as long as no clock was pruned). The resurrection must then be reported.

    s = n0's write; m = n1's write having seen s; t = n1's next write having seen m, its
    past {n0:_, n1:_} pruned to {n1:_}.  (s + m) + t = {t}, but s + (m + t) = {s, t}."""
    sim = Sim(2, max_entries=1, min_age=0)
    s = sim.put(0, EMPTY)
    sim.sync(0, 1)
    m = sim.put(1, sim.read([1]))
    t = sim.put(1, sim.read([1]))
    assert t.past.pruned
    a, b, c = Object((s,)), Object((m,)), Object((t,))
    left = sync(sync(a, b).obj, c)
    right = sync(a, sync(b, c).obj)
    assert {x.dot for x in left.obj.siblings} == {t.dot}
    assert {x.dot for x in right.obj.siblings} == {s.dot, t.dot}
    assert right.prune_suspects == 1  # the resurrection is reported, not silent
    # and the two orders converge once they meet
    assert sync(left.obj, right.obj).obj == right.obj


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history_and_picks(prune_ops_st, max_entries=1, min_age=0))
def test_sync_algebra_with_pruned_clocks(data: tuple[Sim, list[Object]]) -> None:
    """Commutativity and idempotence survive pruning. Associativity (and so absorption,
    sync(sync(a, b), b) == sync(a, b)) may not, but only by a reported resurrection of
    versions that are true ancestors of a kept one."""
    sim, (a, b, c) = data
    assert sync(a, b) == sync(b, a)
    assert sync(a, a).obj == a
    ab = sync(a, b).obj
    assert sync(ab, ab).obj == ab
    for x, y, z in [(a, b, c), (b, c, a), (c, a, b)]:
        left = sync(sync(x, y).obj, z)
        right = sync(x, sync(y, z).obj)
        for res, other in ((left, right), (right, left)):
            extra = {s.dot for s in res.obj.siblings} - {s.dot for s in other.obj.siblings}
            if extra:
                event("merge order mattered")
                assert res.prune_suspects > 0
                kept = {s.dot for s in res.obj.siblings}
                for d in extra:
                    assert any(d in sim.anc[k] for k in kept - {d})


@SLOW
@given(n_st, st.integers(min_value=1, max_value=3), ops_st)
def test_default_min_age_prunes_nothing_recent(n: int, max_entries: int, ops: list[Op]) -> None:
    """With the default one-day minimum age and timestamps younger than that, clocks are
    never pruned, however small max_entries is."""
    sim = run(Sim(n, max_entries=max_entries), ops)
    assert sim.now - 1_000_000 < DAY_MS
    for dot, sib in sim.created.items():
        assert not sib.past.pruned
        for other in sim.created:
            assert sib.past.covers(other) == (other in sim.anc[dot])
    assert {s.dot for s in sim.merged().siblings} == sim.maximal()
    for _a, _b, res in sim.sync_results:
        assert res.prune_suspects == 0


# --- tombstones ------------------------------------------------------------------------------


def sib(
    actor: str, counter: int, value: bytes | None, ts: int = 1, past: VClock | None = None
) -> Sibling:
    return Sibling(Dot(actor, counter), past or VClock(), value, CT, ts)


def test_visible_hides_tombstones_next_to_live_siblings() -> None:
    obj = Object.of([sib("a", 1, None), sib("b", 1, b"x"), sib("c", 1, b"y")])
    assert [s.value for s in obj.visible()] == [b"x", b"y"]
    assert not obj.all_tombstones()


def test_all_tombstones() -> None:
    assert not Object().all_tombstones()
    assert Object().visible() == ()
    only = Object.of([sib("a", 1, None), sib("b", 2, None)])
    assert only.all_tombstones()
    assert only.visible() == ()
    assert all(s.tombstone for s in only.siblings)
    assert not Object.of([sib("a", 1, b"")]).all_tombstones()  # empty value is not a tombstone


def test_delete_with_context_then_blind_put_is_one_live_sibling() -> None:
    sim = Sim(2)
    sim.put(0, EMPTY)
    sim.put(1, EMPTY)
    sim.sync(1, 0)
    assert len(sim.replicas[0].siblings) == 2
    sim.put(0, sim.read([0]), tombstone=True)  # delete with the context of both
    assert sim.replicas[0].all_tombstones()
    assert len(sim.replicas[0].siblings) == 1
    assert sim.replicas[0].visible() == ()
    sim.put(1, EMPTY)  # a put without context, on the other replica
    sim.sync(0, 1)
    sim.sync(1, 0)
    for obj in sim.replicas:
        assert len(obj.visible()) == 1
        assert not obj.all_tombstones()
        assert len(obj.siblings) == 2  # the tombstone stays until purged, hidden
        (live,) = obj.visible()
        assert live.value is not None


def test_delete_then_put_with_tombstone_context_resolves_to_one() -> None:
    sim = Sim(2)
    sim.put(0, EMPTY)
    sim.put(0, sim.read([0]), tombstone=True)
    sim.put(1, sim.read([0]))
    sim.sync(1, 0)
    assert len(sim.replicas[0].siblings) == 1
    assert sim.replicas[0].visible()[0].value is not None


# --- arbitrary objects: what holds without a shared history ---------------------------------------

actor_st = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def sibling_st(draw: st.DrawFn) -> Sibling:
    past = VClock.of(draw(st.dictionaries(actor_st, st.integers(1, 6), max_size=4)))
    return Sibling(
        Dot(draw(actor_st), draw(st.integers(1, 6))),
        past,
        draw(st.one_of(st.none(), st.binary(max_size=3))),
        draw(st.sampled_from([CT, "text/plain"])),
        draw(st.integers(0, 5)),
    )


@st.composite
def unique_pool(draw: st.DrawFn) -> tuple[Object, Object, Object]:
    pool = draw(st.lists(sibling_st(), min_size=0, max_size=8, unique_by=lambda s: s.dot))
    members = [draw(st.lists(st.booleans(), min_size=len(pool), max_size=len(pool))) for _ in "abc"]
    a, b, c = (Object.of(s for s, m in zip(pool, ms, strict=True) if m) for ms in members)
    return a, b, c


# Two copies of one dot that differ only in ways _rank() does not order (a tombstone vs an
# empty value; or only the past): Object.of keeps whichever it saw first.
TIE_TOMB = Sibling(Dot("a", 1), VClock(), None, CT, 0)
TIE_EMPTY = Sibling(Dot("a", 1), VClock(), b"", CT, 0)
TIE_PAST_0 = Sibling(Dot("a", 1), VClock(), b"v", CT, 0)
TIE_PAST_1 = Sibling(Dot("a", 1), VClock.of({"b": 1}), b"v", CT, 0)


@given(st.lists(sibling_st(), max_size=6), st.lists(sibling_st(), max_size=6))
@example([TIE_TOMB], [TIE_EMPTY])
@example([TIE_PAST_0], [TIE_PAST_1])
def test_sync_commutative_even_with_conflicting_copies_of_a_dot(
    xs: list[Sibling], ys: list[Sibling]
) -> None:
    a, b = Object.of(xs), Object.of(ys)
    assert sync(a, b) == sync(b, a)
    assert siblings_equal(sync(a, b).obj, sync(b, a).obj)


@given(
    st.lists(sibling_st(), max_size=8).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))
    )
)
@example(([TIE_TOMB, TIE_EMPTY], [TIE_EMPTY, TIE_TOMB]))
@example(([TIE_PAST_0, TIE_PAST_1], [TIE_PAST_1, TIE_PAST_0]))
def test_object_of_is_canonical(lists: tuple[list[Sibling], list[Sibling]]) -> None:
    """Object.of promises: 'if two copies [of a dot] ever differ pick one
    deterministically so that merging stays commutative'."""
    xs, shuffled = lists
    a, b = Object.of(xs), Object.of(shuffled)
    assert [s.dot for s in a.siblings] == sorted({s.dot for s in xs})
    assert a == b
    assert siblings_equal(a, b)


@given(unique_pool())
def test_sync_never_keeps_an_obsolete_sibling(objs: tuple[Object, Object, Object]) -> None:
    a, b, _ = objs
    kept = sync(a, b).obj.siblings
    union = {s.dot: s for s in a.siblings + b.siblings}
    for s in kept:
        assert not any(t.dot != s.dot and t.past.covers(s.dot) for t in union.values())
    for d, s in union.items():
        if not any(t.dot != d and t.past.covers(d) for t in union.values()):
            assert s in kept


@given(unique_pool(), st.dictionaries(actor_st, st.integers(0, 6)), actor_st, st.booleans())
def test_update_supersedes_exactly_covered_on_arbitrary_objects(
    objs: tuple[Object, Object, Object], counters: dict[str, int], actor: str, tomb: bool
) -> None:
    obj = objs[0]
    ctx = VClock.of(counters)
    dot = Dot(actor, next_counter(obj, ctx, actor))
    assert not obj.context().covers(dot)
    assert not ctx.covers(dot)
    new = update(obj, ctx, dot, None if tomb else b"v", CT, 9)
    assert {s.dot for s in new.siblings} == {
        s.dot for s in obj.siblings if not ctx.covers(s.dot)
    } | {dot}


@given(unique_pool(), actor_st, st.integers(min_value=0, max_value=50))
def test_next_counter_is_fresh(objs: tuple[Object, Object, Object], actor: str, floor: int) -> None:
    obj, other, _ = objs
    ctx = other.context()
    c = next_counter(obj, ctx, actor, floor)
    assert c > floor
    assert c > obj.context().counter(actor)
    assert c > ctx.counter(actor)
    assert all(s.dot != Dot(actor, c) for s in obj.siblings)


def test_context_covers_every_sibling() -> None:
    obj = Object.of([sib("a", 2, b"1", past=VClock.of({"b": 1})), sib("c", 1, None)])
    ctx = obj.context()
    assert ctx.counters() == {"a": 2, "b": 1, "c": 1}
    for s in obj.siblings:
        assert ctx.covers(s.dot)
    assert Object().context() == VClock()
    assert obj.max_timestamp() == 1
    assert Object().max_timestamp() == 0


# --- last-write-wins mode -----------------------------------------------------------------------


def lww_winner(*objs: Object) -> Sibling | None:
    sibs = [s for o in objs for s in o.siblings]
    return max(sibs, key=lambda s: (s.timestamp_ms, s.dot), default=None)


@given(unique_pool())
def test_lww_keeps_the_newest_by_timestamp_then_dot(objs: tuple[Object, Object, Object]) -> None:
    a, b, _ = objs
    res = sync(a, b, lww=True)
    winner = lww_winner(a, b)
    if winner is None:
        assert res.obj.empty
    else:
        assert res.obj.siblings == (winner,)
    assert res.prune_suspects == 0


@given(unique_pool())
def test_lww_sync_algebra(objs: tuple[Object, Object, Object]) -> None:
    a, b, c = objs
    assert sync(a, b, lww=True) == sync(b, a, lww=True)
    left = sync(sync(a, b, lww=True).obj, c, lww=True).obj
    right = sync(a, sync(b, c, lww=True).obj, lww=True).obj
    assert left == right
    assert sync_all([a, b, c], lww=True).obj == left
    ab = sync(a, b, lww=True).obj
    assert sync(ab, ab, lww=True).obj == ab
    assert sync(ab, a, lww=True).obj == ab
    assert len(ab.siblings) == (1 if (a.siblings or b.siblings) else 0)


@given(unique_pool(), st.dictionaries(actor_st, st.integers(0, 6)), st.booleans())
def test_lww_update_replaces_everything(
    objs: tuple[Object, Object, Object], counters: dict[str, int], tomb: bool
) -> None:
    obj = objs[0]
    ctx = VClock.of(counters)
    dot = Dot("z", next_counter(obj, ctx, "z"))
    new = update(obj, ctx, dot, None if tomb else b"v", CT, 100, lww=True)
    (only,) = new.siblings
    assert only.dot == dot
    assert only.past.descends(obj.context())
    assert only.past.descends(ctx)
    # the new write wins against everything it replaced
    assert sync(new, obj, lww=True).obj == new


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_lww_timestamp_ties_broken_by_dot(order: tuple[int, ...]) -> None:
    sibs = [sib("a", 5, b"1", ts=7), sib("b", 1, b"2", ts=7), sib("a", 6, b"3", ts=3)]
    objs = [Object.of([sibs[i]]) for i in order]
    assert sync_all(objs, lww=True).obj.siblings == (sibs[1],)


# --- the linear merge equals the quadratic definition ---------------------------------------


def quadratic_sync(a: Object, b: Object) -> SyncResult:
    """`sync` as it was defined before the linear merge (every sibling compared with
    every other): the reference the fast one must equal exactly."""
    if len(a.siblings) == 1 and len(b.siblings) == 1:
        x, y = a.siblings[0], b.siblings[0]
        if x.dot != y.dot:
            x_seen, y_seen = y.past.covers(x.dot), x.past.covers(y.dot)
            if x_seen and not y_seen:
                return SyncResult(b)
            if y_seen and not x_seen:
                return SyncResult(a)
    union = Object.of(a.siblings + b.siblings).siblings
    kept = tuple(
        s for s in union if not any(t.dot != s.dot and t.past.covers(s.dot) for t in union)
    )
    suspects = sum(1 for s in kept for t in kept if t is not s and t.past.pruned)
    return SyncResult(Object(kept), suspects)


@st.composite
def wide_sibling_st(draw: st.DrawFn) -> Sibling:
    """Siblings with pasts that often cover each other (few actors, small counters),
    pruned or not."""
    actors = st.sampled_from(["a", "b", "c", "d", "e"])
    counters = draw(st.dictionaries(actors, st.integers(1, 8), max_size=5))
    return Sibling(
        Dot(draw(actors), draw(st.integers(1, 8))),
        VClock.of(counters)
        if not draw(st.booleans())
        else VClock({k: (c, 0) for k, c in counters.items()}, pruned=draw(st.booleans())),
        draw(st.one_of(st.none(), st.binary(max_size=2))),
        CT,
        draw(st.integers(0, 3)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wide_sibling_st(), max_size=12), st.lists(wide_sibling_st(), max_size=12))
@example(
    # the top counter for an actor held by the sibling itself: the second highest decides
    [Sibling(Dot("a", 2), VClock.of({"a": 5}), b"x", CT, 0)],
    [
        Sibling(Dot("b", 1), VClock.of({"a": 2}), b"y", CT, 0),
        Sibling(Dot("c", 1), VClock.of({"a": 1}), b"z", CT, 0),
    ],
)
@example(
    # two siblings' pasts tie for the top counter of an actor
    [Sibling(Dot("a", 3), VClock.of({"a": 3}), b"x", CT, 0)],
    [
        Sibling(Dot("b", 1), VClock.of({"a": 3}), b"y", CT, 0),
        Sibling(Dot("c", 1), VClock(), b"z", CT, 0),
    ],
)
def test_linear_sync_equals_the_quadratic_definition(xs: list[Sibling], ys: list[Sibling]) -> None:
    a, b = Object.of(xs), Object.of(ys)
    fast, slow = sync(a, b), quadratic_sync(a, b)
    assert siblings_equal(fast.obj, slow.obj)
    assert [s.dot for s in fast.obj.siblings] == [s.dot for s in slow.obj.siblings]
    assert fast.prune_suspects == slow.prune_suspects


def test_merging_many_siblings_is_not_quadratic() -> None:
    """Two replicas of a key with 3000 concurrent siblings each (blind writers): the
    merge takes a few hundred thousand steps at most, not 36 million comparisons."""
    import time

    left = Object.of(sib("a", i, b"v") for i in range(1, 3001))
    right = Object.of(sib("b", i, b"v") for i in range(1, 3001))
    start = time.perf_counter()
    merged = sync(left, right).obj
    took = time.perf_counter() - start
    assert len(merged.siblings) == 6000
    assert took < 0.5, took  # quadratic: about 36M covers() calls, tens of seconds
