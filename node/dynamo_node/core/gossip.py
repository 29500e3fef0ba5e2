"""Gossip rounds (pure): whom to talk to and what an exchange yields.

Push-pull anti-entropy of the cluster state (Demers et al.; the paper §4.8): each round
a node picks one random live peer, both merge their states (`ClusterState.merge`,
commutative/associative/idempotent) and both keep the result. A change therefore
reaches all S nodes in O(log S) rounds; tests/node/core/test_gossip.py simulates S = 8..64
with seeded randomness. Randomness is passed in, never global.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dynamo_node.core.membership import ClusterState


def pick_peer(me: str, candidates: Sequence[str], rng: random.Random) -> str | None:
    """A uniformly random peer other than me (None when alone)."""
    others = [c for c in candidates if c != me]
    return rng.choice(others) if others else None


def exchange(mine: ClusterState, theirs: ClusterState) -> ClusterState:
    """The state both sides hold after a push-pull exchange."""
    return mine.merge(theirs)


def simulate(states: dict[str, ClusterState], rng: random.Random, max_rounds: int = 1000) -> int:
    """Run synchronous gossip rounds until every node holds the same state; returns the
    number of rounds. Every node starts one exchange per round, as the nodes do."""
    nodes = sorted(states)
    for round_no in range(1, max_rounds + 1):
        for node in nodes:
            peer = pick_peer(node, nodes, rng)
            if peer is None:
                continue
            merged = exchange(states[node], states[peer])
            states[node] = states[peer] = merged
        first = states[nodes[0]]
        if all(states[n] == first for n in nodes):
            return round_no
    raise RuntimeError(f"gossip did not converge in {max_rounds} rounds")
