"""Sibling sets with dotted version vectors: what one stored object is (pure).

An `Object` is the set of concurrent versions (`Sibling`s) of one key. Each sibling has
a unique `dot` (the write event that created it) and the causal `past` the writer had
seen (the client's context). Sibling `s` is obsolete when another sibling's past covers
`s.dot`, or when a put's context covers it.

Operations and their algebra (property-tested in tests/node/core/test_versions.py):
- `update(obj, context, dot, ...)`: a put. It removes exactly the siblings whose dots the
  context covers and adds one new sibling; with an empty context it removes nothing.
- `sync(a, b)`: replica merge. Commutative and idempotent, and associative as long as
  no clock was pruned; the result keeps every sibling not obsoleted by another one (no
  acknowledged write is dropped). Pruning (only of entries older than a day by default)
  makes coverage non-transitive: an ancestor may then come back as a sibling, depending
  on merge order, and `prune_suspects` reports it; it is never silently dropped.
- Tombstones are siblings with `value is None`; `visible()` hides them next to live
  siblings.
- Last-write-wins mode keeps only the newest sibling by (timestamp, dot).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from dynamo_node.core.vclock import Dot, VClock, join


class Sibling(NamedTuple):
    """One version (a named tuple: immutable, and cheap to build on every decode)."""

    dot: Dot
    past: VClock
    value: bytes | None
    content_type: str
    timestamp_ms: int

    @property
    def tombstone(self) -> bool:
        return self.value is None

    def clock(self) -> VClock:
        return self.past.add(self.dot, self.timestamp_ms)


def _rank(
    s: Sibling,
) -> tuple[int, str, int, int, bytes, str, tuple[tuple[str, int, int], ...], bool]:
    """A total order on siblings (used only to pick deterministically)."""
    return (
        s.timestamp_ms,
        s.dot.actor,
        s.dot.counter,
        0 if s.value is None else 1,
        s.value or b"",
        s.content_type,
        tuple(sorted(s.past.items())),
        s.past.pruned,
    )


@dataclass(frozen=True, slots=True)
class Object:
    """All current versions of one key, ordered by dot (a canonical form)."""

    siblings: tuple[Sibling, ...] = ()
    #: its encoding, kept by `codec.encode_object` once computed (the object is immutable)
    wire_cache: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, siblings: Iterable[Sibling]) -> Object:
        by_dot: dict[Dot, Sibling] = {}
        for s in siblings:
            seen = by_dot.get(s.dot)
            # a dot is unique cluster-wide; if two copies ever differ pick one
            # deterministically so that merging stays commutative
            if seen is None or _rank(s) > _rank(seen):
                by_dot[s.dot] = s
        return cls(tuple(by_dot[d] for d in sorted(by_dot)))

    @property
    def empty(self) -> bool:
        return not self.siblings

    def context(self) -> VClock:
        """One clock covering every sibling: a put with it resolves them all."""
        if len(self.siblings) == 1:
            return self.siblings[0].clock()
        return join(s.clock() for s in self.siblings)

    def visible(self) -> tuple[Sibling, ...]:
        """Live siblings; tombstones are shown only when nothing else is left (as 404)."""
        return tuple(s for s in self.siblings if not s.tombstone)

    def all_tombstones(self) -> bool:
        return bool(self.siblings) and all(s.tombstone for s in self.siblings)

    def max_timestamp(self) -> int:
        return max((s.timestamp_ms for s in self.siblings), default=0)


@dataclass(frozen=True, slots=True)
class SyncResult:
    obj: Object
    #: siblings kept beside a sibling whose past was pruned (which cannot prove them
    #: concurrent): they may be ancestors resurrected by pruning. Surfaced (metric +
    #: log), never dropped.
    prune_suspects: int = 0


def _obsolete(s: Sibling, others: Iterable[Sibling]) -> bool:
    return any(t.dot != s.dot and t.past.covers(s.dot) for t in others)


def _not_obsolete(union: tuple[Sibling, ...]) -> tuple[Sibling, ...]:
    """The siblings of `union` (distinct dots, as from `Object.of`) whose dot no other
    sibling's past covers: `s for s in union if not _obsolete(s, union)`, in time
    linear in the size of the pasts instead of quadratic in the number of siblings.

    Per actor it keeps the highest counter any past has for it, which sibling holds
    it, and the second highest: the highest counter among the *other* siblings' pasts
    is then one dict lookup per sibling."""
    if len(union) <= 2:
        return tuple(s for s in union if not _obsolete(s, union))
    #: actor -> [highest counter, index of the sibling whose past has it, second highest]
    best: dict[str, list[int]] = {}
    for i, t in enumerate(union):
        for actor, counter, _ in t.past.items():
            entry = best.get(actor)
            if entry is None:
                best[actor] = [counter, i, 0]
            elif counter > entry[0]:
                entry[2] = entry[0]
                entry[0] = counter
                entry[1] = i
            elif counter > entry[2]:
                entry[2] = counter
    kept = []
    for i, s in enumerate(union):
        actor, counter = s.dot
        if counter < 1:
            # a past without the actor covers it too (never made by a node, but exact)
            if not _obsolete(s, union):
                kept.append(s)
            continue
        entry = best.get(actor)
        if entry is None or (entry[2] if entry[1] == i else entry[0]) < counter:
            kept.append(s)
    return tuple(kept)


def _lww(siblings: Iterable[Sibling]) -> tuple[Sibling, ...]:
    best = max(siblings, key=_rank, default=None)
    return () if best is None else (best,)


def sync(a: Object, b: Object, *, lww: bool = False) -> SyncResult:
    """Merge two replicas' versions of the same key."""
    if not lww and len(a.siblings) == 1 and len(b.siblings) == 1:
        # the common case, one version on each side: whichever has seen the other wins
        # (what the general path below computes, without building the union)
        x, y = a.siblings[0], b.siblings[0]
        if x.dot != y.dot:
            x_seen, y_seen = y.past.covers(x.dot), x.past.covers(y.dot)
            if x_seen and not y_seen:
                return SyncResult(b)
            if y_seen and not x_seen:
                return SyncResult(a)
    union = Object.of(a.siblings + b.siblings).siblings
    if lww:
        return SyncResult(Object(_lww(union)))
    kept = _not_obsolete(union)
    # a pruned past cannot prove that a sibling it does not cover is concurrent rather
    # than an ancestor: the pruned entry may have been re-added lower by a merge with an
    # older clock, and wall clocks can be skewed, so neither a named actor nor a
    # timestamp rules a suspect out. Counted per (sibling, other pruned sibling) pair:
    # each of the `pruned` ones is a suspect for every other kept sibling
    pruned = sum(1 for t in kept if t.past.pruned)
    suspects = pruned * (len(kept) - 1) if pruned else 0
    # the result is often one side as it is (a newer version arriving, or nothing new):
    # return that object, so it keeps its encoding and compares by identity
    if _same(kept, b.siblings):
        return SyncResult(b, suspects)
    if _same(kept, a.siblings):
        return SyncResult(a, suspects)
    return SyncResult(Object(kept), suspects)


