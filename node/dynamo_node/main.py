"""`dynamo-node`: run one node until SIGTERM/SIGINT (then flush and close RocksDB)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import fields
from typing import Any

import msgpack
import uvloop
from aiohttp import web

from dynamo_node.core.config import FIELD_RULES, FIELD_TYPES, NodeConfig, check_field
from dynamo_node.core.errors import DynamoError
from dynamo_node.core.membership import ClusterState
from dynamo_node.edge.http1 import KvServer
from dynamo_node.edge.metrics import Metrics
from dynamo_node.edge.web import ADMISSION_KEY, API_KEY, AUTH_KEY, build_app
from dynamo_node.host.fdbudget import Budget, budget
from dynamo_node.host.memory import MIB, declared_limit, default_row_cache_bytes, memory_limit
from dynamo_node.net.tls import server_context
from dynamo_node.node import Node
from dynamo_node.store.identity import META_NODE_ID, META_STATE
from dynamo_node.store.storage import Family
from dynamo_node.store.storage_rocks import RocksStorage, is_corruption, salvage_meta

log = logging.getLogger("dynamo.main")

#: the exit status when the data directory is damaged (EX_DATAERR)
EXIT_CORRUPT = 65
#: in-flight client requests get this long to finish on SIGTERM
SHUTDOWN_TIMEOUT_S = 5.0
#: the node's own tasks get this long to stop before a hard (but WAL-synced) exit
STOP_DEADLINE_S = 10.0


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
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
        "--seeds",
        dest="seed",
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
    p.add_argument(
        "--lww", action=argparse.BooleanOptionalAction, default=None, help="last-write-wins mode"
    )
    p.add_argument(
        "--hinted-handoff",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep hints for unreachable replicas (default on)",
    )
    p.add_argument(
        "--anti-entropy-interval",
        "--anti-entropy-interval-s",
        dest="anti_entropy_interval_s",
        type=float,
        help="seconds between periodic anti-entropy rounds (default 600; 0 disables)",
    )
    p.add_argument(
        "--tombstone-grace",
        "--tombstone-grace-s",
        dest="tombstone_grace_s",
        type=float,
        help="seconds a tombstone is kept at least before GC",
    )
    p.add_argument(
        "--gossip-interval",
        "--gossip-interval-s",
        dest="gossip_interval_s",
        type=float,
        help="seconds between gossip rounds",
    )
    p.add_argument(
        "--transfer-batch",
        "--transfer-batch-keys",
        dest="transfer_batch_keys",
        type=int,
        help="keys per partition-transfer batch",
    )
    p.add_argument(
        "--transfer-pause",
        "--transfer-batch-pause-s",
        dest="transfer_batch_pause_s",
        type=float,
        help="seconds to pause between transfer batches (throttle)",
    )
    p.add_argument(
        "--failure-timeout",
        "--failure-timeout-s",
        dest="failure_timeout_s",
        type=float,
        help="a peer not heard from this long (seconds) is reported down",
    )
    p.add_argument("--client-token-file", help="file holding the client token")
    p.add_argument("--cluster-token-file", help="file holding the cluster (admin/internal) token")
    p.add_argument(
        "--tls-cert",
        "--tls-cert-file",
        dest="tls_cert_file",
        help="PEM certificate (chain) of this node",
    )
    p.add_argument(
        "--tls-key", "--tls-key-file", dest="tls_key_file", help="PEM private key of this node"
    )
    p.add_argument(
        "--tls-ca", "--tls-ca-file", dest="tls_ca_file", help="PEM CA that signed every node"
    )
    p.add_argument("--max-concurrent-requests", dest="max_concurrent_requests", type=int)
    p.add_argument(
        "--row-cache-bytes",
        dest="row_cache_bytes",
        type=_cache_bytes,
        default=argparse.SUPPRESS,
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
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=os.environ.get("DYNAMO_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO (the default; env DYNAMO_LOG_LEVEL), WARNING, ERROR or CRITICAL",
    )
    add_field_flags(p)
    return p


#: NodeConfig fields set through a flag of another name (the tokens: from a file or the
#: environment, never on the command line where `ps` shows them)
FIELD_DESTS = {
    "seeds": "seed",
    "client_token": "client_token_file",
    "cluster_token": "cluster_token_file",
}


def field_dest(name: str) -> str:
    """The argparse dest that sets NodeConfig field `name`."""
    return FIELD_DESTS.get(name, name)


def add_field_flags(p: argparse.ArgumentParser) -> None:
    """A flag `--FIELD-NAME` for every NodeConfig field no flag above sets, generated from
    the dataclass so none is forgotten; unset flags leave the attribute absent."""
    taken = {action.dest for action in p._actions}
    for f in fields(NodeConfig):
        if field_dest(f.name) in taken:
            continue
        ftype, rule = FIELD_TYPES[f.name], FIELD_RULES[f.name]
        flag = "--" + f.name.replace("_", "-")
        common: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        default = "auto" if f.default is None else f.default
        text = f"{rule.help} (default {default})"
        if ftype.kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=text, **common)
        elif ftype.choices:
            p.add_argument(flag, choices=ftype.choices, help=text, **common)
        elif ftype.optional:
            p.add_argument(flag, type=_int_or_auto, metavar="N|auto", help=text, **common)
        else:
            p.add_argument(flag, type=ftype.kind, help=text, **common)


def _int_or_auto(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


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
    """The token in file `path` (stripped), else in environment variable `env`; None
    when neither is given (an unset or empty variable). A file that is empty or holds
    only whitespace, or a variable of only whitespace, is an error: never "auth off"."""
    if path is not None:
        if not path:
            raise DynamoError(f"an empty token file path was given (instead of {env})")
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
        if not value:
            raise DynamoError(f"{path}: the token file is empty")
        return value
    raw = os.environ.get(env)
    if not raw:
        return None
    value = raw.strip()
    if not value:
        raise DynamoError(f"{env} holds only whitespace: set it to a token or unset it")
    return value


def check_tokens(client: Any, cluster: Any) -> None:
    """Any auth needs the cluster token: it guards the node-to-node (peer) port and the
    admin API, which a client token alone would leave open to anyone."""
    for name, value in (("client_token", client), ("cluster_token", cluster)):
        if isinstance(value, str) and value and not value.strip():
            raise DynamoError(f"{name} holds only whitespace")
    if client and not cluster:
        raise DynamoError(
            "a client token is set (--client-token-file or DYNAMO_CLIENT_TOKEN) but no "
            "cluster token: set --cluster-token-file or DYNAMO_CLUSTER_TOKEN too (it "
            "guards the node-to-node port and the admin API, which would be open otherwise)"
        )


def load_config_file(path: str) -> dict[str, Any]:
    """The settings of a `--config` JSON file, each type-checked: every error names the
    file and the field."""
    with open(path, encoding="utf-8") as f:
        try:
            loaded = json.load(f)
        except ValueError as exc:
            raise DynamoError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise DynamoError(f"{path}: expected a JSON object")
    known = {f.name for f in fields(NodeConfig)}
    unknown = set(loaded) - known
    if unknown:
        raise DynamoError(f"{path}: unknown settings {sorted(unknown)}")
    if isinstance(loaded.get("seeds"), list):
        loaded["seeds"] = tuple(loaded["seeds"])
    for name, value in loaded.items():
        try:
            check_field(name, value)
        except DynamoError as exc:
            raise DynamoError(f"{path}: {exc}") from None
    return loaded


def build_config(args: argparse.Namespace) -> NodeConfig:
    settings: dict[str, Any] = load_config_file(args.config) if args.config else {}
    explicit = {
        "data_dir", "port", "host", "peer_port", "advertise", "node_id", "seeds", "cluster_id",
    }  # fmt: skip
    given = vars(args)
    for name in sorted({f.name for f in fields(NodeConfig)} - explicit):
        if name not in given:
            continue
        value = given[name]
        # None: not given; but flags of optional fields are absent unless given ("auto")
        if value is not None or FIELD_TYPES[name].optional:
            settings[name] = value
    client = _read_token(args.client_token_file, "DYNAMO_CLIENT_TOKEN")
    cluster = _read_token(args.cluster_token_file, "DYNAMO_CLUSTER_TOKEN")
    if client is not None:
        settings["client_token"] = client
    if cluster is not None:
        settings["cluster_token"] = cluster
    check_tokens(settings.get("client_token", ""), settings.get("cluster_token", ""))
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
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: terminal closed
        loop.add_signal_handler(sig, stop.set)
    kv: KvServer | None = None
    try:
        try:
            await node.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on peer port {config.host}:{config.effective_peer_port}: {exc}"
            ) from None
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
        try:
            await kv.start(config.host, config.port, ssl=server_context(config))
        except OSError as exc:
            raise StartupError(f"cannot listen on port {config.address}: {exc}") from None
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


class StartupError(Exception):
    """The node cannot start as configured (a busy port, a data directory in use or
    unusable): one line on stderr, exit 2."""


def is_lock_error(exc: BaseException) -> bool:
    """RocksDB's refusal to open a directory another process holds open."""
    return "lock file" in str(exc).lower()


