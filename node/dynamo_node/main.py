"""`dynamo-node`: run one node until SIGTERM/SIGINT (then flush and close RocksDB)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import logging
import os
import signal
import sys
from dataclasses import fields
from typing import Any

import msgpack
import uvloop
from aiohttp import web

from .config import NodeConfig
from .errors import DynamoError
from .fdbudget import Budget, budget
from .http1 import KvServer
from .membership import ClusterState
from .memory import MIB, declared_limit, default_row_cache_bytes, memory_limit
from .metrics import Metrics
from .node import META_NODE_ID, META_STATE, Node
from .storage import Family
from .storage_rocks import RocksStorage, is_corruption, salvage_meta
from .tls import server_context
from .web import ADMISSION_KEY, API_KEY, AUTH_KEY, build_app

log = logging.getLogger("dynamo.main")

#: the exit status when the data directory is damaged (EX_DATAERR)
EXIT_CORRUPT = 65
#: in-flight client requests get this long to finish on SIGTERM
SHUTDOWN_TIMEOUT_S = 5.0
#: the node's own tasks get this long to stop before a hard (but WAL-synced) exit
STOP_DEADLINE_S = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynamo-node", description="Run one dynamokv node.")
    p.add_argument("--data-dir", required=True, help="RocksDB directory of this node")
    p.add_argument("--port", type=int, required=True, help="HTTP port (client + admin API)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--peer-port", type=int, default=0, help="node-to-node port (default PORT+10000)"
    )
    p.add_argument("--advertise", default="", help="host others use to reach this node")
    p.add_argument("--node-id", default="", help="stable node id (default: saved, else HOST:PORT)")
    p.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node of the cluster to join by gossip (repeatable)",
    )
    p.add_argument(
        "--cluster-id",
        default=os.environ.get("DYNAMO_CLUSTER_ID", ""),
        help="the cluster this node belongs to (env DYNAMO_CLUSTER_ID): with it a node "
        "never founds a new cluster, and refuses state and gossip of any other",
    )
    p.add_argument("--config", help="JSON file of settings (NodeConfig field names)")
    p.add_argument("--partitions", type=int, help="Q for a new cluster (power of two)")
    p.add_argument("--n", type=int, help="replicas per key")
    p.add_argument("--r", type=int, help="default read quorum")
    p.add_argument("--w", type=int, help="default write quorum")
    p.add_argument("--durability", choices=["sync", "wal"], help="when a write is acknowledged")
    p.add_argument("--lww", action="store_true", default=None, help="last-write-wins mode")
    p.add_argument("--no-hinted-handoff", dest="hinted_handoff", action="store_false", default=None)
    p.add_argument(
        "--anti-entropy-interval",
        dest="anti_entropy_interval_s",
        type=float,
        help="seconds between periodic anti-entropy rounds (default 600; 0 disables)",
    )
    p.add_argument(
        "--tombstone-grace",
        dest="tombstone_grace_s",
        type=float,
        help="seconds a tombstone is kept at least before GC",
    )
    p.add_argument("--gossip-interval", dest="gossip_interval_s", type=float)
    p.add_argument(
        "--transfer-batch",
        dest="transfer_batch_keys",
        type=int,
        help="keys per partition-transfer batch",
    )
    p.add_argument(
        "--transfer-pause",
        dest="transfer_batch_pause_s",
        type=float,
        help="seconds to pause between transfer batches (throttle)",
    )
    p.add_argument("--failure-timeout", dest="failure_timeout_s", type=float)
    p.add_argument("--client-token-file", help="file holding the client token")
    p.add_argument("--cluster-token-file", help="file holding the cluster (admin/internal) token")
    p.add_argument("--tls-cert", dest="tls_cert_file", help="PEM certificate (chain) of this node")
    p.add_argument("--tls-key", dest="tls_key_file", help="PEM private key of this node")
    p.add_argument("--tls-ca", dest="tls_ca_file", help="PEM CA that signed every node")
    p.add_argument("--max-concurrent-requests", dest="max_concurrent_requests", type=int)
    p.add_argument(
        "--row-cache-bytes",
        dest="row_cache_bytes",
        type=_cache_bytes,
        help="memory for recently used objects: bytes, 0 (off) or auto (the default: "
        "1/8 of the memory limit, cgroup or machine)",
    )
    p.add_argument(
        "--on-corruption",
        dest="on_corruption",
        choices=["refuse", "replace"],
        default=os.environ.get("DYNAMO_ON_CORRUPTION") or None,
        help="a data directory RocksDB reports damaged at start (env DYNAMO_ON_CORRUPTION): "
        "refuse to start, exit 65 (the default), or replace: move it aside to "
        "DIR.corrupt-TIMESTAMP and start empty, refilling from the other replicas",
    )
    p.add_argument("--log-level", default=os.environ.get("DYNAMO_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def _cache_bytes(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bytes or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def row_cache_bytes(config: NodeConfig, limit: int | None) -> int:
    """The row cache this node runs with: the configured size, else a share of `limit`."""
    if config.row_cache_bytes is not None:
        return config.row_cache_bytes
    return default_row_cache_bytes(limit)


def _read_token(path: str | None, env: str) -> str | None:
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    value = os.environ.get(env)
    return value.strip() if value else None


def build_config(args: argparse.Namespace) -> NodeConfig:
    settings: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            loaded = json.load(f)
        if not isinstance(loaded, dict):
            raise DynamoError(f"{args.config}: expected a JSON object")
        known = {f.name for f in fields(NodeConfig)}
        unknown = set(loaded) - known
        if unknown:
            raise DynamoError(f"{args.config}: unknown settings {sorted(unknown)}")
        settings.update(loaded)
    explicit = {
        "data_dir", "port", "host", "peer_port", "advertise", "node_id", "seeds", "cluster_id",
    }  # fmt: skip
    for name in sorted({f.name for f in fields(NodeConfig)} - explicit):
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    if "seeds" in settings:
        settings["seeds"] = tuple(settings["seeds"])
    client = _read_token(args.client_token_file, "DYNAMO_CLIENT_TOKEN")
    cluster = _read_token(args.cluster_token_file, "DYNAMO_CLUSTER_TOKEN")
    if client is not None:
        settings["client_token"] = client
    if cluster is not None:
        settings["cluster_token"] = cluster
    settings.update(
        data_dir=args.data_dir,
        port=args.port,
        host=args.host,
        peer_port=args.peer_port,
        advertise=args.advertise,
        node_id=args.node_id,
        seeds=tuple(args.seed) or tuple(settings.get("seeds", ())),
        cluster_id=args.cluster_id.strip() or str(settings.get("cluster_id", "")),
    )
    return NodeConfig(**settings)


async def serve(config: NodeConfig) -> None:
    limit = memory_limit()
    cache = row_cache_bytes(config, limit)
    log.info(
        "row cache %d MiB (memory limit %s)",
        cache // MIB,
        f"{limit // MIB} MiB" if limit else "unknown",
    )
    fds = budget()
    storage, config = open_storage(config, cache, fds)
    log.info(
        "table writes (flushes, compactions): %s",
        "direct I/O" if storage.direct_io else "through the page cache (no O_DIRECT here)",
    )
    node = Node(config, storage)
    metrics = Metrics()
    install_metrics(node, metrics)
    app = build_app(node, metrics)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kv: KvServer | None = None
    try:
        await node.start()
        tune_gc()
        await runner.setup()
        assert runner.server is not None
        # the client port: the lean server for /v1/kv, aiohttp (runner.server) for the rest
        kv = KvServer(
            app[API_KEY],
            app[AUTH_KEY],
            app[ADMISSION_KEY],
            metrics,
            runner.server,
            max_connections=fds.connections,
        )
        refused = kv
        metrics.add_live(
            dict, lambda: {"http_connections_refused_total": refused.refused_connections}
        )
        await kv.start(config.host, config.port, ssl=server_context(config))
        log.info(
            "dynamo-node %s ready on %s://%s (peer port %d, data %s, durability %s)",
            node.node_id,
            config.scheme,
            config.address,
            config.effective_peer_port,
            config.data_dir,
            config.durability,
        )
        await stop.wait()
        log.info("stopping")
    finally:
        await _shutdown(kv, runner, node)


def open_storage(config: NodeConfig, cache: int, fds: Budget) -> tuple[RocksStorage, NodeConfig]:
    """Open the data directory; if RocksDB reports it damaged, refuse to start (exit 65)
    or, with on_corruption=replace, move it aside and start empty (a replacement)."""
    try:
        storage = RocksStorage(config.data_dir, row_cache_bytes=cache, max_open_files=fds.rocksdb)
        return storage, config
    except Exception as exc:
        if not is_corruption(exc):
            raise
        damage = exc
    if config.on_corruption != "replace":
        log.critical(
            "refusing to start: the data in %s is damaged (%s). Nothing was skipped. "
            "Either restore this node's volume from a snapshot, or restart the node with "
            "--on-corruption=replace: the directory is moved aside (kept) and the node "
            "starts empty, refilling from its peers as a replacement (what only this "
            "replica held is lost)",
            config.data_dir,
            damage,
        )
        raise SystemExit(EXIT_CORRUPT)
    # the identity comes along: the replacement logic keys on the node id and cluster id
    saved = salvage_meta(config.data_dir, [META_NODE_ID, META_STATE])
    node_id = config.node_id or saved.get(META_NODE_ID, b"").decode()
    cluster = config.cluster_id
    if not cluster and META_STATE in saved:
        try:
            cluster = ClusterState.from_wire(msgpack.unpackb(saved[META_STATE], raw=False)).cluster
        except Exception as err:  # a damaged record: the cluster is learned by gossip
            log.warning("saved cluster state unreadable (%s)", err)
    if not node_id or not (cluster or config.seeds):
        log.critical(
            "refusing to start: the data in %s is damaged (%s) and this node's %s could "
            "not be read from it: give --node-id and --cluster-id to start it empty as a "
            "replacement, or restore its volume from a snapshot",
            config.data_dir,
            damage,
            "node id" if not node_id else "cluster id (and no --seed)",
        )
        raise SystemExit(EXIT_CORRUPT)
    aside = move_aside(config.data_dir)
    log.critical(
        "the data in %s is damaged (%s): moved it aside to %s (kept: delete it once the "
        "node is refilled, or keep it for analysis) and starting EMPTY as node %s of "
        "cluster %s; it refills from the other replicas as a replacement "
        "(--on-corruption=replace)",
        config.data_dir,
        damage,
        aside,
        node_id,
        cluster or "(learned from the seeds)",
    )
    config = config.replace(node_id=node_id, cluster_id=cluster)
    storage = RocksStorage(config.data_dir, row_cache_bytes=cache, max_open_files=fds.rocksdb)
    storage.write([(Family.META, META_NODE_ID, node_id.encode())])
    storage.sync_wal()
    storage.corruptions += 1
    return storage, config


def move_aside(data_dir: str) -> str:
    """Rename a damaged data directory to `<dir>.corrupt-<UTC time>` beside it (a rename:
    no space needed, nothing deleted); if it is a mount point, its contents move into
    `<dir>/corrupt-<UTC time>` instead (the same volume). Returns the new location."""
    real = os.path.realpath(data_dir)  # a symlink to the volume: move the volume's dir
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    if os.path.ismount(real):
        aside = os.path.join(real, f"corrupt-{stamp}")
        entries = [e for e in os.listdir(real) if not e.startswith("corrupt-")]
        entries = [e for e in entries if e != "lost+found"]
        os.mkdir(aside)
        for entry in entries:
            os.rename(os.path.join(real, entry), os.path.join(aside, entry))
        _fsync_dir(aside)
        _fsync_dir(real)
        return aside
    aside = f"{real}.corrupt-{stamp}"
    os.rename(real, aside)
    os.mkdir(real)
    _fsync_dir(os.path.dirname(real))
    return aside


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _shutdown(kv: KvServer | None, runner: web.AppRunner, node: Node) -> None:
    """Stop serving, stop the node, close RocksDB; never hang past STOP_DEADLINE_S."""
    if kv is not None:
        await kv.stop(SHUTDOWN_TIMEOUT_S)
    try:
        await asyncio.wait_for(runner.cleanup(), SHUTDOWN_TIMEOUT_S + 1)
    except TimeoutError:
        log.error("HTTP shutdown exceeded %.0fs; closing connections", SHUTDOWN_TIMEOUT_S)
    try:
        await asyncio.wait_for(node.stop(), STOP_DEADLINE_S)
    except TimeoutError:
        import faulthandler

        log.error("node stop exceeded %.0fs; syncing the WAL and exiting", STOP_DEADLINE_S)
        faulthandler.dump_traceback()
        node.storage.close()  # the WAL is synced on close: nothing acknowledged is lost
        os._exit(1)
    log.info("stopped cleanly")


#: young-generation size of the cyclic GC (CPython's default is 700 allocations)
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Fewer, larger young collections and no scans of what startup built.

    Requests allocate many short-lived containers; with CPython's default threshold a
    young collection ran every ~15 requests and promoted live request state, so older
    generations (Merkle trees, cluster state) were scanned often: about 7% of a node's
    CPU under load and pauses of tens of ms (bench/ycsb.py, py-spy --native). Garbage
    with cycles is still collected, a little later."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def install_metrics(node: Node, metrics: Metrics) -> None:
    def gauges() -> dict[str, float]:
        state = node.state
        up = 0
        if state is not None:
            up = sum(1 for m in state.members.values() if node.member_state(m) == "up")
        return {
            "hints_pending": node.hints.pending,
            "storage_bytes": node.storage.approximate_size(),
            "ring_version": state.version if state else 0,
            "members_up": up,
            "transfers_in_progress": len(node.handoff.progress),
            "row_cache_limit_bytes": getattr(node.storage, "row_cache_limit", 0),
            "storage_failed": 1 if node.storage_failure() is not None else 0,
            "replacing": 1 if node.replacing else 0,
        }

    def counters() -> dict[str, float]:
        c = node.coordinator.stats
        extra: dict[str, float] = node.ae_counters()
        return {
            "read_repairs_total": c.read_repairs,
            "quorum_failures_total": c.quorum_failures,
            "hints_stored_total": node.hints.stats.stored,
            "hints_delivered_total": node.hints.stats.delivered,
            "fsyncs_total": node.commit_log.fsyncs,
            "row_cache_hits_total": getattr(node.storage, "row_hits", 0),
            "row_cache_misses_total": getattr(node.storage, "row_misses", 0),
            "clock_prune_suspects_total": node.replica.stats.prune_suspects,
            "gossip_foreign_refused_total": node.foreign_gossip,
            "storage_corruption_total": getattr(node.storage, "corruptions", 0),
            **extra,
        }

    metrics.add_live(gauges, counters)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = build_config(args)
        declared_limit(os.environ)  # a garbled downward-API value stops here, clearly
    except (DynamoError, OSError, ValueError, TypeError) as exc:
        print(f"dynamo-node: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # uvloop: libuv's event loop, a large share more requests per core than asyncio's
    uvloop.run(serve(config))
