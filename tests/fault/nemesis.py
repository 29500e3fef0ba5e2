"""The nemesis: faults injected into a running `FaultCluster`, and a random schedule.

Fault kinds (each injected, held, then repaired; every one recorded as a `FaultEvent`;
a schedule draws every kind once, in a random order, before drawing any again):

    kill       SIGKILL one node, restart it on the same data dir when the fault ends
    kill-many  SIGKILL a minority of the nodes at once (at most (count - 1) // 2)
    pause      SIGSTOP one node, SIGCONT when the fault ends
    cut        take one node's link down: nobody, clients included, reaches it
    isolate    one node | the rest; clients still reach every node (both sides)
    split      a minority | a majority; clients on both sides
    bridge     two halves that do not hear each other, and one node both halves hear

The network kinds need namespaces (`NETWORK_FAULTS`). Faults of one schedule never
overlap: the next is drawn only once the previous is repaired. `heal_all()` ends every
fault that may still be in force, whatever state a failed run left behind.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tests.fault.cluster import FaultCluster
from tests.harness import NodeProc

FAULT_KINDS = ("kill", "kill-many", "pause", "cut", "isolate", "split", "bridge")
NETWORK_FAULTS = frozenset({"cut", "isolate", "split", "bridge"})

Repair = Callable[[], None]


@dataclass
class FaultEvent:
    kind: str
    #: which nodes, e.g. "n2" or "n0,n1 | n2"
    target: str
    #: seconds since the run started
    started: float
    healed: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Nemesis:
    def __init__(self, cluster: FaultCluster, rng: random.Random, t0: float) -> None:
        self.cluster = cluster
        self.rng = rng
        self.t0 = t0
        self.events: list[FaultEvent] = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # --- primitives ----------------------------------------------------------------------
    def kill(self, node: NodeProc) -> None:
        self.cluster.kill(node)

    def restart(self, node: NodeProc) -> None:
        if not node.alive():
            self.cluster.start(node)

    def pause(self, node: NodeProc) -> None:
        self.cluster.pause(node)

    def resume(self, node: NodeProc) -> None:
        if node.paused and node.alive():
            self.cluster.resume(node)

    @property
    def net(self) -> Any:
        if self.cluster.net is None:
            raise RuntimeError("network faults need the cluster in namespaces")
        return self.cluster.net

    def heal_all(self) -> None:
        """Links up, partitions gone, paused nodes resumed, dead nodes restarted."""
        if self.cluster.net is not None:
            self.cluster.net.heal()
        for node in self.cluster.nodes:
            self.resume(node)
        for node in self.cluster.nodes:
            self.restart(node)
        now = self._now()
        for event in self.events:
            if event.healed is None:
                event.healed = now

    # --- one fault -------------------------------------------------------------------------
    def inject(self, kind: str) -> Repair:
        """Start a fault of `kind` on random targets; return the function that ends it."""
        nodes = self.cluster.nodes
        count = len(nodes)
        index = self.rng.randrange(count)
        node = nodes[index]
        names = [n.node_id for n in nodes]
        if kind == "kill":
            return self._record(
                kind, node.node_id, lambda: self.kill(node), lambda: self.restart(node)
            )
        if kind == "kill-many":
            victims = self.rng.sample(nodes, max(1, (count - 1) // 2))

            def kill_all() -> None:
                for v in victims:
                    self.kill(v)

            def restart_all() -> None:
                for v in victims:
                    self.restart(v)

            return self._record(kind, ",".join(v.node_id for v in victims), kill_all, restart_all)
        if kind == "pause":
            return self._record(
                kind, node.node_id, lambda: self.pause(node), lambda: self.resume(node)
            )
        if kind == "cut":
            return self._record(
                kind, node.node_id, lambda: self.net.cut(index), lambda: self.net.restore(index)
            )
        if kind in ("isolate", "split"):
            order = self.rng.sample(range(count), count)
            minority = [index] if kind == "isolate" else order[: count // 2]
            majority = [i for i in range(count) if i not in minority]
            target = _sides(names, [minority, majority])
            return self._record(
                kind, target, lambda: self.net.partition([minority, majority]), self.net.heal
            )
        if kind == "bridge":
            if count < 3:
                raise ValueError("a bridge needs three nodes")
            others = [i for i in self.rng.sample(range(count), count) if i != index]
            half = len(others) // 2
            left, right = others[:half], others[half:]
            pairs = [(a, b) for a in left for b in right]
            target = f"{_sides(names, [left, right])} bridged by {node.node_id}"
            return self._record(kind, target, lambda: self.net.sever(pairs), self.net.heal)
        raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")

    def _record(self, kind: str, target: str, start: Repair, end: Repair) -> Repair:
        event = FaultEvent(kind, target, self._now())
        self.events.append(event)
        start()

        def repair() -> None:
            end()
            event.healed = self._now()

        return repair

    def _now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    # --- the schedule ----------------------------------------------------------------------
    def start(
        self,
        kinds: Sequence[str],
        stop: threading.Event,
        hold_s: tuple[float, float],
        calm_s: tuple[float, float],
    ) -> None:
        """Draw, hold and repair faults in a thread until `stop` is set."""
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")

        draw = self._rounds(kinds)

        def loop() -> None:
            self.cluster.enter_hub_for_good()
            try:
                # stop.wait paces the schedule (a timer, not a wait for some state)
                while not stop.wait(self.rng.uniform(*calm_s)):
                    repair = self.inject(next(draw))
                    try:
                        stop.wait(self.rng.uniform(*hold_s))
                    finally:
                        repair()
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=loop, name="nemesis", daemon=True)
        self._thread.start()

    def _rounds(self, kinds: Sequence[str]) -> Iterator[str]:
        """Every kind once in a random order, then again in another order, and so on, so
        that even a short run injects each kind."""
        while True:
            yield from self.rng.sample(list(kinds), len(kinds))

    def join(self, timeout: float = 60.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("the nemesis did not finish its last fault")
        if self.error is not None:
            raise RuntimeError(f"the nemesis failed: {self.error!r}") from self.error

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def repaired_kinds(self) -> set[str]:
        return {e.kind for e in self.events if e.healed is not None}


def _sides(names: list[str], sides: Sequence[Sequence[int]]) -> str:
    return " | ".join(",".join(names[i] for i in sorted(side)) for side in sides)
