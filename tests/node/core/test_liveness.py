"""FailureDetector: heartbeat-timeout failure detection with an injected clock."""

from __future__ import annotations

from dynamo_node.core.liveness import FailureDetector

TIMEOUT = 3.5


def detector() -> FailureDetector:
    return FailureDetector("me", TIMEOUT)


def test_unknown_node_is_down() -> None:
    fd = detector()
    assert not fd.is_up("b", 0.0)
    assert not fd.is_up("b", 1000.0)


def test_up_after_heartbeat_growth() -> None:
    fd = detector()
    fd.observe({"b": 1}, now=10.0)
    assert fd.is_up("b", 10.0)
    assert fd.beats["b"] == 1
    fd.observe({"b": 5, "c": 2}, now=11.0)
    assert fd.is_up("b", 11.0) and fd.is_up("c", 11.0)
    assert fd.beats["b"] == 5


def test_down_after_timeout() -> None:
    fd = detector()
    fd.observe({"b": 1}, now=10.0)
    assert fd.is_up("b", 10.0 + TIMEOUT)  # the boundary still counts as up
    assert not fd.is_up("b", 10.0 + TIMEOUT + 0.01)
    assert not fd.is_up("b", 100.0)


def test_a_repeated_heartbeat_is_not_evidence() -> None:
    fd = detector()
    fd.observe({"b": 3}, now=0.0)
    fd.observe({"b": 3}, now=3.0)  # relayed old news: same counter
    fd.observe({"b": 2}, now=3.0)  # older news
    assert fd.beats["b"] == 3
    assert not fd.is_up("b", 0.0 + TIMEOUT + 0.1)
    fd.observe({"b": 4}, now=5.0)
    assert fd.is_up("b", 5.0 + TIMEOUT)


def test_heartbeats_keep_a_node_up_over_time() -> None:
    fd = detector()
    now = 0.0
    for beat in range(1, 50):
        now += 1.0
        fd.observe({"b": beat}, now)
        assert fd.is_up("b", now + 2.0)
    assert not fd.is_up("b", now + TIMEOUT + 1)


def test_unreachable_marks_down_until_the_heartbeat_grows() -> None:
    fd = detector()
    fd.observe({"b": 7}, now=10.0)
    assert fd.is_up("b", 10.0)
    fd.unreachable("b")
    assert not fd.is_up("b", 10.0)  # at once, without waiting for the timeout
    fd.observe({"b": 7}, now=10.5)  # the same heartbeat again: still down
    assert not fd.is_up("b", 10.5)
    fd.observe({"b": 6}, now=10.6)
    assert not fd.is_up("b", 10.6)
    fd.observe({"b": 8}, now=11.0)  # it grew: the node is alive
    assert fd.is_up("b", 11.0)
    assert not fd.is_up("b", 11.0 + TIMEOUT + 0.1)


def test_unreachable_unknown_node_stays_down_until_a_heartbeat() -> None:
    fd = detector()
    fd.unreachable("c")
    assert not fd.is_up("c", 0.0)
    fd.observe({"c": 1}, now=1.0)
    assert fd.is_up("c", 1.0)


def test_direct_evidence() -> None:
    fd = detector()
    fd.heard("b", 5.0)
    assert fd.is_up("b", 5.0) and not fd.is_up("b", 5.0 + TIMEOUT + 0.1)
    fd.unreachable("b")
    assert not fd.is_up("b", 5.0)
    fd.heard("b", 6.0)  # a reply from it clears the suspicion
    assert fd.is_up("b", 6.0)


def test_self_is_always_up() -> None:
    fd = detector()
    assert fd.is_up("me", 0.0)
    assert fd.is_up("me", 1e9)
    fd.unreachable("me")
    assert fd.is_up("me", 1e9)
    fd.heard("me", 1.0)
    assert fd.is_up("me", 1e9)
    # gossip never overwrites my own counter
    fd.observe({"me": 1000}, now=1.0)
    assert fd.beats["me"] == 0
    assert fd.tick() == 1 and fd.tick() == 2
    assert fd.beats["me"] == 2


def test_garbage_heartbeats_are_ignored() -> None:
    fd = detector()
    fd.observe({"b": "7", "c": None, "d": 1.5}, now=1.0)  # type: ignore[dict-item]
    assert not fd.is_up("b", 1.0) and not fd.is_up("c", 1.0) and not fd.is_up("d", 1.0)
    assert set(fd.beats) == {"me"}


def test_forget() -> None:
    fd = detector()
    fd.observe({"b": 9}, now=1.0)
    fd.unreachable("b")
    fd.forget("b")
    assert "b" not in fd.beats
    assert not fd.is_up("b", 1.0)
    fd.observe({"b": 1}, now=2.0)  # a restarted node counts from scratch again
    assert fd.is_up("b", 2.0)
