"""GET and PUT of 1 KiB values against ONE dynamo-node, side by side with a bare aiohttp
server (bench/bare_server.py), same load generator, same concurrency, same cores.

Servers run pinned to core 0, the load generator (wrk, or the asyncio raw-socket one)
to core 1. Cases, each `--rounds` times, interleaved so that slow drifts of the machine
hit every case alike (the median round is reported):

    bare GET, node GET (durability wal), node GET (sync)
    bare PUT, node PUT (wal), node PUT (sync)

GET reads a random key of a preloaded set (10k keys, 1 KiB each); PUT writes a fresh
key every request (an insert: a blind PUT to an existing key would add a sibling every
time, which is a different workload). Targets (issue 2, item 8): node GET >= 0.7x bare
GET and node PUT (wal) >= 0.6x bare PUT.

    python bench/single_node.py [--duration 15] [--quick] [--profile 15]

Writes bench/results/single_node.json (and py-spy profiles with --profile).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

import benchlib
import httpload
from benchlib import LOAD_CORE, SERVER_CORE, CpuMeter, taskset

VALUE_SIZE = 1024

WRK_COMMON = r"""
local done_json = function(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%f,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
done = function(summary, latency, requests) done_json(summary, latency) end
"""

WRK_GET = r"""
local nkeys = __KEYS__
local reqs = {}
init = function(args)
  math.randomseed(os.time())
  for i = 0, nkeys - 1 do
    reqs[i] = wrk.format("GET", string.format("/v1/kv/g%06d", i))
  end
end
request = function()
  return reqs[math.random(0, nkeys - 1)]
end
"""

WRK_PUT = r"""
local prefix = "__PREFIX__"
local counter = 0
local bodies = {}
local headers = {["Content-Type"] = "application/octet-stream"}
init = function(args)
  math.randomseed(os.time())
  for i = 1, 16 do
    local t = {}
    for j = 1, __SIZE__ do t[j] = string.char(math.random(0, 255)) end
    bodies[i] = table.concat(t)
  end
end
request = function()
  counter = counter + 1
  return wrk.format("PUT", prefix .. counter, headers, bodies[counter % 16 + 1])
end
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per case")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    p.add_argument("--rounds", type=int, default=1, help="repeat every case; median kept")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--keys", type=int, default=10_000, help="preloaded keys for GET")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--quick", action="store_true", help="short smoke run (a few seconds)")
    p.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="S",
        help="afterwards, py-spy the node (wal) for S seconds under GET and under PUT",
    )
    p.add_argument("--native", action="store_true", help="py-spy --native (C/Rust frames)")
    p.add_argument("--keep", action="store_true", help="keep the temp data dirs")
    args = p.parse_args()
    if args.quick:
        benchlib.use_quick_dir()
        args.duration = min(args.duration, 4.0)
        args.warmup = min(args.warmup, 1.0)
        args.keys = min(args.keys, 2000)
        args.profile = min(args.profile, 4.0)
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "python"
    return args


