"""Fault-injection report: the long fault scenarios and kill -9 durability rounds.

Runs tests/fault/scenarios.py's LONG scenarios (5 nodes, N=3 R=W=2: kill -9 churn incl.
a minority killed at once, SIGSTOP churn, network partitions in namespaces: link cut,
one node isolated, minority|majority split, a bridge node; and all of them mixed) under
blind writers and shopping-cart clients, then tests/fault/durability.py's rounds (every
node of a 3-node cluster SIGKILLed mid-burst, `sync` and `wal`). Prints the faults
injected, operations, acknowledged, lost, unknown and convergence time of each, and
writes bench/results/fault_report.json. Exit status 1 if anything was lost or a check
failed. About 8-10 minutes on two cores.

    python bench/fault_report.py [--quick] [--scenarios kill,partition] [--duration S]
                                 [--rounds N] [--seed N] [--no-durability]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fault import durability, scenarios
from tests.fault.scenarios import RunResult, Scenario

from bench import benchlib


def scenario_row(result: RunResult) -> list[Any]:
    v = result.verdict
    return [
        result.scenario.name,
        result.scenario.nodes,
        len(result.faults),
        ",".join(f"{k}:{n}" for k, n in scenarios.fault_counts(result.faults).items()),
        v.ops,
        v.acked,
        v.lost,
        v.unknown,
        v.writes_failed + v.items_failed + v.cart_reads_failed,
        v.siblings_seen,
        v.ae_passes,
        v.phase_s.get(f"ae{v.ae_passes}"),
        v.converge_s,
        v.keys_repaired,
        "yes" if result.ok else "NO",
    ]


def durability_row(result: durability.DurabilityResult) -> list[Any]:
    v = result.verdict
    return [
        result.durability,
        result.nodes,
        result.rounds,
        v.ops,
        v.acked,
        v.lost,
        v.unknown,
        round(result.ack_rate),
        ",".join(map(str, result.exposure)) or "-",
        v.converge_s,
        "yes" if v.ok else "NO",
    ]


def run_scenarios(chosen: list[Scenario], seed: int | None) -> tuple[list[dict[str, Any]], bool]:
    out: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    ok = True
    for scenario in chosen:
        skip = scenarios.netns_skip_reason(scenario)
        if skip:
            print(f"!! {scenario.name}: SKIPPED, {skip}", flush=True)
            out.append({"scenario": dataclasses.asdict(scenario), "skipped": skip})
            ok = False
            continue
        print(f"== {scenario.name}: {scenario.nodes} nodes, {scenario.faults}", flush=True)
        t = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"dynamokv-fault-{scenario.name}-") as tmp:
            result = scenarios.run(scenario, Path(tmp), seed)
        print(f"   {result.summary()} [{time.monotonic() - t:.0f}s]", flush=True)
        out.append(result.as_dict())
        rows.append(scenario_row(result))
        ok = ok and result.ok
    print()
    print(
        "AE done s: from healing to the end of the last full anti-entropy pass needed; verified"
        " s: until\nevery replica was read alone and found identical (includes reading them all)."
    )
    print(
        benchlib.table(
            [
                "scenario",
                "nodes",
                "faults",
                "kinds",
                "ops",
                "acked",
                "lost",
                "unknown",
                "503",
                "siblings seen",
                "AE passes",
                "AE done s",
                "verified s",
                "AE repaired",
                "ok",
            ],
            rows,
        )
    )
    return out, ok


def run_durability(nodes: int, rounds: int, seed: int | None) -> tuple[list[dict[str, Any]], bool]:
    out: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    ok = True
    for mode in ("sync", "wal"):
        print(f"== durability {mode}: {nodes} nodes, {rounds} x kill -9 of every node", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"dynamokv-durability-{mode}-") as tmp:
            result = durability.run(Path(tmp), mode, nodes, rounds, seed=seed)
        print(f"   {result.summary()}", flush=True)
        out.append(result.as_dict())
        rows.append(durability_row(result))
        ok = ok and result.verdict.ok
    print()
    print(
        benchlib.table(
            [
                "durability",
                "nodes",
                "kills",
                "ops",
                "acked",
                "lost",
                "unknown",
                "acks/s",
                f"acked <{durability.FSYNC_INTERVAL_S:g}s before kill",
                "converge s",
                "ok",
            ],
            rows,
        )
    )
    print(
        "(the last column is wal's machine-crash exposure, an upper bound: kill -9 keeps the"
        " page cache, so\n measured loss on a process crash is the 'lost' column; a power cut"
        " cannot be simulated here)"
    )
    return out, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the 3-node CI scenarios instead")
    ap.add_argument("--scenarios", default="", help="comma-separated names (default: all)")
    ap.add_argument("--duration", type=float, help="seconds of faults per scenario")
    ap.add_argument("--rounds", type=int, help="kill -9 rounds per durability mode")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--no-durability", action="store_true")
    args = ap.parse_args()
    if args.quick:
        benchlib.use_quick_dir()
    table = scenarios.QUICK if args.quick else scenarios.LONG
    names = [n for n in args.scenarios.split(",") if n] or list(table)
    chosen = [table[n] for n in names]
    if args.duration:
        chosen = [dataclasses.replace(s, duration_s=args.duration) for s in chosen]
    env = benchlib.environment()
    started = time.monotonic()
    results, ok = run_scenarios(chosen, args.seed)
    durable: list[dict[str, Any]] = []
    if not args.no_durability:
        rounds = args.rounds or (2 if args.quick else 5)
        durable, durable_ok = run_durability(3, rounds, args.seed)
        ok = ok and durable_ok
    payload = {
        "environment": env,
        "mode": "quick" if args.quick else "long",
        "seconds": round(time.monotonic() - started, 1),
        "ok": ok,
        "scenarios": results,
        "durability": durable,
        "durability_note": durability.__doc__,
    }
    path = benchlib.write_results("fault_report", payload)
    print(f"\nwrote {path} ({payload['seconds']}s); {'all sound' if ok else 'PROBLEMS FOUND'}")
    print(json.dumps({"ok": ok}))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
