"""Local failure detection from gossip heartbeats (pure; time is passed in).

Choice: a heartbeat timeout, not phi-accrual. Every node increments its own heartbeat
counter each gossip round; a peer is `up` while its counter was seen to grow (directly
or through anyone's gossip) within `timeout_s`. With a 1 s gossip interval and a few
nodes, fresh heartbeats arrive every 1-2 s, so the default 3.5 s timeout reports a
SIGKILLed or SIGSTOPped node down within 5 s and rarely flaps. A failed call marks a
peer down at once (`unreachable`) until its heartbeat grows again, so coordinators stop
choosing it without waiting for the timeout. Down is not departure: the ring is not
touched here.
"""

from __future__ import annotations

from collections.abc import Mapping


class FailureDetector:
    def __init__(self, me: str, timeout_s: float) -> None:
        self.me = me
        self.timeout_s = timeout_s
        self.beats: dict[str, int] = {me: 0}
        self._seen: dict[str, float] = {}
        self._suspect: dict[str, int] = {}

    def tick(self) -> int:
        """Advance this node's own heartbeat (once per gossip round)."""
        self.beats[self.me] = self.beats.get(self.me, 0) + 1
        return self.beats[self.me]

    def observe(self, beats: Mapping[str, int], now: float) -> None:
        """Merge a peer's heartbeat table; a grown counter means that node is alive."""
        for node, beat in beats.items():
            if node == self.me or not isinstance(beat, int):
                continue
            if beat > self.beats.get(node, -1):
                self.beats[node] = beat
                self._seen[node] = now
                self._suspect.pop(node, None)

    def heard(self, node: str, now: float) -> None:
        """Direct evidence (a reply, an incoming message)."""
        if node != self.me:
            self._seen[node] = now
            self._suspect.pop(node, None)

    def unreachable(self, node: str) -> None:
        if node != self.me:
            self._suspect[node] = self.beats.get(node, 0)

    def is_up(self, node: str, now: float) -> bool:
        if node == self.me:
            return True
        if node in self._suspect:
            return False
        seen = self._seen.get(node)
        return seen is not None and now - seen <= self.timeout_s

    def forget(self, node: str) -> None:
        self.beats.pop(node, None)
        self._seen.pop(node, None)
        self._suspect.pop(node, None)