def check_data_dir(path: str) -> None:
    """The data directory exists (created if missing) and is writable."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot use data directory {path}: {exc.strerror or exc}") from None
    if not os.path.isdir(path):
        raise StartupError(f"cannot use data directory {path}: not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"cannot use data directory {path}: not writable")


def check_port(host: str, port: int, what: str) -> None:
    """`port` can be bound on `host` (as the servers bind it, with SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as exc:
        busy = exc.errno == errno.EADDRINUSE
        hint = " (another dynamo-node, or another program, listens there)" if busy else ""
        raise StartupError(
            f"cannot listen on {what} {host}:{port}: {exc.strerror or exc}{hint}"
        ) from None


def open_storage(config: NodeConfig, cache: int, fds: Budget) -> tuple[RocksStorage, NodeConfig]:
    """Open the data directory; if RocksDB reports it damaged, refuse to start (exit 65)
    or, with on_corruption=replace, move it aside and start empty (a replacement)."""
    try:
        storage = RocksStorage(config.data_dir, row_cache_bytes=cache, max_open_files=fds.rocksdb)
        return storage, config
    except Exception as exc:
        if is_lock_error(exc):
            raise StartupError(f"another dynamo-node is using {config.data_dir} ({exc})") from None
        if isinstance(exc, OSError):
            raise StartupError(f"cannot open data directory {config.data_dir}: {exc}") from None
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
            up = sum(1 for m in state.members.values() if node.view.member_state(m) == "up")
        return {
            "hints_pending": node.hints.pending,
            "storage_bytes": node.storage.approximate_size(),
            "ring_version": state.version if state else 0,
            "members_up": up,
            "transfers_in_progress": len(node.transfers.progress),
            "row_cache_limit_bytes": getattr(node.storage, "row_cache_limit", 0),
            "storage_failed": 1 if node.storage_failure() is not None else 0,
            "replacing": 1 if node.view.replacing else 0,
        }

    def counters() -> dict[str, float]:
        c = node.coordinator.stats
        extra: dict[str, float] = node.report.counters()
        return {
            "read_repairs_total": c.read_repairs,
            "quorum_failures_total": c.quorum_failures,
            "hints_stored_total": node.hints.stats.stored,
            "hints_delivered_total": node.hints.stats.delivered,
            "fsyncs_total": node.commit_log.fsyncs,
            "row_cache_hits_total": getattr(node.storage, "row_hits", 0),
            "row_cache_misses_total": getattr(node.storage, "row_misses", 0),
            "clock_prune_suspects_total": node.replica.stats.prune_suspects,
            "gossip_foreign_refused_total": node.view.foreign_gossip,
            "peer_connections_refused_total": node._rpc.refused,
            "storage_corruption_total": getattr(node.storage, "corruptions", 0),
            **extra,
        }

    metrics.add_live(gauges, counters)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.log_level.upper() not in LOG_LEVELS:  # a bad DYNAMO_LOG_LEVEL
        print(f"dynamo-node: unknown log level {args.log_level!r}", file=sys.stderr)
        raise SystemExit(2)
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
    try:
        check_data_dir(config.data_dir)
        check_port(config.host, config.port, "port")
        check_port(config.host, config.effective_peer_port, "peer port")
        # uvloop: libuv's event loop, a large share more requests per core than asyncio's
        uvloop.run(serve(config))
    except StartupError as exc:
        print(f"dynamo-node: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
