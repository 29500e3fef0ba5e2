"""Durability under kill -9: write bursts, SIGKILL of *every* node at one instant, restart.

Killing every replica at once leaves no copy in any process's memory, so what comes back
is what each node's RocksDB had made durable before it acknowledged.

What can and cannot be measured here:
- `--durability sync` acknowledges after an fsync of the WAL: nothing acknowledged may
  be lost, on a process crash or a machine crash. The test checks the process crash.
- `--durability wal` acknowledges once the write is in the WAL, i.e. handed to the
  kernel (write(2), no fsync). SIGKILL of a process does not touch the kernel's page
  cache, so a process crash loses nothing in this mode either (checked here too).
  A *machine* crash (power loss, kernel panic) loses what the page cache had not yet
  written back: at most the writes acknowledged since the last periodic WAL fsync
  (`fsync_interval_s`, 1 s by default) on that node. Measuring that needs the page cache
  dropped without a sync, i.e. a VM to power off or a FUSE file system that discards
  unsynced data (Jepsen's LazyFS); neither is available here, and a network namespace
  does not help (it shares the one kernel and its page cache). So this module reports
  the *exposure* instead: the writes acknowledged within `fsync_interval_s` before each
  kill, an upper bound on what a power cut at that instant could have lost on one node
  (a replicated write is lost only if every replica that acknowledged it loses power
  within that window).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynamo_node.core.config import NodeConfig
from tests.fault.checker import Verdict, check
from tests.fault.cluster import fault_cluster
from tests.fault.scenarios import NODE_FLAGS, form
from tests.fault.workloads import OK, History, Workload

FSYNC_INTERVAL_S = NodeConfig(data_dir="").fsync_interval_s


@dataclass
class DurabilityResult:
    durability: str
    nodes: int
    rounds: int
    seed: int
    verdict: Verdict
    #: wal only: acknowledged writes within FSYNC_INTERVAL_S before a kill, per round
    exposure: list[int] = field(default_factory=list)
    #: acknowledged writes per second during the bursts
    ack_rate: float = 0.0

    def summary(self) -> str:
        v = self.verdict
        return (
            f"durability={self.durability} nodes={self.nodes}: {self.rounds} kill -9 of every "
            f"node mid-burst, {v.ops} ops, {v.acked} acked, {v.lost} lost, {v.unknown} unknown "
            f"(in flight at the kill), {self.ack_rate:.0f} acks/s; "
            + (
                f"acked within {FSYNC_INTERVAL_S:g}s before each kill (the machine-crash "
                f"exposure of wal, not measured loss): {self.exposure}; "
                if self.durability == "wal"
                else ""
            )
            + f"problems: {v.problems()}"
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict.as_dict()
        out["fsync_interval_s"] = FSYNC_INTERVAL_S
        return out


def run(
    root: Path,
    durability: str,
    nodes: int,
    rounds: int,
    burst_s: tuple[float, float] = (2.0, 4.0),
    seed: int | None = None,
) -> DurabilityResult:
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    flags = [*NODE_FLAGS, "--durability", durability]
    if nodes == 1:
        flags += ["--n", "1", "--r", "1", "--w", "1"]
    history = History()
    exposure: list[int] = []
    burst_total = 0.0
    with fault_cluster(root, nodes, netns=False) as cluster:
        form(cluster, nodes, *flags)
        t0 = time.monotonic()
        for round_no in range(rounds):
            stop = threading.Event()
            workload = Workload(
                cluster,
                history,
                writers=3,
                cart_workers=1,
                carts=2,
                seed=seed + round_no,
                t0=t0,
                prefix=f"d{round_no}",
            )
            started = time.monotonic()
            workload.start(stop)
            # the burst's length is a timer, not a wait for some state
            stop.wait(rng.uniform(*burst_s))
            for node in cluster.nodes:  # SIGKILL everyone first: one instant for all
                os.kill(node.pid, signal.SIGKILL)
            killed_at = time.monotonic() - t0
            stop.set()
            for node in cluster.nodes:
                cluster.kill(node)
            burst_total += time.monotonic() - started
            workload.join()
            if durability == "wal":
                exposure.append(
                    sum(
                        1
                        for op in history.ops
                        if op.outcome == OK
                        and op.kind != "cart-read"
                        and killed_at - FSYNC_INTERVAL_S <= op.end <= killed_at
                    )
                )
            for node in cluster.nodes:
                cluster.start(node, wait=False)
            for node in cluster.nodes:
                cluster.wait_ready(node)
            cluster.wait_converged(cluster.nodes)
        verdict = check(
            cluster, history, alone_sample=20 if nodes > 1 else 0, api_sample=500, seed=seed
        )
    acked = sum(1 for op in history.ops if op.outcome == OK and op.kind != "cart-read")
    return DurabilityResult(
        durability, nodes, rounds, seed, verdict, exposure, acked / max(burst_total, 1e-9)
    )
