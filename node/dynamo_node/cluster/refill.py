"""Refilling a replacement: a ring member that came back with an empty data directory.

Such a node (`ClusterView.replacing`) counts towards no quorum: it answers no replica read,
and every node's placement treats it as down, so reads and writes use the other
replicas and fallbacks (with hints) meanwhile. This loop pulls each partition it
replicates from every other replica of that partition, with the anti-entropy exchange
(only what differs moves, in batches, both ways), and records each partition done in
the node's metadata, so a restart resumes where it stopped. A partition waits while
another of its replicas is down or itself being replaced: with W below N an
acknowledged write may live on that replica only. When every partition is done the
node clears its flag and rejoins the quorums.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dynamo_node.cluster.view import ClusterView

#: an anti-entropy exchange of one partition with one peer: the keys it repaired
Exchange = Callable[[int, str], Awaitable[int]]

log = logging.getLogger("dynamo.refill")

#: how often the loop looks for work (and retries partitions that had to wait)
POLL_S = 0.5


class Refill:
    def __init__(self, view: ClusterView, exchange: Exchange, announce: Callable[[], None]) -> None:
        self.view = view
        self.exchange = exchange
        #: send the state to the members soon (once this node serves again)
        self.announce = announce
        self.started: float | None = None
        self.keys_repaired = 0
        #: partitions that wait for a down (or replacing) replica, with its name
        self.waiting: dict[int, str] = {}

    def progress(self) -> dict[str, Any]:
        view = self.view
        total = len(view.state.replicas_of(view.node_id)) if view.state else 0
        return {
            "partitions_done": len(view.refill_done),
            "partitions_total": total,
            "keys_repaired": self.keys_repaired,
            "waiting_for": sorted(set(self.waiting.values())),
        }

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            if not self.view.replacing or self.view.state is None:
                continue
            try:
                await self.pass_once()
            except Exception:
                log.exception("refill pass failed; retrying")

    async def pass_once(self) -> None:
        view = self.view
        state = view.require_state()
        me = view.node_id
        if self.started is None:
            self.started = time.monotonic()
            log.info(
                "this node's data directory is new but the ring lists it: refilling its "
                "%d partitions from the other replicas before it counts towards quorums",
                len(state.replicas_of(me)),
            )
        self.waiting.clear()
        for p in state.replicas_of(me):
            if p in view.refill_done:
                continue
            others = [r for r in state.preference_list(p) if r != me]
            blocked = next(
                (
                    r
                    for r in others
                    if not view.is_up(r) or (r in state.members and state.members[r].replacing)
                ),
                None,
            )
            if blocked is not None:
                self.waiting[p] = blocked
                continue
            for peer in others:
                self.keys_repaired += await self.exchange(p, peer)
            view.partition_refilled(p)
            await asyncio.sleep(0)
        if not self.waiting and all(p in view.refill_done for p in state.replicas_of(me)):
            elapsed = time.monotonic() - self.started
            log.info(
                "refilled %d partitions (%d keys) in %.1f s: counting towards quorums again",
                len(view.refill_done),
                self.keys_repaired,
                elapsed,
            )
            view.finish_replacing()
            self.announce()
