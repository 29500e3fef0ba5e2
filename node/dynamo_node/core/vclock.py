"""Vector clocks and dots: the causality algebra of dynamokv (pure).

A `VClock` maps an actor (a node id) to the highest event counter of that actor it has
seen, plus the wall-clock time of that event (used only to choose what to prune).
A `Dot` is one event: (actor, counter). Dotted version vectors (Riak 2.0) attach one dot
to each sibling and keep the sibling's causal past as a separate clock; see `versions`.

Invariants:
- `merge` is the pointwise maximum: commutative, associative, idempotent.
- `covers(dot)` ⇔ the clock has seen that event.
- `prune` only removes entries (never raises a counter) and marks the clock `pruned`, so
  a pruned clock can only *under*-state causality (producing a visible sibling), never
  over-state it (which would silently drop data).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple


class Dot(NamedTuple):
    """One event: the `counter`-th event of `actor` (a named tuple: built, hashed and
    ordered in C, it is made for every version decoded)."""

    actor: str
    counter: int


class VClock:
    """An immutable vector clock: actor -> (counter, timestamp_ms)."""

    __slots__ = ("_entries", "pruned")

    def __init__(
        self, entries: Mapping[str, tuple[int, int]] | None = None, *, pruned: bool = False
    ) -> None:
        # kept sorted by actor: a canonical form (equal clocks encode to equal bytes)
        self._entries: dict[str, tuple[int, int]] = dict(sorted(entries.items())) if entries else {}
        self.pruned = pruned

    @classmethod
    def _sorted(cls, entries: dict[str, tuple[int, int]], pruned: bool) -> VClock:
        """A clock over `entries` that are already sorted by actor (taken, not copied)."""
        clock = cls.__new__(cls)
        clock._entries = entries
        clock.pruned = pruned
        return clock

    @classmethod
    def of(cls, counters: Mapping[str, int], timestamp_ms: int = 0) -> VClock:
        return cls({a: (c, timestamp_ms) for a, c in counters.items() if c > 0})

    # --- queries -----------------------------------------------------------------
    def counter(self, actor: str) -> int:
        entry = self._entries.get(actor)
        return entry[0] if entry else 0

    def timestamp(self, actor: str) -> int:
        entry = self._entries.get(actor)
        return entry[1] if entry else 0

    def covers(self, dot: Dot) -> bool:
        return self.counter(dot.actor) >= dot.counter

    def descends(self, other: VClock) -> bool:
        """True when self has seen every event other has seen (self >= other)."""
        return all(self.counter(a) >= c for a, (c, _) in other._entries.items())

    def concurrent(self, other: VClock) -> bool:
        return not self.descends(other) and not other.descends(self)

    def actors(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self) -> Iterator[tuple[str, int, int]]:
        for actor, (counter, ts) in self._entries.items():
            yield actor, counter, ts

    def counters(self) -> dict[str, int]:
        return {a: c for a, (c, _) in self._entries.items()}

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VClock):
            return NotImplemented
        if self._entries == other._entries:  # the common case, without building dicts
            return True
        return self.counters() == other.counters()

    def __hash__(self) -> int:
        return hash(frozenset(self.counters().items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{a}:{c}" for a, c in sorted(self.counters().items()))
        return f"VClock({{{inner}}}{', pruned' if self.pruned else ''})"

    # --- algebra -------------------------------------------------------------------
    def merge(self, other: VClock) -> VClock:
        """Pointwise maximum (the join of the two histories)."""
        if not other._entries:
            return self if not other.pruned or self.pruned else VClock(self._entries, pruned=True)
        if not self._entries:
            return other if other.pruned or not self.pruned else VClock(other._entries, pruned=True)
        out = dict(self._entries)
        added = False
        for actor, entry in other._entries.items():
            mine = out.get(actor)
            if mine is None:
                added = True
                out[actor] = entry
            elif entry[0] > mine[0] or (entry[0] == mine[0] and entry[1] > mine[1]):
                out[actor] = entry
        if added:  # new actors were appended: restore the canonical order
            out = dict(sorted(out.items()))
        return VClock._sorted(out, self.pruned or other.pruned)

    def add(self, dot: Dot, timestamp_ms: int) -> VClock:
        """This clock with `dot` seen."""
        if self.covers(dot):
            return self
        out = dict(self._entries)
        known = dot.actor in out
        out[dot.actor] = (dot.counter, timestamp_ms)
        if not known and len(out) > 1 and dot.actor < next(reversed(self._entries)):
            out = dict(sorted(out.items()))
        return VClock._sorted(out, self.pruned)

    def prune(self, max_entries: int, now_ms: int, min_age_ms: int) -> VClock:
        """Drop the oldest entries beyond `max_entries`, but never one younger than
        `min_age_ms` (all replicas have long converged on anything older)."""
        if len(self._entries) <= max_entries:
            return self
        by_age = sorted(self._entries.items(), key=lambda kv: (kv[1][1], kv[0]))
        out = dict(self._entries)
        for actor, (_, ts) in by_age:
            if len(out) <= max_entries or now_ms - ts < min_age_ms:
                break
            del out[actor]
        if len(out) == len(self._entries):
            return self
        return VClock(out, pruned=True)


def join(clocks: Iterable[VClock]) -> VClock:
    out = VClock()
    for clock in clocks:
        out = out.merge(clock)
    return out
