"""Refill time of a replacement: a node of a 3-node cluster (N=3) loses its data
directory and comes back empty; how long until it has refilled every partition from
its peers and counts towards quorums again, and how fast that is per key.

A real cluster (periodic anti-entropy off, so only the refill moves data) holds n keys
of 100-byte values written at W=3. The node is killed, its directory deleted, and it
is started again; the clock runs from its start until its status has no `refill`.
Reported per round: seconds, keys per second; the median of the rounds.

    python bench/refill.py            # n = 100k, 3 rounds
    python bench/refill.py --quick    # n = 10k, 1 round
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Cluster, NodeProc, cluster, wait_for

from bench.antientropy import load


def refill_once(c: Cluster, nodes: list[NodeProc]) -> float:
    victim = nodes[2]
    c.kill(victim)
    shutil.rmtree(victim.data_dir)
    started = time.monotonic()
    c.start(victim)
    wait_for(lambda: c.status(victim)["refill"] is not None, 60, what="the refill to start")
    wait_for(lambda: c.status(victim)["refill"] is None, 3600, interval=0.2, what="refilled")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keys", type=int)
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    n = args.keys or (10_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as c:
        nodes = c.form(3, "--anti-entropy-interval", "0")
        load(c, nodes[0], [f"key{i:07d}" for i in range(n)])
        times = [refill_once(c, nodes) for _ in range(rounds)]
    median = statistics.median(times)
    print(
        json.dumps(
            {
                "keys": n,
                "rounds_s": [round(t, 2) for t in times],
                "median_s": round(median, 2),
                "keys_per_s": round(n / median),
            }
        )
    )


if __name__ == "__main__":
    main()
