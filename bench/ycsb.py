"""A YCSB-style load against dynamokv (3 nodes N=3 R=2 W=2; 1 node N=R=W=1) and against
a 3-member etcd cluster (Debian etcd-server, v3 HTTP/JSON gateway), in one run, on the
same cores: every server process pinned to core 0, the load generator (this process,
bench/httpload.py raw-socket HTTP/1.1 keep-alive client on uvloop) pinned to core 1.

Workloads (YCSB core workloads; 1 KiB values; `--records` keys, preloaded untimed):
    A  50% read / 50% update          C  100% read
    W  100% update (not a core YCSB workload: the pure PUT rate the targets compare)
Distributions: uniform, and zipfian with YCSB's ScrambledZipfianGenerator (θ = 0.99,
zipfian over 10^10 items, FNV-1a-64 scrambled onto the key space).

Reads: dynamokv GET /v1/kv/{key} (R = cluster default); etcd POST /v3/kv/range with
"serializable": true. Updates: dynamokv PUT with the X-Dynamo-Context last seen for the
key (as a Dynamo client does; a blind PUT would add a sibling per write); etcd POST
/v3/kv/put. A dynamokv 3-node cluster with --durability sync (fsync per write, group
commit, as etcd always does) is measured too for A and W (uniform).

Targets (issue 3, item 9): dynamokv 3-node PUT (W, uniform) >= 2x etcd PUT, and GET
(C, uniform, R=2) >= 1.5x etcd GET.

    python bench/ycsb.py [--duration 15] [--quick] [--profile 15]

Writes bench/results/ycsb.json (and py-spy profiles of node n0 with --profile).
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

import benchlib
import httpload
from benchlib import LOAD_CORE, SERVER_CORE, CpuMeter, taskset

VALUE_SIZE = 1024
VALUE_POOL = 64


# --- key choosers -----------------------------------------------------------------------------
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 1099511628211
_MASK64 = (1 << 64) - 1


def fnvhash64(val: int) -> int:
    """YCSB Utils.fnvhash64 (Java long arithmetic, then Math.abs)."""
    h = _FNV_OFFSET
    for _ in range(8):
        h ^= val & 0xFF
        val >>= 8
        h = (h * _FNV_PRIME) & _MASK64
    if h >= 1 << 63:
        h -= 1 << 64
    return abs(h)


class ZipfianGenerator:
    """YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic
    databases", SIGMOD 1994): item 0 most popular, P(i) ∝ 1/(i+1)^θ."""

    def __init__(self, items: int, theta: float = 0.99, zetan: float | None = None) -> None:
        self.items = items
        self.theta = theta
        self.alpha = 1.0 / (1.0 - theta)
        self.zeta2theta = self.zeta(2, theta)
        self.zetan = zetan if zetan is not None else self.zeta(items, theta)
        self.eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - self.zeta2theta / self.zetan)
        self.half_pow_theta = 1.0 + 0.5**theta

    @staticmethod
    def zeta(n: int, theta: float) -> float:
        return sum(1.0 / (i + 1) ** theta for i in range(n))

    def next(self, u: float) -> int:
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.half_pow_theta:
            return 1
        return int(self.items * (self.eta * u - self.eta + 1) ** self.alpha)


class ScrambledZipfian:
    """YCSB's ScrambledZipfianGenerator, what `requestdistribution=zipfian` uses: a
    zipfian over 10^10 items (precomputed zeta for θ = 0.99), hashed onto [0, items) so
    that the popular keys are spread over the key space."""

    ITEM_COUNT = 10_000_000_000
    ZETAN = 26.46902820178302  # zeta(10^10, 0.99), as in YCSB

    def __init__(self, items: int, rng: random.Random, theta: float = 0.99) -> None:
        if theta != 0.99:
            raise ValueError("only θ = 0.99 (YCSB's precomputed constant) is supported")
        self.items = items
        self.rng = rng
        self.gen = ZipfianGenerator(self.ITEM_COUNT, theta, self.ZETAN)

    def __call__(self) -> int:
        return fnvhash64(self.gen.next(self.rng.random())) % self.items


