"""Hinted handoff, the delivering side: hints this node keeps for replicas that were
down go back to them once they are up again.

Every `hint_delivery_interval_s` the hint store delivers a batch (`HintStore.deliver_once`)
to targets that are up, as `merge` calls. A hint whose target has left the cluster (or is
being removed) will never be delivered there: its version goes to the key's current
replicas instead, this node's own replica directly and the others as new hints.
"""

from __future__ import annotations

import asyncio
import logging

from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.codec import decode_object
from dynamo_node.core.config import NodeConfig
from dynamo_node.net.transport import Transport
from dynamo_node.store.hints import HintStore
from dynamo_node.store.replica import Replica

log = logging.getLogger("dynamo.node")


class HintDelivery:
    def __init__(
        self,
        view: ClusterView,
        hints: HintStore,
        replica: Replica,
        transport: Transport,
        config: NodeConfig,
    ) -> None:
        self.view = view
        self.hints = hints
        self.replica = replica
        self.transport = transport
        self.config = config

    def deliverable(self, target: str) -> bool:
        return self.view.is_up(target) or self.view.gone(target)

    async def deliver(self, target: str, skey: bytes, encoded: bytes) -> bool:
        view = self.view
        if view.gone(target):
            # its target will never come back: the key's replicas now get the version
            # (as hints of their own, delivered like any other)
            obj = decode_object(encoded)
            for node in view.replicates(skey):
                if node == view.node_id:
                    self.replica.apply_merge(skey, obj)
                elif not view.gone(node):
                    self.hints.store(skey, node, obj)
            return True
        await self.transport.call(
            target, "merge", [skey, encoded, None], self.config.request_timeout_ms / 1000
        )
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.hint_delivery_interval_s)
            if not self.config.hinted_handoff or not self.hints.pending:
                continue
            try:
                done = await self.hints.deliver_once(
                    self.deliver, self.deliverable, self.config.hint_batch
                )
                if done:
                    log.info("delivered %d hint(s); %d pending", done, self.hints.pending)
            except Exception:
                log.exception("hint delivery failed")