def _same(x: tuple[Sibling, ...], y: tuple[Sibling, ...]) -> bool:
    """The very same sibling objects (equality would ignore clock timestamps)."""
    return len(x) == len(y) and all(s is t for s, t in zip(x, y, strict=True))


def sync_all(objects: Iterable[Object], *, lww: bool = False) -> SyncResult:
    out = Object()
    suspects = 0
    for obj in objects:
        res = sync(out, obj, lww=lww)
        out, suspects = res.obj, max(suspects, res.prune_suspects)
    return SyncResult(out, suspects)


def next_counter(obj: Object, context: VClock, actor: str, floor: int = 0) -> int:
    """A fresh counter for `actor`: above anything this key or the context has seen,
    and above `floor` (the node's persistent, monotonic event counter)."""
    return max(obj.context().counter(actor), context.counter(actor), floor) + 1


def update(
    obj: Object,
    context: VClock,
    dot: Dot,
    value: bytes | None,
    content_type: str,
    now_ms: int,
    *,
    lww: bool = False,
    max_entries: int = 10,
    prune_min_age_ms: int = 86_400_000,
) -> Object:
    """Apply a put (or a delete when `value is None`) coordinated as `dot`.

    The new sibling supersedes exactly the siblings the context covers."""
    if lww:
        # the session-store mode: the newest write replaces everything this replica has
        past = obj.context().merge(context).prune(max_entries, now_ms, prune_min_age_ms)
        return Object((Sibling(dot, past, value, content_type, now_ms),))
    past = context.prune(max_entries, now_ms, prune_min_age_ms)
    kept = [s for s in obj.siblings if not context.covers(s.dot)]
    return Object.of([*kept, Sibling(dot, past, value, content_type, now_ms)])


def is_newer_or_equal(mine: Object, theirs: Object) -> bool:
    """True when syncing `theirs` into `mine` would change nothing."""
    return sync(mine, theirs).obj == mine