def make_chooser(dist: str, items: int, rng: random.Random) -> Callable[[], int]:
    if dist == "uniform":
        return lambda: rng.randrange(items)
    return ScrambledZipfian(items, rng)


def skew(dist: str, items: int) -> dict[str, float]:
    chooser = make_chooser(dist, items, random.Random(7))
    draws = Counter(chooser() for _ in range(200_000))
    top = [c for _, c in draws.most_common(100)]
    return {
        "top1_share": round(top[0] / 200_000, 4),
        "top10_share": round(sum(top[:10]) / 200_000, 4),
        "top100_share": round(sum(top) / 200_000, 4),
    }


WORKLOADS = {"A": 0.5, "C": 1.0, "W": 0.0}  # read proportion


# --- systems ------------------------------------------------------------------------------
class System:
    name = ""
    capture = b""
    ok_statuses: tuple[int, ...] = (200, 204)

    def __init__(self, records: int) -> None:
        self.records = records
        self.values = [os.urandom(VALUE_SIZE) for _ in range(VALUE_POOL)]
        self.targets: list[tuple[str, int]] = []
        self.pids: list[int] = []

    def start(self, root: Path) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def read(self, i: int) -> tuple[bytes, httpload.OnReply]:
        raise NotImplementedError

    def update(self, i: int, v: int) -> tuple[bytes, httpload.OnReply]:
        raise NotImplementedError


def key_of(i: int) -> str:
    return f"user{i:08d}"


class Dynamo(System):
    capture = b"x-dynamo-context"
    ok_statuses = (200, 204, 300)

    def __init__(self, records: int, nodes: int, durability: str = "wal") -> None:
        super().__init__(records)
        self.nodes = nodes
        self.durability = durability
        self.name = f"dynamokv-{nodes}node" + ("-sync" if durability == "sync" else "")
        self.cluster: Any = None
        self.ctx: list[bytes | None] = [None] * records
        self.gets = [
            f"GET /v1/kv/{key_of(i)} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
            for i in range(records)
        ]
        self.siblings = 0

    def flags(self) -> list[str]:
        n = self.nodes
        quorum = 2 if n == 3 else 1
        return [
            "--n",
            str(n),
            "--r",
            str(quorum),
            "--w",
            str(quorum),
            "--durability",
            self.durability,
        ]

    def start(self, root: Path) -> None:
        (root / self.name).mkdir(parents=True, exist_ok=True)
        self.cluster = benchlib.dynamo_cluster(root / self.name)
        if self.nodes == 1:
            self.cluster.add_node(*self.flags())
        else:
            self.cluster.form(self.nodes, *self.flags())
        self._refresh()

    def _refresh(self) -> None:
        self.targets = [("127.0.0.1", n.port) for n in self.cluster.nodes]
        self.pids = [n.pid for n in self.cluster.nodes]

    def restart_with(self, durability: str) -> None:
        """Restart every node with another durability setting (same data, same ring)."""
        for node in self.cluster.nodes:
            self.cluster.stop(node)
            benchlib.set_node_option(node, "--durability", durability)
            self.cluster.start(node)
        if self.nodes > 1:
            self.cluster.wait_converged(self.cluster.nodes)
        self.durability = durability
        self.name = f"dynamokv-{self.nodes}node" + ("-sync" if durability == "sync" else "")
        self._refresh()
        time.sleep(3)  # let hints from the rolling restart drain

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()

    def _remember(self, i: int) -> Callable[[int, bytes | None, bytes], bool]:
        ctx = self.ctx

        def on_reply(status: int, captured: bytes | None, body: bytes) -> bool:
            if captured:
                ctx[i] = captured
            if status == 300:
                self.siblings += 1
            return True

        return on_reply

    def read(self, i: int) -> tuple[bytes, httpload.OnReply]:
        return self.gets[i], self._remember(i)

    def update(self, i: int, v: int) -> tuple[bytes, httpload.OnReply]:
        ctx = self.ctx[i]
        head = (
            f"PUT /v1/kv/{key_of(i)} HTTP/1.1\r\nHost: bench\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {VALUE_SIZE}\r\n"
        ).encode()
        if ctx:
            head += b"X-Dynamo-Context: " + ctx + b"\r\n"
        return head + b"\r\n" + self.values[v], self._remember(i)


