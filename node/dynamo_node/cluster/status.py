"""What the admin API and the metrics report about a node: its status document, the
ring, the replication requests really get, and the counters of its parts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from dynamo_node.cluster.antientropy import AntiEntropy
from dynamo_node.cluster.claimant import Claimant
from dynamo_node.cluster.refill import Refill
from dynamo_node.cluster.transfer import Transfers
from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.quorum import effective
from dynamo_node.store.hints import HintStore
from dynamo_node.store.replica import Replica


class StatusReport:
    def __init__(
        self,
        config: NodeConfig,
        view: ClusterView,
        hints: HintStore,
        replica: Replica,
        transfers: Transfers,
        refill: Refill,
        claimant: Claimant,
        anti_entropy: AntiEntropy,
        storage_failure: Callable[[], str | None],
    ) -> None:
        self.config = config
        self.view = view
        self.hints = hints
        self.replica = replica
        self.transfers = transfers
        self.refill = refill
        self.claimant = claimant
        self.anti_entropy = anti_entropy
        self.storage_failure = storage_failure
        self.started_at = time.time()

    def status(self) -> dict[str, Any]:
        view = self.view
        state = view.state
        members = []
        if state is not None:
            members = [
                {
                    "node": m.node,
                    "address": m.address,
                    "state": view.member_state(m),
                    "partitions": len(state.owned_by(m.node)),
                }
                for m in sorted(state.members.values(), key=lambda m: m.node)
            ]
        transfers = []
        if state is not None:
            for t in state.pending_transfers():
                prog = self.transfers.progress.get((t.partition, t.target))
                transfers.append(
                    {
                        "partition": t.partition,
                        "from": t.source,
                        "to": t.target,
                        "keys_done": prog.keys_done if prog else 0,
                        "keys_total": prog.keys_total if prog else 0,
                    }
                )
        me = state.members.get(view.node_id) if state else None
        return {
            "node": view.node_id,
            "address": view.member.address,
            "peer_address": view.member.peer,
            "cluster": state.cluster if state else None,
            "foreign_cluster": view.foreign_cluster,
            "refill": self.refill.progress() if view.replacing else None,
            "storage_failure": self.storage_failure(),
            "state": view.member_state(me) if me else "joining",
            "ring_version": state.version if state else 0,
            "members": members,
            "partitions": state.owned_by(view.node_id) if state else [],
            "replicated_partitions": len(state.replicas_of(view.node_id)) if state else 0,
            "hints_pending": self.hints.pending,
            "transfers": transfers,
            "transfers_total": len(state.transfers()) if state else 0,
            "transfer_keys_sent": self.transfers.keys_sent,
            "last_anti_entropy": _rfc3339(self.anti_entropy.last_run),
            "n": state.n if state else self.config.n,
            "r": self.config.r,
            "w": self.config.w,
            "effective": self.effective_replication(),
            "partitions_total": state.partitions if state else self.config.partitions,
            "staged": self.claimant.staged(),
            "durability": self.config.durability,
            "uptime_s": round(time.time() - self.started_at, 3),
            "pid": os.getpid(),
        }

    def effective_replication(self) -> dict[str, int]:
        """The N, R and W requests really get by default: with fewer ring members than
        N a preference list has only that many nodes, and the coordinator clamps the
        default R and W to it (`quorum.effective`)."""
        n = self.view.replicas_per_key()
        if n is None:
            n = self.config.n
        return {
            "n": n,
            "r": effective(None, self.config.r, n),
            "w": effective(None, self.config.w, n),
        }

    def ring_view(self) -> dict[str, Any]:
        state = self.view.require_state()
        return {
            "ring_version": state.version,
            "partitions": [
                {"id": p, "owner": state.owner(p), "preference_list": state.preference_list(p)}
                for p in range(state.partitions)
            ],
        }

    def counters(self) -> dict[str, float]:
        return {
            **self.anti_entropy.counters(),
            "transfer_keys_sent_total": self.transfers.keys_sent,
            "keys_merged_in_bulk_total": self.transfers.keys_received,
            "siblings_warned_total": self.replica.stats.siblings_warned,
            "siblings_refused_total": self.replica.stats.siblings_refused,
            "objects_too_large_total": self.replica.stats.objects_too_large,
        }


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
