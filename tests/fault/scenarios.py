"""The fault scenarios and the runner shared by tests/fault/test_faults.py and
bench/fault_report.py: form a cluster, run the workload under the nemesis, heal, check.

QUICK scenarios (CI): 3 nodes (N=3, R=W=2), a short run each. LONG scenarios: 5 nodes,
longer runs, more fault kinds (kill-many, isolate, bridge) and more clients.
Nodes run with the default settings (Q=256, `wal` durability unless a scenario says
otherwise) except periodic anti-entropy, which is off: the checker's passes are what
is measured.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.fault.checker import Verdict, check
from tests.fault.cluster import FaultCluster, fault_cluster
from tests.fault.nemesis import NETWORK_FAULTS, FaultEvent, Nemesis
from tests.fault.netns import probe
from tests.fault.workloads import History, Workload
from tests.harness import NodeProc, wait_for

NODE_FLAGS = ("--anti-entropy-interval", "0")
FORM_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Scenario:
    name: str
    nodes: int
    #: nemesis fault kinds drawn from (nemesis.FAULT_KINDS)
    faults: tuple[str, ...]
    #: seconds of load under faults
    duration_s: float
    hold_s: tuple[float, float] = (2.0, 4.0)
    calm_s: tuple[float, float] = (1.0, 2.0)
    writers: int = 3
    cart_workers: int = 2
    carts: int = 3
    #: pause between a worker's operations (keeps some CPU for the nodes on 2 cores)
    think_s: float = 0.002
    durability: str = "wal"
    #: more dynamo-node flags (e.g. --lww for the checker's negative control)
    node_flags: tuple[str, ...] = ()
    alone_sample: int = 30
    #: keys read back with r=all through the API besides the carts (0: every key)
    api_sample: int = 500
    converge_timeout_s: float = 90.0

    @property
    def netns(self) -> bool:
        return bool(NETWORK_FAULTS & set(self.faults))


QUICK = {
    s.name: s
    for s in (
        Scenario("kill", 3, ("kill",), 14.0),
        Scenario("pause", 3, ("pause",), 14.0),
        Scenario("partition", 3, ("cut", "split"), 14.0),
        Scenario("mixed", 3, ("kill", "pause", "cut", "split"), 14.0),
    )
}

#: duration, hold, calm, writers, cart workers, carts
LONG_TIMING = (60.0, (3.0, 6.0), (1.0, 3.0), 4, 3, 5)
LONG = {
    s.name: s
    for s in (
        Scenario("kill", 5, ("kill", "kill-many"), *LONG_TIMING),
        Scenario("pause", 5, ("pause",), *LONG_TIMING),
        Scenario("partition", 5, ("cut", "isolate", "split", "bridge"), *LONG_TIMING),
        Scenario(
            "mixed",
            5,
            ("kill", "kill-many", "pause", "cut", "isolate", "split", "bridge"),
            *LONG_TIMING,
            alone_sample=100,
            api_sample=2000,
        ),
    )
}


@dataclass
class RunResult:
    scenario: Scenario
    verdict: Verdict
    faults: list[FaultEvent] = field(default_factory=list)
    seed: int = 0
    form_s: float = 0.0
    load_s: float = 0.0
    check_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def summary(self) -> str:
        v = self.verdict
        return (
            f"{self.scenario.name}: {len(self.faults)} faults {fault_counts(self.faults)}, "
            f"{v.ops} ops, {v.acked} acked, {v.lost} lost, {v.unknown} unknown, "
            f"{v.writes_failed + v.items_failed + v.cart_reads_failed} failed (503), "
            f"{v.siblings_seen} reads saw siblings (max {v.max_siblings}), "
            f"{v.undocumented} undocumented, converged in {v.converge_s}s "
            f"({v.ae_passes} AE passes, {v.keys_repaired} keys repaired), "
            f"problems: {v.problems()}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": asdict(self.scenario),
            "seed": self.seed,
            "faults_injected": len(self.faults),
            "fault_counts": fault_counts(self.faults),
            "faults": [f.as_dict() for f in self.faults],
            "form_s": self.form_s,
            "load_s": self.load_s,
            "check_s": self.check_s,
            "verdict": self.verdict.as_dict(),
        }


def fault_counts(events: list[FaultEvent]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e.kind] = out.get(e.kind, 0) + 1
    return out


def netns_skip_reason(scenario: Scenario) -> str | None:
    """Why this scenario cannot run here (None: it can)."""
    if not scenario.netns:
        return None
    reason = probe()
    return f"network namespaces unavailable: {reason}" if reason else None


def form(cluster: FaultCluster, count: int, *extra: str) -> None:
    """Start `count` nodes (all but the first in parallel) and join them in one ring."""
    first = cluster.add_node(*extra)
    rest = [cluster.add_node(*extra, seed=first, wait=False) for _ in range(count - 1)]
    for node in rest:
        cluster.wait_ready(node)

    def known(node: NodeProc) -> bool:
        return any(m["node"] == node.node_id for m in cluster.status(first)["members"])

    for node in rest:
        wait_for(functools.partial(known, node), FORM_TIMEOUT_S, what=f"{node.node_id} known")
        cluster.admin(first, "POST", "join", {"address": node.address})
    if rest:
        cluster.admin(first, "POST", "commit")
    cluster.wait_converged(cluster.nodes, FORM_TIMEOUT_S)


def _join_all(*joins: Callable[[], None]) -> None:
    """Call every join, then raise the first error (a crashed client thread must not
    leave the nemesis running)."""
    errors: list[Exception] = []
    for join in joins:
        try:
            join()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def run(scenario: Scenario, root: Path, seed: int | None = None) -> RunResult:
    """Run one scenario end to end on a fresh cluster under `root`."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    flags = (*NODE_FLAGS, "--durability", scenario.durability, *scenario.node_flags)
    with fault_cluster(root, scenario.nodes, scenario.netns) as cluster:
        t = time.monotonic()
        form(cluster, scenario.nodes, *flags)
        form_s = round(time.monotonic() - t, 2)
        history = History()
        stop = threading.Event()
        t0 = time.monotonic()
        workload = Workload(
            cluster,
            history,
            writers=scenario.writers,
            cart_workers=scenario.cart_workers,
            carts=scenario.carts,
            seed=seed,
            t0=t0,
            think_s=scenario.think_s,
        )
        nemesis = Nemesis(cluster, rng, t0)
        try:
            workload.start(stop)
            if scenario.faults:
                nemesis.start(scenario.faults, stop, scenario.hold_s, scenario.calm_s)
            end = t0 + scenario.duration_s
            hard_end = t0 + 2 * scenario.duration_s
            # the run's length is a timer, extended until every kind of fault was injected
            # and repaired once; bail out early if the nemesis failed
            while nemesis.error is None and time.monotonic() < hard_end:
                if time.monotonic() >= end and nemesis.repaired_kinds() >= set(scenario.faults):
                    break
                stop.wait(0.2)
        finally:
            stop.set()
            _join_all(workload.join, nemesis.join)
        load_s = round(time.monotonic() - t0, 2)
        nemesis.heal_all()
        t = time.monotonic()
        verdict = check(
            cluster,
            history,
            converge_timeout=scenario.converge_timeout_s,
            alone_sample=scenario.alone_sample,
            api_sample=scenario.api_sample,
            seed=seed,
        )
        return RunResult(
            scenario, verdict, nemesis.events, seed, form_s, load_s, round(time.monotonic() - t, 2)
        )
