"""Anti-entropy jobs: the full run an admin starts, its state and progress, and the
periodic run of the scheduler loop (`NodeConfig.anti_entropy_interval_s`, 0: none).

A run compares the roots of every partition this node shares with each live peer in
one call per peer, exchanges the differing partitions, in up to `ROUNDS` rounds, then
collects each partition's agreed tombstones; a partition this node does not hold is
handed to its first live replica (`ae_partition`), which does the same for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dynamo_node.cluster.antientropy.exchange import ExchangeProtocol
from dynamo_node.cluster.antientropy.tombstones import TombstoneGC
from dynamo_node.cluster.antientropy.trees import MerkleTrees
from dynamo_node.cluster.peer_server import PeerServer
from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import PeerError

log = logging.getLogger("dynamo.antientropy")

#: exchange rounds per pass: the second spreads what the last peers of the first brought
ROUNDS = 2


@dataclass(slots=True)
class Job:
    id: str
    kind: str = "anti-entropy"
    state: str = "running"
    partitions_total: int = 0
    partitions_done: int = 0
    keys_repaired: int = 0
    tombstones_purged: int = 0
    bytes_exchanged: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        total = self.partitions_total or 1
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": round(self.partitions_done / total, 4),
            "keys_repaired": self.keys_repaired,
            "tombstones_purged": self.tombstones_purged,
            "bytes_exchanged": self.bytes_exchanged,
            "partitions_done": self.partitions_done,
            "partitions_total": self.partitions_total,
            "errors": self.errors[-10:],
            "started": _iso(self.started),
            "finished": _iso(self.finished) if self.finished else None,
        }


class JobRunner:
    def __init__(
        self,
        view: ClusterView,
        merkle: MerkleTrees,
        protocol: ExchangeProtocol,
        gc: TombstoneGC,
        config: NodeConfig,
        peers: PeerServer,
    ) -> None:
        self.view = view
        self.merkle = merkle
        self.protocol = protocol
        self.gc = gc
        #: the calls of the exchanges (their bytes are a job's bytes exchanged)
        self.calls = protocol.calls
        self.config = config
        self.jobs: dict[str, Job] = {}
        #: when the last full anti-entropy job finished (time.time()), or None
        self.last_run: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._prepared: asyncio.Task[None] | None = None
        self._job_tasks: set[asyncio.Task[None]] = set()
        peers.register("ae_partition", self._rpc_partition)

    def start_job(self) -> str:
        job = Job(uuid.uuid4().hex[:16])
        self.jobs[job.id] = job
        task = asyncio.create_task(self._run_job(job))
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)
        return job.id

    async def sync_partition(self, p: int) -> tuple[int, int]:
        """Exchange p with every other live replica; then GC its agreed tombstones."""
        view = self.view
        state = view.require_state()
        peers = [r for r in state.preference_list(p) if r != view.node_id and view.is_up(r)]
        repaired = 0
        # this node gathers everything in the first round; a second round hands what a
        # later peer brought to the earlier ones (only needed when that round repaired)
        for _ in range(ROUNDS):
            this_round = 0
            for peer in peers:
                this_round += await self.protocol.exchange(p, peer)
            repaired += this_round
            if not this_round or len(peers) < 2:
                break
        purged = await self.gc.collect(p)
        return repaired, purged

    async def _rpc_partition(self, args: Any, caller: str) -> list[int]:
        repaired, purged = await self.sync_partition(self.merkle.check_partition(args[0]))
        return [repaired, purged]

    async def _run_job(self, job: Job) -> None:
        view = self.view
        state = view.require_state()
        job.partitions_total = state.partitions
        before = self.calls.exchanged()
        me = view.node_id
        try:
            mine = [p for p in range(state.partitions) if me in state.preference_list(p)]
            # compare every shared partition's root with each peer in one call per peer
            peers = sorted({r for p in mine for r in state.preference_list(p) if r != me})
            down = [peer for peer in peers if not view.is_up(peer)]
            job.errors.extend(f"replica {peer} is down" for peer in down)
            live = [peer for peer in peers if peer not in down]
            # round 1 gathers every replica's data here; round 2 (only when a later
            # exchange of round 1 repaired something) hands it back to the earlier peers
            for _ in range(ROUNDS):
                repaired = 0
                for peer in live:
                    shared = [p for p in mine if peer in state.preference_list(p)]
                    try:
                        for p in await self.protocol.differing(peer, shared):
                            repaired += await self.protocol.exchange(p, peer)
                    except Exception as exc:  # one peer failing does not stop the pass
                        job.errors.append(f"{peer}: {exc}")
                job.keys_repaired += repaired
                if not repaired or len(live) < 2:
                    break
            for p in mine:
                try:
                    job.tombstones_purged += await self.gc.collect(p)
                except Exception as exc:
                    job.errors.append(f"partition {p}: {exc}")
                job.partitions_done += 1
                job.bytes_exchanged = self.calls.exchanged() - before
            # partitions this node does not hold: their first live replica does them
            for p in range(state.partitions):
                if p in mine:
                    continue
                replicas = state.preference_list(p)
                delegate = next((r for r in replicas if view.is_up(r)), None)
                try:
                    if delegate is None:
                        raise PeerError(f"no live replica of partition {p}")
                    repaired, purged = await self.calls.call(delegate, "ae_partition", [p])
                    job.keys_repaired += int(repaired)
                    job.tombstones_purged += int(purged)
                except Exception as exc:
                    job.errors.append(f"partition {p}: {exc}")
                job.partitions_done += 1
                job.bytes_exchanged = self.calls.exchanged() - before
            job.state = "done" if not job.errors else "failed"
        except Exception as exc:
            job.state = "failed"
            job.errors.append(str(exc))
        finally:
            job.bytes_exchanged = self.calls.exchanged() - before
            job.finished = time.time()
            if job.state == "done":
                self.last_run = job.finished
            log.info(
                "anti-entropy job %s %s: %d key(s) repaired, %d tombstone(s) purged",
                job.id,
                job.state,
                job.keys_repaired,
                job.tombstones_purged,
            )

    # --- the scheduler -----------------------------------------------------------------
    def start(self) -> None:
        if self.config.anti_entropy_interval_s > 0:  # 0 disables the periodic rounds
            self._task = asyncio.create_task(self._loop(), name="anti-entropy")
            self._prepared = asyncio.create_task(self.merkle.prepare(), name="merkle-trees")

    async def stop(self) -> None:
        for task in [self._task, self._prepared, *self._job_tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _loop(self) -> None:
        interval = self.config.anti_entropy_interval_s
        while True:
            await asyncio.sleep(interval)
            state = self.view.state
            if state is None or interval <= 0:
                continue
            try:
                job = Job("periodic", kind="periodic")
                await self._run_job(job)
                if job.errors:
                    log.info("periodic anti-entropy: %s", "; ".join(job.errors[:3]))
            except Exception as exc:
                log.warning("periodic anti-entropy round failed: %s", exc)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
