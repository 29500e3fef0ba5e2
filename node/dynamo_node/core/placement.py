"""Placement: where a key's replicas are right now, a pure function of the cluster state
and of which nodes serve.

As riak_core's `riak_core_apl`, placement is computed, never stored: `lists(state, p)`
gives a partition's preference list (N distinct nodes of the ring walk), the rest of the
walk (the candidate fallbacks, in order) and the nodes gaining the partition in a
transfer; `place(lists, serving)` turns them into the sloppy-quorum targets of one
request: each serving replica itself, each other one stood in for by the next serving
node of the walk (a fallback, which keeps a hint for it), or left unplaced when no node
can. `Placements` caches the lists per partition for one cluster state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dynamo_node.core.membership import ClusterState
from dynamo_node.core.ring import partition_of


@dataclass(frozen=True, slots=True)
class Lists:
    """A partition's nodes in one cluster state."""

    #: the preference list: N distinct nodes (or fewer in a small cluster)
    primaries: tuple[str, ...]
    #: the rest of the ring walk, in order: the candidate fallbacks
    rest: tuple[str, ...]
    #: nodes receiving the partition in a transfer: they get writes too
    gaining: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a key lives right now, as this node sees the cluster."""

    #: distinct nodes of the key's preference list (N, or fewer in a small cluster)
    n: int
    #: sloppy targets: (node, None) for a live replica, (fallback, replica) when down
    targets: tuple[tuple[str, str | None], ...]
    #: nodes receiving the partition in a transfer: they get writes too
    pending: tuple[str, ...] = ()
    #: further live nodes of the walk, in order, for replicas that fail mid-request
    fallbacks: tuple[str, ...] = ()
    #: down replicas no live node could stand in for: the coordinator keeps their hints
    unplaced: tuple[str, ...] = ()


def lists(state: ClusterState, p: int) -> Lists:
    primaries = tuple(state.preference_list(p))
    rest = tuple(node for node in state.walk(p) if node not in primaries)
    return Lists(primaries, rest, tuple(state.gaining(p)))


def place(of: Lists, serving: Callable[[str], bool]) -> Placement:
    """The targets of one request: every serving primary, a fallback from the walk for
    each other one (the first serving node not used yet), the remaining serving nodes of
    the walk as spares."""
    targets: list[tuple[str, str | None]] = []
    unplaced: list[str] = []
    fallbacks = list(of.rest)
    for node in of.primaries:
        if serving(node):
            targets.append((node, None))
            continue
        while fallbacks:
            candidate = fallbacks.pop(0)
            if serving(candidate):
                targets.append((candidate, node))
                break
        else:
            unplaced.append(node)
    return Placement(
        len(of.primaries),
        tuple(targets),
        of.gaining,
        tuple(node for node in fallbacks if serving(node)),
        tuple(unplaced),
    )


class Placements:
    """`lists` per partition, cached for one cluster state (the cache is dropped when
    the state object changes)."""

    def __init__(self) -> None:
        self._state: ClusterState | None = None
        self._cache: dict[int, Lists] = {}

    def of(self, state: ClusterState, p: int) -> Lists:
        if state is not self._state:
            self._state = state
            self._cache = {}
        cached = self._cache.get(p)
        if cached is None:
            cached = self._cache[p] = lists(state, p)
        return cached

    def of_hash(self, state: ClusterState, h: int) -> Lists:
        return self.of(state, partition_of(h, state.partitions))