# --- load generators --------------------------------------------------------------------
class Wrk:
    def __init__(self, root: Path, connections: int) -> None:
        self.root = root
        self.connections = connections
        self._n = 0

    def _script(self, body: str) -> Path:
        self._n += 1
        path = self.root / f"wrk{self._n}.lua"
        path.write_text(body + WRK_COMMON, encoding="utf-8")
        return path

    def run(self, url: str, op: str, seconds: float, keys: int, prefix: str) -> dict[str, Any]:
        if op == "GET":
            script = self._script(WRK_GET.replace("__KEYS__", str(keys)))
        else:
            script = self._script(
                WRK_PUT.replace("__PREFIX__", prefix).replace("__SIZE__", str(VALUE_SIZE))
            )
        argv = ["wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s"]
        argv += ["--timeout", "10s", "-s", str(script), url]
        proc = subprocess.run(
            taskset(LOAD_CORE, argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 60,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
        raw = json.loads(line[len("WRKJSON ") :])
        secs = raw["duration_us"] / 1e6
        errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
        return {
            "req_s": round(raw["requests"] / secs, 1),
            "requests": raw["requests"],
            "errors": errors,
            "error_detail": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
            "p50_ms": raw["p50"] / 1000,
            "p90_ms": raw["p90"] / 1000,
            "p99_ms": raw["p99"] / 1000,
            "p999_ms": raw["p999"] / 1000,
            "mean_ms": round(raw["mean"] / 1000, 3),
        }


class PyLoad:
    """The asyncio raw-socket fallback (bench/httpload.py), same request mix as wrk."""

    def __init__(self, connections: int) -> None:
        self.connections = connections
        self.bodies = [os.urandom(VALUE_SIZE) for _ in range(16)]

    def run(self, url: str, op: str, seconds: float, keys: int, prefix: str) -> dict[str, Any]:
        import random

        host, port = url.removeprefix("http://").split(":")
        counter = [0]
        gets = [httpload.build("GET", f"/v1/kv/g{i:06d}") for i in range(keys)]

        def next_request(_i: int) -> tuple[str, bytes, httpload.OnReply]:
            if op == "GET":
                return op, gets[random.randrange(keys)], None
            counter[0] += 1
            n = counter[0]
            return (
                op,
                httpload.build(
                    "PUT",
                    f"{prefix}{n}",
                    self.bodies[n % 16],
                    [("Content-Type", "application/octet-stream")],
                ),
                None,
            )

        res = uvloop.run(
            httpload.run_closed_loop([(host, int(port))], next_request, self.connections, seconds)
        ).summary()
        return {
            "req_s": res["ops_per_s"],
            "requests": res["ok"],
            "errors": res["errors"],
            "p50_ms": res["p50_ms"],
            "p99_ms": res["p99_ms"],
            "p999_ms": res["p999_ms"],
        }


# --- servers ------------------------------------------------------------------------------
def start_bare(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    from tests.harness import free_port, http, wait_for

    port = free_port()
    log = open(root / "bare.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        taskset(
            SERVER_CORE,
            [sys.executable, str(benchlib.BENCH_DIR / "bare_server.py"), "--port", str(port)],
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http("GET", url + "/healthz", timeout=2)[0] == 200, 20, what="bare server")
    return proc, url


def preload(url: str, keys: int, connections: int) -> float:
    host, port = url.removeprefix("http://").split(":")
    reqs = [
        (
            httpload.build(
                "PUT",
                f"/v1/kv/g{i:06d}",
                os.urandom(VALUE_SIZE),
                [("Content-Type", "application/octet-stream")],
            ),
            None,
        )
        for i in range(keys)
    ]
    _ok, errors, secs = uvloop.run(httpload.run_fixed([(host, int(port))], reqs, connections))
    if errors:
        raise RuntimeError(f"preload of {url}: {errors} failed PUTs")
    return secs


# --- main ---------------------------------------------------------------------------------
def main() -> None:
    args = parse_args()
    benchlib.check_cores()
    benchlib.pin_self(LOAD_CORE)
    env = benchlib.environment()
    print(
        f"single_node: {args.duration:.0f}s x {args.rounds} round(s) per case, "
        f"{args.connections} connections, load generator {args.loadgen}, "
        f"servers on core {SERVER_CORE}, load on core {LOAD_CORE}; "
        f"loadavg {env['loadavg_at_start'][0]:.2f}"
    )
    with benchlib.temp_root("dynamokv-bench-single-", args.keep) as root:
        cluster = benchlib.dynamo_cluster(root)
        bare: subprocess.Popen[bytes] | None = None
        try:
            bare, bare_url = start_bare(root)
            servers: dict[str, tuple[str, int]] = {"bare": (bare_url, bare.pid)}
            for durability in ("wal", "sync"):
                node = cluster.add_node(
                    "--n", "1", "--r", "1", "--w", "1", "--durability", durability
                )
                servers[f"node-{durability}"] = (node.url, node.pid)
                secs = preload(node.url, args.keys, args.connections)
                print(f"  preloaded {args.keys} keys into node ({durability}) in {secs:.1f}s")
            payload = run_all(args, root, servers)
            payload["environment"] = env
            if args.profile > 0:
                payload["profiles"] = run_profiles(args, root, servers)
        finally:
            cluster.shutdown()
            if bare is not None:
                benchlib.stop_process(bare)
    path = benchlib.write_results("single_node", payload)
    print(f"\nresults: {path}")


CASES = [
    ("bare GET", "bare", "GET"),
    ("node GET (wal)", "node-wal", "GET"),
    ("node GET (sync)", "node-sync", "GET"),
    ("bare PUT", "bare", "PUT"),
    ("node PUT (wal)", "node-wal", "PUT"),
    ("node PUT (sync)", "node-sync", "PUT"),
]


def run_case(
    gen: Wrk | PyLoad, args: argparse.Namespace, url: str, pid: int, op: str, tag: str
) -> dict[str, Any]:
    if args.warmup > 0:
        gen.run(url, op, args.warmup, args.keys, f"/v1/kv/w{tag}-")
    meter = CpuMeter([pid])
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = gen.run(url, op, args.duration, args.keys, f"/v1/kv/p{tag}-")
    cpu = meter.stop()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if isinstance(gen, Wrk):
        wrk_cpu = (children1.ru_utime + children1.ru_stime) - (
            children0.ru_utime + children0.ru_stime
        )
        cpu["loadgen_cpu_pct"] = round(100 * wrk_cpu / cpu["wall_s"], 1)
    res.update(cpu)
    # CPU-normalised capacity: robust when other processes share the server's core
    res["server_us_per_req"] = round(1e6 * cpu["server_cpu_s"] / max(1, res["requests"]), 1)
    res["req_per_server_cpu_s"] = round(res["requests"] / max(1e-9, cpu["server_cpu_s"]), 1)
    res["starved"] = cpu["server_cpu_pct"] < 85 and cpu[f"core{SERVER_CORE}_busy_pct"] > 95
    return res


def run_all(
    args: argparse.Namespace, root: Path, servers: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    gen: Wrk | PyLoad = (
        Wrk(root, args.connections) if args.loadgen == "wrk" else PyLoad(args.connections)
    )
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in CASES}
    for rnd in range(args.rounds):
        for name, server, op in CASES:
            url, pid = servers[server]
            res = run_case(gen, args, url, pid, op, f"{rnd}")
            rounds[name].append(res)
            print(
                f"  round {rnd + 1} {name:16s} {res['req_s']:>9,.0f} req/s  "
                f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  "
                f"server cpu {res['server_cpu_pct']:.0f}%  load cpu {res['loadgen_cpu_pct']:.0f}%"
                f"  errors {res['errors']}"
            )
    results: dict[str, dict[str, Any]] = {}
    for name, runs in rounds.items():
        med = sorted(runs, key=lambda r: r["req_s"])[len(runs) // 2]
        results[name] = {**med, "rounds_req_s": [r["req_s"] for r in runs]}

    def ratio(a: str, b: str, field: str = "req_s") -> float:
        return round(results[a][field] / results[b][field], 3)

    pairs = [
        ("node GET (wal)", "bare GET", 0.7),
        ("node GET (sync)", "bare GET", None),
        ("node PUT (wal)", "bare PUT", 0.6),
        ("node PUT (sync)", "bare PUT", None),
    ]
    ratios = {
        f"{a} / {b}": {
            "value": ratio(a, b),
            "per_server_cpu_s": ratio(a, b, "req_per_server_cpu_s"),
            "target": t,
            "met": (ratio(a, b) >= t) if t else None,
        }
        for a, b, t in pairs
    }
    rows = []
    for name, _, _ in CASES:
        r = results[name]
        rows.append(
            [
                name,
                r["req_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["p999_ms"],
                r["errors"],
                r["server_us_per_req"],
                r["req_per_server_cpu_s"],
                r["server_cpu_pct"],
                r["loadgen_cpu_pct"],
                "STARVED" if r["starved"] else "",
            ]
        )
    print()
    print(
        benchlib.table(
            [
                "case",
                "req/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "errors",
                "srv us/req",
                "req/srv-cpu-s",
                "srv cpu%",
                "load cpu%",
                "note",
            ],
            rows,
        )
    )
    print()
    print(
        benchlib.table(
            ["ratio", "req/s", "per server CPU-s", "target", "met"],
            [
                [
                    k,
                    v["value"],
                    v["per_server_cpu_s"],
                    f">= {v['target']}" if v["target"] else "-",
                    ("yes" if v["met"] else "NO") if v["target"] else "-",
                ]
                for k, v in ratios.items()
            ],
        )
    )
    if any(r["starved"] for r in results.values()):
        print(
            "\nSTARVED: the server got < 85% of its core while the core was > 95% busy:"
            " other processes compete for core 0, raw req/s understate capacity; compare"
            " the per-server-CPU-second figures."
        )
    return {
        "benchmark": "single_node",
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "connections": args.connections,
            "preloaded_keys": args.keys,
            "value_bytes": VALUE_SIZE,
            "loadgen": args.loadgen,
            "server_core": SERVER_CORE,
            "load_core": LOAD_CORE,
            "node_flags": "--n 1 --r 1 --w 1 --durability wal|sync",
            "put_keys": "fresh key per request (insert)",
        },
        "results": results,
        "ratios": ratios,
    }


def run_profiles(
    args: argparse.Namespace, root: Path, servers: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    gen: Wrk | PyLoad = (
        Wrk(root, args.connections) if args.loadgen == "wrk" else PyLoad(args.connections)
    )
    out: dict[str, Any] = {}
    for server, label in (("node-wal", "node {op} (wal)"), ("bare", "bare {op}")):
        url, pid = servers[server]
        for op in ("GET", "PUT"):
            title = label.format(op=op)
            name = title.replace(" ", "_").replace("(", "").replace(")", "").lower()
            path = benchlib.RESULTS_DIR / "profiles" / f"single_node_{name}.txt"
            spy = benchlib.start_py_spy(pid, path, args.profile, native=args.native)
            time.sleep(0.5)
            cpu0 = benchlib.proc_cpu_seconds(pid)
            res = gen.run(url, op, args.profile, args.keys, "/v1/kv/prof-")
            us = 1e6 * (benchlib.proc_cpu_seconds(pid) - cpu0) / max(1, res["requests"])
            print(f"\n(under py-spy: {res['req_s']:,.0f} req/s)")
            prof = benchlib.finish_py_spy(spy, path, title, us_per_op=us)
            if prof is not None:
                prof["req_s_while_profiling"] = res["req_s"]
                out[title] = prof
    return out


if __name__ == "__main__":
    main()
