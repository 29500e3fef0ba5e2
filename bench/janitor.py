"""Dropping the partitions a node gave away: key-by-key deletes (the janitor before
issue 21) versus one range delete per partition, on a RocksStorage in one process.

n keys of 1 KiB values over Q = 64 partitions; a quarter of the partitions (every
fourth) are dropped. Per method: the first pass (the drop), the longest time the loop
would be blocked in one step (between two yields), and a second pass: the old janitor
scanned the dropped ranges again every 2 s, seeking past every tombstone it had left;
the new one only probes a range once per start (one seek, shown as the probe pass).
For the range delete also the background compaction and the table bytes after it.

    python bench/janitor.py            # n = 100k
    python bench/janitor.py --quick    # n = 20k
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "node"))

from bench import benchlib
from dynamo_node.core.config import NodeConfig
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import Family, partition_keys
from dynamo_node.store.storage_rocks import RocksStorage

Q = 64
DROP_BATCH = 1000  # what the old janitor scanned per step


def fill(path: str, n: int) -> RocksStorage:
    s = RocksStorage(path)
    rng = random.Random(1)
    for i in range(0, n, 1000):  # incompressible values: table sizes mean data
        s.write(
            [
                (Family.OBJECTS, rng.randbytes(8) + b"key%07d" % j, os.urandom(1024))
                for j in range(i, min(n, i + 1000))
            ]
        )
    s._db.flush()
    return s


def sst_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).glob("*.sst"))


def old_pass(s: RocksStorage, dropped: list[int]) -> tuple[float, float, int]:
    """The old janitor: scan a batch, get + delete each key, yield, scan again."""
    began, worst, keys = time.perf_counter(), 0.0, 0
    for p in dropped:
        start, end = partition_keys(p, Q)
        while True:
            step = time.perf_counter()
            batch = s.scan(Family.OBJECTS, start, end, DROP_BATCH)
            for skey, _ in batch:
                if s.get(Family.OBJECTS, skey) is not None:
                    s.write([(Family.OBJECTS, skey, None)])
            keys += len(batch)
            worst = max(worst, time.perf_counter() - step)
            if not batch:
                break
    return time.perf_counter() - began, worst, keys


def new_pass(s: RocksStorage, dropped: list[int]) -> tuple[float, float, int]:
    """The new janitor (`Replica.drop_partition`): one seek (does the range hold
    anything), one range delete."""
    replica = Replica(s, GroupCommit(s, "wal", 60.0), "bench", NodeConfig(data_dir=""))
    began, worst, ranges = time.perf_counter(), 0.0, 0
    for p in dropped:
        step = time.perf_counter()
        if replica.drop_partition(p, Q):
            ranges += 1
        worst = max(worst, time.perf_counter() - step)
    return time.perf_counter() - began, worst, ranges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keys", type=int)
    args = parser.parse_args()
    if args.quick:
        benchlib.use_quick_dir()
    n = args.keys or (20_000 if args.quick else 100_000)
    dropped = list(range(0, Q, 4))
    rows: list[list[object]] = []
    results: dict[str, object] = {"keys": n, "partitions": Q, "dropped": len(dropped)}
    with benchlib.temp_root("dynamo-janitor-") as root:
        s = fill(str(root / "old"), n)
        first = old_pass(s, dropped)
        s._db.flush()  # the tombstones in tables, as two seconds later under load
        second = old_pass(s, dropped)
        rows.append(["key by key", first[0], first[1], second[0], second[1], "-", "-"])
        results["key_by_key"] = {
            "first_pass_s": first[0],
            "longest_step_s": first[1],
            "keys": first[2],
            "second_pass_s": second[0],
            "second_longest_step_s": second[1],
        }
        s.close()

        path = str(root / "new")
        s = fill(path, n)
        before = sst_bytes(path)
        first = new_pass(s, dropped)
        began = time.perf_counter()
        while s._compacting:  # the background compaction of the dropped span
            time.sleep(0.01)
        compaction = time.perf_counter() - began
        second = new_pass(s, dropped)
        after = sst_bytes(path)
        rows.append(
            ["range delete", first[0], first[1], second[0], second[1], compaction, after / before]
        )
        results["range_delete"] = {
            "first_pass_s": first[0],
            "longest_step_s": first[1],
            "ranges": first[2],
            "probe_pass_s": second[0],
            "probe_longest_step_s": second[1],
            "background_compaction_s": compaction,
            "table_bytes_before": before,
            "table_bytes_after": after,
        }
        s.close()
    print(f"{n} keys of 1 KiB, {len(dropped)} of {Q} partitions dropped")
    print(
        benchlib.table(
            [
                "method",
                "drop s",
                "longest step s",
                "next pass s",
                "its longest step s",
                "compaction s",
                "tables after/before",
            ],
            rows,
        )
    )
    results["environment"] = benchlib.environment()
    print("written to", benchlib.write_results("janitor", results))


if __name__ == "__main__":
    main()
