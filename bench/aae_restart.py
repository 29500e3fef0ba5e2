"""The first anti-entropy tree read after a restart: saved trees versus a rebuild (issue 21).

In-process, one node on RocksDB (Q = 256, N = 1) holding n keys (100-byte values). After
a clean stop (the trees saved, see antientropy.trees "Saved trees"), the node is opened again
and every partition's tree and tombstone candidates are read once, as the first repair
does: timed, with the objects read by range scans counted. The same after a crash (the
marker gone: every tree is built from a scan, as before saved trees existed). Also
reported: the time the save adds to a stop, and the load it adds to a start. Medians of
`--runs` (3).

    python bench/aae_restart.py            # n = 100k
    python bench/aae_restart.py --quick    # n = 10k
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.node.cluster.test_coordinator import Net

from bench import benchlib
from dynamo_node.cluster.antientropy import SAVED_TREES_MARKER
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.vclock import VClock
from dynamo_node.node import Node
from dynamo_node.store.storage import Family, storage_key
from dynamo_node.store.storage_rocks import RocksStorage

Q = 256
VALUE = b"v" * 100


class CountingStorage(RocksStorage):
    objects_read = 0

    def iter_range(
        self, family: Family, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        it = super().iter_range(family, start, end)
        return it if family is not Family.OBJECTS else self._counted(it)

    def _counted(self, it: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        try:
            for item in it:
                self.objects_read += 1
                yield item
        finally:
            it.close()  # type: ignore[attr-defined]


def open_node(path: Path) -> tuple[Node, float]:
    config = NodeConfig(
        data_dir=str(path),
        port=7000,
        node_id="b0",
        partitions=Q,
        n=1,
        r=1,
        w=1,
        anti_entropy_interval_s=0.0,  # no background build: the first read does it
        gossip_interval_s=3600.0,
        hint_delivery_interval_s=3600.0,
    )
    storage = CountingStorage(str(path))
    t0 = time.perf_counter()
    node = Node(config, storage, Net().factory, serve_peers=False)
    return node, time.perf_counter() - t0


def first_read(node: Node) -> tuple[float, int]:
    """Every partition's tree and tombstone candidates read once: seconds, objects read."""
    assert isinstance(node.storage, CountingStorage)
    ae = node.anti_entropy.merkle
    t0 = time.perf_counter()
    for p in range(Q):
        ae.tree(p).root()
        ae.tombstone_candidates(p)
    return time.perf_counter() - t0, node.storage.objects_read


async def timed_stop(node: Node) -> float:
    t0 = time.perf_counter()
    await node.stop()
    return time.perf_counter() - t0


async def run(n: int, runs: int, root: Path) -> dict[str, Any]:
    node, _ = open_node(root)
    await node.start()
    t0 = time.perf_counter()
    for i in range(n):
        await node.coordinator.put(storage_key(f"key{i}"), VClock(), VALUE, "", 1, 1000)
    print(f"wrote {n} keys in {time.perf_counter() - t0:.1f}s", flush=True)
    first_read(node)  # trees built, so that the stop saves them
    await node.stop()
    cases: dict[str, dict[str, list[float]]] = {}
    for case in ("saved", "rebuilt"):
        figures: dict[str, list[float]] = {"read_s": [], "objects": [], "open_s": [], "stop_s": []}
        for _ in range(runs):
            if case == "rebuilt":  # what a crash leaves: no marker
                storage = RocksStorage(str(root))
                storage.write([(Family.META, SAVED_TREES_MARKER, None)])
                storage.close()
            node, opened = open_node(root)
            assert bool(node.anti_entropy.loaded) == (case == "saved")
            await node.start()
            seconds, objects = first_read(node)
            figures["read_s"].append(seconds)
            figures["objects"].append(objects)
            figures["open_s"].append(opened)
            figures["stop_s"].append(await timed_stop(node))  # saves the trees again
        cases[case] = figures
    return {
        case: {name: statistics.median(values) for name, values in figures.items()}
        | {"runs": {name: values for name, values in figures.items()}}
        for case, figures in cases.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k keys")
    args = parser.parse_args()
    if args.quick:
        benchlib.use_quick_dir()
        args.keys = min(args.keys, 10_000)
    with benchlib.temp_root("aae-restart-") as root:
        result = asyncio.run(run(args.keys, args.runs, root / "node"))
    rows = [
        [
            case,
            f"{r['read_s'] * 1000:.1f}",
            f"{r['objects']:.0f}",
            f"{r['open_s'] * 1000:.1f}",
            f"{r['stop_s'] * 1000:.1f}",
        ]
        for case, r in result.items()
    ]
    print(f"\nfirst tree read of all {Q} partitions after a restart, {args.keys} keys")
    print(benchlib.table(["start", "read ms", "objects read", "open ms", "stop ms"], rows))
    saved, rebuilt = result["saved"]["read_s"], result["rebuilt"]["read_s"]
    print(f"speed-up of the first read: {rebuilt / saved:.0f}x")
    payload = {"keys": args.keys, "partitions": Q, "cases": result}
    payload["environment"] = benchlib.environment()
    print(f"written to {benchlib.write_results('aae_restart', payload)}")


if __name__ == "__main__":
    main()