class Etcd(System):
    name = "etcd-3member"
    ok_statuses = (200,)

    def __init__(self, records: int, members: int = 3) -> None:
        super().__init__(records)
        self.members = members
        self.procs: list[subprocess.Popen[bytes]] = []
        self.keys = [base64.b64encode(key_of(i).encode()) for i in range(records)]
        self.vals = [base64.b64encode(v) for v in self.values]
        self.version = ""
        self.missing = 0

    @staticmethod
    def available() -> str | None:
        return shutil.which("etcd")

    def start(self, root: Path) -> None:
        from tests.harness import free_port, http, wait_for

        exe = self.available()
        if exe is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        self.version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
        client_ports = [free_port() for _ in range(self.members)]
        peer_ports = [free_port() for _ in range(self.members)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer_ports[i]}" for i in range(self.members))
        for i in range(self.members):
            data = root / "etcd" / f"m{i}"
            data.mkdir(parents=True)
            argv = [
                exe,
                "--name",
                f"m{i}",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                f"http://127.0.0.1:{client_ports[i]}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client_ports[i]}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_ports[i]}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_ports[i]}",
                "--initial-cluster",
                initial,
                "--initial-cluster-token",
                "dynamokv-bench",
                "--initial-cluster-state",
                "new",
                "--quota-backend-bytes",
                str(8 << 30),
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ]
            log = open(root / "etcd" / f"m{i}.log", "wb")  # noqa: SIM115 - process lifetime
            self.procs.append(
                subprocess.Popen(taskset(SERVER_CORE, argv), stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()
        self.targets = [("127.0.0.1", p) for p in client_ports]
        self.pids = [p.pid for p in self.procs]
        for port in client_ports:
            wait_for(
                lambda port=port: (
                    b'"true"' in http("GET", f"http://127.0.0.1:{port}/health", timeout=2)[2]
                ),
                60,
                what=f"etcd member on {port} healthy",
            )

    def stop(self) -> None:
        for proc in self.procs:
            benchlib.stop_process(proc)

    def _post(self, path: str, body: bytes) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def _check_found(self, status: int, captured: bytes | None, body: bytes) -> bool:
        if status == 200 and b'"kvs"' not in body:
            self.missing += 1
            return False
        return True

    def read(self, i: int) -> tuple[bytes, httpload.OnReply]:
        body = b'{"key":"' + self.keys[i] + b'","serializable":true}'
        return self._post("/v3/kv/range", body), self._check_found

    def update(self, i: int, v: int) -> tuple[bytes, httpload.OnReply]:
        body = b'{"key":"' + self.keys[i] + b'","value":"' + self.vals[v] + b'"}'
        return self._post("/v3/kv/put", body), None


# --- running -------------------------------------------------------------------------------
def preload(system: System, concurrency: int) -> dict[str, Any]:
    reqs = [system.update(i, i % VALUE_POOL) for i in range(system.records)]
    ok, errors, secs = uvloop.run(
        httpload.run_fixed(system.targets, reqs, concurrency, system.capture, system.ok_statuses)
    )
    print(
        f"  {system.name}: preloaded {ok:,} keys in {secs:.1f}s ({ok / secs:,.0f}/s), "
        f"{errors} errors"
    )
    return {
        "keys": ok,
        "errors": errors,
        "seconds": round(secs, 2),
        "puts_per_s": round(ok / secs, 1),
    }


def run_workload(
    system: System,
    workload: str,
    dist: str,
    args: argparse.Namespace,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    rng = random.Random(f"{system.name}/{workload}/{dist}")
    choose = make_chooser(dist, system.records, rng)
    read_share = WORKLOADS[workload]
    rand = rng.random
    read, update = system.read, system.update

    def next_request(_worker: int) -> tuple[str, bytes, httpload.OnReply]:
        i = choose()
        if rand() < read_share:
            data, on_reply = read(i)
            return "read", data, on_reply
        data, on_reply = update(i, int(rand() * VALUE_POOL))
        return "update", data, on_reply

    sibs0 = getattr(system, "siblings", 0)
    meter = CpuMeter(system.pids)
    cpu: dict[str, Any] = {}
    res = uvloop.run(
        httpload.run_closed_loop(
            system.targets,
            next_request,
            args.concurrency,
            seconds,
            warmup,
            system.capture,
            system.ok_statuses,
            on_window=(meter.start, lambda: cpu.update(meter.stop())),
        )
    )
    summary = res.summary()
    out: dict[str, Any] = {
        "system": system.name,
        "workload": workload,
        "distribution": dist,
        **summary,
    }
    out["cpu"] = cpu
    out["ops_per_server_cpu_s"] = round(summary["ok"] / max(1e-9, cpu["server_cpu_s"]), 1)
    out["loadgen_saturated"] = cpu["loadgen_cpu_pct"] > 85
    out["starved"] = cpu["server_cpu_pct"] < 85 and cpu[f"core{SERVER_CORE}_busy_pct"] > 95
    if isinstance(system, Dynamo):
        out["sibling_reads"] = system.siblings - sibs0
    by = summary["by_op"]
    rd, up = by.get("read", {}), by.get("update", {})
    print(
        f"  {system.name:20s} {workload} {dist:8s} {summary['ops_per_s']:>8,.0f} ops/s  "
        f"read p50/p99/p99.9 {rd.get('p50_ms', '-')}/{rd.get('p99_ms', '-')}/"
        f"{rd.get('p999_ms', '-')} ms  update {up.get('p50_ms', '-')}/{up.get('p99_ms', '-')}/"
        f"{up.get('p999_ms', '-')} ms  err {summary['errors']}  srv cpu "
        f"{cpu['server_cpu_pct']:.0f}%  load cpu {cpu['loadgen_cpu_pct']:.0f}%"
        + ("  STARVED" if out["starved"] else "")
        + ("  LOADGEN-SATURATED" if out["loadgen_saturated"] else "")
    )
    return out


def profile_node(
    system: Dynamo, args: argparse.Namespace, workload: str, label: str
) -> dict[str, Any] | None:
    node = system.cluster.nodes[0]
    path = benchlib.RESULTS_DIR / "profiles" / f"ycsb_{system.name}_n0_{label}.txt"
    spy = benchlib.start_py_spy(node.pid, path, args.profile, native=args.native)
    time.sleep(0.5)
    cpu0 = benchlib.proc_cpu_seconds(node.pid)
    res = run_workload(system, workload, "uniform", args, args.profile, 0.0)
    # n0 coordinates a third of the requests and is a replica of every key (N=3, 3 nodes)
    us = 1e6 * (benchlib.proc_cpu_seconds(node.pid) - cpu0) / max(1, res["ok"] / len(system.pids))
    prof = benchlib.finish_py_spy(
        spy, path, f"{system.name} n0 under {label} (µs per coordinated request)", us_per_op=us
    )
    if prof is not None:
        prof["run_while_profiling"] = {
            k: res[k] for k in ("ops_per_s", "errors", "p50_ms", "p99_ms", "by_op")
        }
    return prof


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--systems",
        default="dynamo3,dynamo3-sync,dynamo1,etcd",
        help="comma list of dynamo3, dynamo3-sync, dynamo1, etcd",
    )
    p.add_argument("--quick", action="store_true", help="10k keys, a few seconds per run")
    p.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="S",
        help="py-spy node n0 of the 3-node cluster for S s under C and under W",
    )
    p.add_argument("--native", action="store_true", help="py-spy --native")
    p.add_argument("--keep", action="store_true", help="keep the temp data dirs")
    args = p.parse_args()
    if args.quick:
        benchlib.use_quick_dir()
        args.records = min(args.records, 10_000)
        args.duration = min(args.duration, 4.0)
        args.warmup = min(args.warmup, 1.0)
        args.profile = min(args.profile, 4.0)
    return args


PLAN = [("A", "uniform"), ("C", "uniform"), ("W", "uniform"), ("A", "zipfian"), ("C", "zipfian")]
SYNC_PLAN = [("A", "uniform"), ("W", "uniform")]


def main() -> None:
    args = parse_args()
    benchlib.check_cores()
    benchlib.pin_self(LOAD_CORE)
    env = benchlib.environment()
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    print(
        f"ycsb: {args.records:,} records, {args.duration:.0f}s (+{args.warmup:.0f}s warmup) per "
        f"run, {args.concurrency} connections, servers on core {SERVER_CORE}, load on core "
        f"{LOAD_CORE}; loadavg {env['loadavg_at_start'][0]:.2f}"
    )
    payload: dict[str, Any] = {
        "benchmark": "ycsb",
        "settings": {
            "records": args.records,
            "value_bytes": VALUE_SIZE,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "server_core": SERVER_CORE,
            "load_core": LOAD_CORE,
            "workloads": {
                "A": "50% read / 50% update",
                "C": "100% read",
                "W": "100% update (pure PUT rate)",
            },
            "zipfian": "YCSB ScrambledZipfianGenerator, theta 0.99",
            "key_skew": {d: skew(d, args.records) for d in ("uniform", "zipfian")},
            "loadgen": "bench/httpload.py (asyncio raw-socket HTTP/1.1, uvloop, one process)",
        },
        "systems": {},
        "runs": [],
        "environment": env,
    }
    runs: list[dict[str, Any]] = payload["runs"]
    profiles: dict[str, Any] = {}
    with benchlib.temp_root("dynamokv-bench-ycsb-", args.keep) as root:
        if "dynamo3" in wanted or "dynamo3-sync" in wanted:
            system = Dynamo(args.records, 3)
            try:
                system.start(root)
                payload["systems"][system.name] = {
                    "nodes": 3,
                    "n": 3,
                    "r": 2,
                    "w": 2,
                    "durability": "wal",
                    "preload": preload(system, args.concurrency),
                }
                if "dynamo3" in wanted:
                    runs += [
                        run_workload(system, w, d, args, args.duration, args.warmup)
                        for w, d in PLAN
                    ]
                    if args.profile > 0:
                        profiles["dynamokv-3node n0, workload C (GET, R=2)"] = profile_node(
                            system, args, "C", "get"
                        )
                        profiles["dynamokv-3node n0, workload W (PUT, W=2)"] = profile_node(
                            system, args, "W", "put"
                        )
                if "dynamo3-sync" in wanted:
                    system.restart_with("sync")
                    payload["systems"][system.name] = {
                        "nodes": 3,
                        "n": 3,
                        "r": 2,
                        "w": 2,
                        "durability": "sync",
                        "note": "same cluster and data, restarted with --durability sync",
                    }
                    runs += [
                        run_workload(system, w, d, args, args.duration, args.warmup)
                        for w, d in SYNC_PLAN
                    ]
            finally:
                system.stop()
        if "dynamo1" in wanted:
            system = Dynamo(args.records, 1)
            try:
                system.start(root)
                payload["systems"][system.name] = {
                    "nodes": 1,
                    "n": 1,
                    "r": 1,
                    "w": 1,
                    "durability": "wal",
                    "preload": preload(system, args.concurrency),
                }
                runs += [
                    run_workload(system, w, d, args, args.duration, args.warmup) for w, d in PLAN
                ]
            finally:
                system.stop()
        if "etcd" in wanted:
            etcd = Etcd(args.records)
            if etcd.available() is None:
                msg = "etcd-server is not installed: no etcd figures (none faked)"
                print(f"  {msg}")
                payload["systems"]["etcd-3member"] = {"unavailable": msg}
            else:
                try:
                    etcd.start(root)
                    payload["systems"][etcd.name] = {
                        "members": 3,
                        "version": etcd.version,
                        "reads": "serializable",
                        "gateway": "/v3/kv/range, /v3/kv/put",
                        "preload": preload(etcd, args.concurrency),
                    }
                    runs += [
                        run_workload(etcd, w, d, args, args.duration, args.warmup) for w, d in PLAN
                    ]
                    payload["systems"][etcd.name]["missing_keys_on_read"] = etcd.missing
                finally:
                    etcd.stop()
    if profiles:
        payload["profiles"] = profiles
    payload["targets"] = targets(runs)
    report(runs, payload["targets"])
    path = benchlib.write_results("ycsb", payload)
    print(f"\nresults: {path}")


def _find(runs: list[dict[str, Any]], system: str, workload: str, dist: str) -> Any:
    return next(
        (
            r
            for r in runs
            if r["system"] == system and r["workload"] == workload and r["distribution"] == dist
        ),
        None,
    )


def targets(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, workload, dist, want in [
        ("PUT: dynamokv-3node W / etcd W (uniform)", "W", "uniform", 2.0),
        ("GET: dynamokv-3node C / etcd C (uniform)", "C", "uniform", 1.5),
        ("GET: dynamokv-3node C / etcd C (zipfian)", "C", "zipfian", None),
        ("mixed: dynamokv-3node A / etcd A (uniform)", "A", "uniform", None),
        ("mixed: dynamokv-3node A / etcd A (zipfian)", "A", "zipfian", None),
    ]:
        mine = _find(runs, "dynamokv-3node", workload, dist)
        theirs = _find(runs, "etcd-3member", workload, dist)
        if mine is None or theirs is None or not theirs["ops_per_s"]:
            out[label] = {
                "value": None,
                "target": want,
                "met": None,
                "note": "not measured (system missing)",
            }
            continue
        value = round(mine["ops_per_s"] / theirs["ops_per_s"], 3)
        per_cpu = round(mine["ops_per_server_cpu_s"] / theirs["ops_per_server_cpu_s"], 3)
        out[label] = {
            "value": value,
            "per_server_cpu_s": per_cpu,
            "target": want,
            "met": (value >= want) if want else None,
        }
    return out


def report(runs: list[dict[str, Any]], tgt: dict[str, Any]) -> None:
    rows = []
    for r in runs:
        rd, up = r["by_op"].get("read", {}), r["by_op"].get("update", {})
        note = []
        if r.get("starved"):
            note.append("STARVED")
        if r.get("loadgen_saturated"):
            note.append("LOADGEN-SAT")
        if r.get("sibling_reads"):
            note.append(f"{r['sibling_reads']} sibling reads")
        rows.append(
            [
                r["system"],
                r["workload"],
                r["distribution"],
                r["ops_per_s"],
                rd.get("p50_ms"),
                rd.get("p99_ms"),
                rd.get("p999_ms"),
                up.get("p50_ms"),
                up.get("p99_ms"),
                up.get("p999_ms"),
                r["errors"],
                r["ops_per_server_cpu_s"],
                r["cpu"]["server_cpu_pct"],
                r["cpu"]["loadgen_cpu_pct"],
                " ".join(note),
            ]
        )
    print()
    print(
        benchlib.table(
            [
                "system",
                "wl",
                "dist",
                "ops/s",
                "rd p50",
                "rd p99",
                "rd p99.9",
                "up p50",
                "up p99",
                "up p99.9",
                "errors",
                "ops/srv-cpu-s",
                "srv cpu%",
                "load cpu%",
                "note",
            ],
            rows,
        )
    )
    print("(latencies in ms)")
    print()
    print(
        benchlib.table(
            ["ratio", "ops/s", "per server CPU-s", "target", "met"],
            [
                [
                    k,
                    v["value"],
                    v.get("per_server_cpu_s"),
                    f">= {v['target']}" if v["target"] else "-",
                    ("yes" if v["met"] else "NO") if v["met"] is not None else "-",
                ]
                for k, v in tgt.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
