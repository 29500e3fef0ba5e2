"""Gossip converges in O(log S) rounds (pure simulation, seeded randomness)."""

from __future__ import annotations

import math
import random

import pytest

from dynamo_node.core.gossip import exchange, pick_peer, simulate
from dynamo_node.core.membership import ClusterState, Member, commit, plan


def _cluster(size: int) -> ClusterState:
    state = ClusterState.founding("sim", Member("s0", "h:0", "h:1"), 64, 3)
    for i in range(1, size):
        state = state.with_member(Member(f"s{i}", f"h:{2 * i}", f"h:{2 * i + 1}"))
    staged = plan(state, [f"s{i}" for i in range(1, size)], [])
    state = commit(state, staged, "s0")
    for t in state.pending_transfers():
        state = state.with_done(t.partition, t.target)
    return state.settle()


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_a_change_reaches_everyone_in_log_rounds(size: int) -> None:
    base = _cluster(size)
    # one node learns of a new member; everyone else has the old state
    changed = base.with_member(Member("newcomer", "h:9999", "h:9998"))
    worst = 0
    for seed in range(20):
        states = {f"s{i}": base for i in range(size)}
        states["s0"] = changed
        rounds = simulate(states, random.Random(seed))
        assert all(s == changed.merge(base) for s in states.values())
        worst = max(worst, rounds)
    # push-pull spreads a rumour in about log2(S) + ln(S) rounds; allow a margin
    assert worst <= math.ceil(2 * math.log2(size)) + 2, worst


def test_concurrent_changes_merge_to_one_state() -> None:
    base = _cluster(16)
    states = {f"s{i}": base for i in range(16)}
    for i in range(0, 16, 4):
        states[f"s{i}"] = base.with_member(Member(f"x{i}", f"h:{7000 + i}", f"h:{8000 + i}"))
    simulate(states, random.Random(7))
    final = states["s0"]
    assert {f"x{i}" for i in range(0, 16, 4)} <= set(final.members)


def test_pick_peer_never_picks_me() -> None:
    rng = random.Random(1)
    assert pick_peer("a", ["a"], rng) is None
    assert {pick_peer("a", ["a", "b", "c"], rng) for _ in range(100)} == {"b", "c"}


def test_exchange_is_symmetric() -> None:
    base = _cluster(4)
    a = base.with_member(Member("p", "h:1", "h:2"))
    b = base.with_member(Member("q", "h:3", "h:4"))
    assert exchange(a, b) == exchange(b, a)
