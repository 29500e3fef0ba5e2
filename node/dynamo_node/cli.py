"""dynamoctl: the client and admin command line of dynamokv (DESIGN.md §1, §5).

A thin shell over `client.DynamoClient`: parse arguments, make one or a few calls,
render the answer for a person (tables, progress bars) or for a script (`--json`),
and turn every failure into one line `dynamoctl: <message>` on stderr and an exit
code, never a traceback. `get` writes a single value to stdout as raw bytes, so
`dynamoctl get KEY > file` round-trips with `dynamoctl put KEY --file file`.

Exit codes (contract for scripts):

    0  success
    1  not found (key, node, job)
    2  usage error, or a request the node refused as bad (HTTP 400, 413)
    3  the key has siblings (get printed them all; resolve with put --context)
    4  unavailable: HTTP 503 (incl. quorum not met) or the node cannot be reached
    5  authentication or authorization failed (HTTP 401, 403)
    6  anything else: a conflict (409), a failed job, a --wait that timed out, 5xx
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .client import (
    DEFAULT_CONTENT_TYPE,
    DEFAULT_NODE,
    DEFAULT_TIMEOUT_S,
    AuthError,
    BadRequest,
    ClientError,
    ConnectionFailed,
    DynamoClient,
    GetResult,
    NotFound,
    SiblingsError,
    Unavailable,
)

PROG: Final = "dynamoctl"

EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1
EXIT_USAGE: Final = 2
EXIT_SIBLINGS: Final = 3
EXIT_UNAVAILABLE: Final = 4
EXIT_AUTH: Final = 5
EXIT_OTHER: Final = 6
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it

ENV_NODE: Final = "DYNAMO_NODE"
ENV_TOKEN: Final = "DYNAMO_TOKEN"
STDIN_MARK: Final = "-"

POLL_INTERVAL_S: Final = 0.25
DEFAULT_WAIT_TIMEOUT_S: Final = 3600.0
BAR_WIDTH: Final = 30
PERCENT: Final = 100
JSON_INDENT: Final = 2

# `dynamoctl local` defaults (DESIGN.md §1)
LOCAL_NODES: Final = 3
LOCAL_PORT: Final = 7070
LOCAL_DATA_DIR: Final = "./dynamokv-data"
DURABILITY_MODES: Final = ("sync", "wal")

EPILOG: Final = """\
exit codes:
  0  success
  1  not found (key, node, job)
  2  usage error or bad request (HTTP 400, 413)
  3  the key has siblings (resolve with: dynamoctl put KEY VALUE --context CTX)
  4  unavailable (HTTP 503, quorum not met) or the node cannot be reached
  5  authentication or authorization failed (HTTP 401, 403)
  6  other errors (409 conflict, failed job, --wait timed out, 5xx)

environment:
  DYNAMO_NODE   default for --node (else 127.0.0.1:7070)
  DYNAMO_TOKEN  default for --token
  DYNAMO_TLS_CA a CA file: use HTTPS and verify the node against it
"""

Handler = Callable[[DynamoClient, argparse.Namespace], int]


class UsageError(Exception):
    """A command line that parses but cannot be run (exit 2)."""


# --- output helpers --------------------------------------------------------------------------
def _out(text: str = "") -> None:
    print(text, file=sys.stdout)


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _write_bytes(data: bytes) -> None:
    """Raw bytes to stdout (a newline is added only for a person at a terminal)."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (some embedding); best effort
        sys.stdout.write(data.decode("utf-8", "replace"))
    else:
        buffer.write(data)
        buffer.flush()
    if sys.stdout.isatty() and not data.endswith(b"\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def _print_json(data: Any) -> None:
    _out(json.dumps(data, indent=JSON_INDENT, ensure_ascii=False))


def _table(headers: list[str], rows: list[list[str]], indent: str = "") -> str:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _fields(pairs: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in pairs)


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#####-----]  50%`; an unknown total (0) draws an empty bar and `--%`."""
    if total <= 0:
        return "[" + "-" * width + "]  --%"
    ratio = min(1.0, max(0.0, done / total))
    filled = round(ratio * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {round(ratio * PERCENT):3d}%"


def _is_printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\n\t\r" for ch in text)


def _render_value(value: bytes) -> tuple[str, str]:
    """(how it is shown, the text): UTF-8 printable text as is, anything else as base64."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _is_printable(text):
        return "text", text
    return "base64", base64.b64encode(value).decode()


class _Progress:
    """A one-line progress display on stderr: redrawn in place at a terminal, else one
    line per change (so logs of CI jobs stay readable)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, line: str) -> None:
        if line == self.last:
            return
        if self.tty:
            padding = " " * max(0, len(self.last) - len(line))
            sys.stderr.write("\r" + line + padding)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.last = line

    def finish(self, line: str) -> None:
        self.show(line)
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --- key-value commands ----------------------------------------------------------------------
def _get_json(result: GetResult) -> dict[str, Any]:
    return {
        "key": result.key,
        "context": result.context,
        "siblings": [
            {
                "content_type": s.content_type,
                "value_b64": base64.b64encode(s.value).decode(),
            }
            for s in result.siblings
        ],
    }


def _print_siblings(result: GetResult) -> None:
    key = shlex.quote(result.key)
    _out(
        f"{result.key} has {len(result.siblings)} siblings "
        f"(resolve with: {PROG} put {key} VALUE --context {result.context})"
    )
    for number, sibling in enumerate(result.siblings, start=1):
        kind, text = _render_value(sibling.value)
        _out(f"[{number}] {sibling.content_type} ({len(sibling.value)} bytes, {kind})")
        for line in text.splitlines() or [""]:
            _out(f"    {line}")
    _out(f"context: {result.context}")


def cmd_get(client: DynamoClient, args: argparse.Namespace) -> int:
    result = client.get(args.key, r=args.r, timeout_ms=args.timeout_ms)
    if args.verbose and result.context:
        _err(f"context: {result.context}")
    if args.json:
        _print_json(_get_json(result))
    if not result.found:
        _err(f"{PROG}: {args.key!r} not found")
        return EXIT_NOT_FOUND
    if args.json:
        return EXIT_SIBLINGS if result.has_siblings else EXIT_OK
    if result.has_siblings:
        _print_siblings(result)
        return EXIT_SIBLINGS
    _write_bytes(result.value)
    return EXIT_OK


def _read_value(args: argparse.Namespace) -> bytes:
    if args.value is not None and args.file is not None:
        raise UsageError("give either VALUE or --file, not both")
    source = args.file if args.file is not None else args.value
    if source is None:
        raise UsageError("give VALUE, --file FILE, or '-' to read the value from stdin")
    if source == STDIN_MARK:
        return sys.stdin.buffer.read()
    if args.file is None:
        return os.fsencode(source)  # the exact bytes the shell passed
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None


def cmd_put(client: DynamoClient, args: argparse.Namespace) -> int:
    value = _read_value(args)
    context = client.put(
        args.key,
        value,
        args.context,
        args.content_type,
        w=args.w,
        timeout_ms=args.timeout_ms,
    )
    _out(context)
    return EXIT_OK


def cmd_delete(client: DynamoClient, args: argparse.Namespace) -> int:
    context = args.context
    if context is None:
        # A delete without a context would supersede nothing (DESIGN.md §2): delete
        # what is there now, like `riak delete` does.
        current = client.get(args.key, r=args.r)
        if not current.found:
            _err(f"{PROG}: {args.key!r} not found (nothing to delete)")
            return EXIT_NOT_FOUND
        context = current.context
    client.delete(args.key, context, w=args.w, timeout_ms=args.timeout_ms)
    if args.verbose:
        _err(f"deleted {args.key!r}")
    return EXIT_OK


# --- admin commands --------------------------------------------------------------------------
def _transfer_rows(transfers: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for t in transfers:
        done, total = int(t.get("keys_done", 0)), int(t.get("keys_total", 0))
        keys = f"{done}/{total} keys" if total else "waiting"
        rows.append(
            [
                str(t.get("partition", "?")),
                str(t.get("from", "?")),
                str(t.get("to", "?")),
                f"{progress_bar(done, total)}  {keys}",
            ]
        )
    return rows


def render_status(status: dict[str, Any]) -> str:
    owned = status.get("partitions", [])
    total = status.get("partitions_total")
    owned_text = f"{len(owned)}" + (f" of {total}" if total else "")
    pairs = [
        ("node", str(status.get("node"))),
        ("address", str(status.get("address"))),
        ("state", str(status.get("state"))),
        ("ring version", str(status.get("ring_version"))),
        ("partitions owned", owned_text),
    ]
    if "n" in status:
        pairs.append(("replication", f"N={status['n']} R={status.get('r')} W={status.get('w')}"))
    pairs += [
        ("hints pending", str(status.get("hints_pending", 0))),
        ("last anti-entropy", str(status.get("last_anti_entropy") or "never")),
    ]
    staged = status.get("staged") or {}
    changes = [f"+{n}" for n in staged.get("joins", [])]
    changes += [f"-{n}" for n in staged.get("leaves", [])]
    changes += [f"-{n}(force)" for n in staged.get("removes", [])]
    changes += [f"{r.get('old')}->{r.get('new')}" for r in staged.get("replaces", [])]
    if changes:
        pairs.append(("staged", " ".join(changes) + f" (see: {PROG} plan)"))
    parts = [_fields(pairs), ""]
    members = status.get("members", [])
    rows = [
        [
            str(m.get("node")),
            str(m.get("address")),
            str(m.get("state")),
            str(m.get("partitions", "")),
        ]
        for m in members
    ]
    parts.append(_table(["NODE", "ADDRESS", "STATE", "PARTITIONS"], rows))
    transfers = status.get("transfers", [])
    parts.append("")
    if not transfers:
        parts.append("transfers: none")
    else:
        all_transfers = int(status.get("transfers_total") or len(transfers))
        parts.append(f"transfers: {len(transfers)} pending of {all_transfers}")
        parts.append(
            _table(["PARTITION", "FROM", "TO", "PROGRESS"], _transfer_rows(transfers), "  ")
        )
    return "\n".join(parts)


def cmd_status(client: DynamoClient, args: argparse.Namespace) -> int:
    status = client.status()
    if args.json:
        _print_json(status)
    else:
        _out(render_status(status))
    return EXIT_OK


def render_ring(ring: dict[str, Any]) -> str:
    partitions = ring.get("partitions", [])
    rows = [
        [str(p.get("id")), str(p.get("owner")), ", ".join(map(str, p.get("preference_list", [])))]
        for p in partitions
    ]
    header = f"ring version {ring.get('ring_version')}, {len(partitions)} partitions"
    return header + "\n\n" + _table(["PARTITION", "OWNER", "PREFERENCE LIST"], rows)


def cmd_ring(client: DynamoClient, args: argparse.Namespace) -> int:
    ring = client.ring()
    if args.json:
        _print_json(ring)
    else:
        _out(render_ring(ring))
    return EXIT_OK


def cmd_join(client: DynamoClient, args: argparse.Namespace) -> int:
    answer = client.join(args.address)
    if args.json:
        _print_json(answer)
    else:
        _out(
            f"staged: {answer.get('node')} ({args.address}) joins; "
            f"review with '{PROG} plan', apply with '{PROG} commit'"
        )
    return EXIT_OK


def cmd_leave(client: DynamoClient, args: argparse.Namespace) -> int:
    answer = client.leave(args.node_id)
    if args.json:
        _print_json(answer)
    else:
        _out(
            f"staged: {answer.get('node')} leaves; "
            f"review with '{PROG} plan', apply with '{PROG} commit'"
        )
    return EXIT_OK


def cmd_force_remove(client: DynamoClient, args: argparse.Namespace) -> int:
    answer = client.force_remove(args.node_id)
    if args.json:
        _print_json(answer)
    else:
        _out(
            f"staged: {answer.get('node')} is removed without its data; its partitions "
            f"are rebuilt from the surviving replicas. Review with '{PROG} plan', "
            f"apply with '{PROG} commit'"
        )
    return EXIT_OK


def cmd_replace(client: DynamoClient, args: argparse.Namespace) -> int:
    answer = client.replace(args.old, args.new)
    if args.json:
        _print_json(answer)
    else:
        _out(
            f"staged: {answer.get('new')} replaces {answer.get('old')}, whose data is not "
            f"used: its partitions are rebuilt from the surviving replicas. Review with "
            f"'{PROG} plan', apply with '{PROG} commit'"
        )
    return EXIT_OK


def render_plan(answer: dict[str, Any], current: dict[str, int]) -> str:
    """The staged change; `current` is partitions owned per node now (from status)."""
    plan = answer.get("plan")
    if not answer.get("staged") or not isinstance(plan, dict):
        return f"nothing staged (ring version {answer.get('ring_version')})"
    lines = [
        f"staged change: ring version {answer.get('ring_version')} -> {plan.get('ring_version')}"
    ]
    lines += [f"  join   {node}" for node in plan.get("joins", [])]
    lines += [f"  leave  {node}" for node in plan.get("leaves", [])]
    lines += [
        f"  force-remove  {node} (gone: its data is not used)" for node in plan.get("removes", [])
    ]
    lines += [
        f"  replace  {r.get('old')} by {r.get('new')} (the old node's data is not used)"
        for r in plan.get("replaces", [])
    ]
    after: dict[str, int] = {str(k): int(v) for k, v in plan.get("ownership", {}).items()}
    nodes = sorted(set(current) | set(after))
    rows = [[n, str(current.get(n, 0)), str(after.get(n, 0))] for n in nodes]
    lines += ["", "ownership:", _table(["NODE", "NOW", "AFTER"], rows, "  ")]
    transfers = plan.get("transfers", [])
    received: dict[str, int] = plan.get("partitions_received") or {}
    if not received:
        for t in transfers:
            received[str(t.get("to"))] = received.get(str(t.get("to")), 0) + 1
    lines += ["", f"transfers: {len(transfers)}"]
    lines += [f"  to {node}: {count}" for node, count in sorted(received.items())]
    rebuilds = sum(1 for t in transfers if t.get("rebuild"))
    if rebuilds:
        lines.append(
            f"  {rebuilds} of them rebuilt from every surviving replica (none from a removed node)"
        )
    lines += ["", f"apply with '{PROG} commit', discard with '{PROG} plan --clear'"]
    return "\n".join(lines)


def cmd_plan(client: DynamoClient, args: argparse.Namespace) -> int:
    if args.clear:
        answer = client.clear_plan()
        if args.json:
            _print_json(answer)
        else:
            _out("staged changes discarded")
        return EXIT_OK
    answer = client.plan()
    if args.json:
        _print_json(answer)
        return EXIT_OK
    current: dict[str, int] = {}
    if answer.get("staged"):
        for member in client.status().get("members", []):
            current[str(member.get("node"))] = int(member.get("partitions", 0))
    _out(render_plan(answer, current))
    return EXIT_OK


def _deadline(args: argparse.Namespace) -> float:
    return time.monotonic() + float(args.wait_timeout)


def wait_for_transfers(client: DynamoClient, deadline: float, expected: int = 0) -> bool:
    """Poll status until no transfer is pending, drawing progress; False on timeout.

    Key counts are known only for transfers in flight from the polled node, so the
    keys shown are those seen moving so far.
    """
    progress = _Progress()
    keys: dict[tuple[str, str], tuple[int, int]] = {}  # (partition, target) -> done, total
    total = expected  # the largest number of transfers the plan was seen to imply
    while True:
        status = client.status()
        pending = status.get("transfers", [])
        total = max(total, int(status.get("transfers_total") or 0), len(pending))
        live = set()
        for t in pending:
            ident = (str(t.get("partition")), str(t.get("to")))
            live.add(ident)
            if int(t.get("keys_total", 0)):
                keys[ident] = (int(t.get("keys_done", 0)), int(t.get("keys_total", 0)))
        for ident, (_, size) in keys.items():
            if ident not in live:
                keys[ident] = (size, size)  # finished since we last saw it
        keys_done = sum(done for done, _ in keys.values())
        keys_total = sum(size for _, size in keys.values())
        if not pending:
            moved = f", {keys_done} keys" if keys_total else ""
            progress.finish(f"transfers complete: {total} partitions{moved}")
            return True
        done = total - len(pending)
        key_text = f"{keys_done}/{keys_total}" if keys_total else "-"
        progress.show(f"{progress_bar(done, total)}  partitions {done}/{total}  keys {key_text}")
        if time.monotonic() >= deadline:
            progress.finish(progress.last + "  (timed out)")
            return False
        time.sleep(POLL_INTERVAL_S)


def cmd_commit(client: DynamoClient, args: argparse.Namespace) -> int:
    answer = client.commit()
    if args.json:
        _print_json(answer)
    else:
        _out(
            f"committed: ring version {answer.get('ring_version')}, "
            f"{answer.get('transfers', 0)} partition transfers"
        )
    expected = int(answer.get("transfers") or 0)
    if args.wait and not wait_for_transfers(client, _deadline(args), expected):
        _err(f"{PROG}: transfers still running after {args.wait_timeout:g}s")
        return EXIT_OTHER
    return EXIT_OK


def _job_fraction(job: dict[str, Any]) -> tuple[int, int]:
    """The job's progress as (done, total) for a bar: partitions when the job counts
    them, else its `progress` fraction (0..1) as a percentage."""
    if isinstance(job.get("partitions_total"), int) and job["partitions_total"] > 0:
        return int(job.get("partitions_done", 0)), int(job["partitions_total"])
    progress = job.get("progress")
    if isinstance(progress, int | float) and not isinstance(progress, bool):
        return round(min(1.0, float(progress)) * PERCENT), PERCENT
    return 0, 0


def _job_line(job: dict[str, Any]) -> str:
    done, total = _job_fraction(job)
    counts = f"partitions {done}/{total}, " if "partitions_total" in job else ""
    return (
        f"{progress_bar(done, total)}  {job.get('state', 'running')}, "
        f"{counts}{job.get('keys_repaired', 0)} keys repaired"
    )


def cmd_repair(client: DynamoClient, args: argparse.Namespace) -> int:
    job_id = client.anti_entropy()
    if args.json and not args.wait:
        _print_json({"job": job_id})
    else:
        _out(job_id)
    if not args.wait:
        return EXIT_OK
    deadline = _deadline(args)
    progress = _Progress()
    while True:
        job = client.job(job_id)
        state = str(job.get("state", "running"))
        if state != "running":
            progress.finish(_job_line(job))
            break
        progress.show(_job_line(job))
        if time.monotonic() >= deadline:
            progress.finish(progress.last + "  (timed out)")
            _err(f"{PROG}: repair job {job_id} still running after {args.wait_timeout:g}s")
            return EXIT_OTHER
        time.sleep(POLL_INTERVAL_S)
    if args.json:
        _print_json(job)
    if state == "failed":
        errors = job.get("errors") or [job.get("error") or "see the node log"]
        _err(f"{PROG}: repair job {job_id} failed: {errors[-1]}")
        return EXIT_OTHER
    return EXIT_OK


def cmd_local(args: argparse.Namespace) -> int:
    from .local import run_local  # type: ignore[import-not-found,unused-ignore]

    return int(run_local(args))


# --- argument parsing ------------------------------------------------------------------------
def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before or after the subcommand; on subcommands they default to
    SUPPRESS so the top-level value (or its environment default) is kept."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--node",
        metavar="HOST:PORT",
        default=default(os.environ.get(ENV_NODE) or DEFAULT_NODE),
        help=f"the node to talk to (default: ${ENV_NODE} or {DEFAULT_NODE})",
    )
    parser.add_argument(
        "--token",
        default=default(os.environ.get(ENV_TOKEN) or None),
        help=f"bearer token (default: ${ENV_TOKEN})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(DEFAULT_TIMEOUT_S),
        help=f"network timeout per request (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="more detail on stderr (e.g. the context of a get)",
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_WAIT_TIMEOUT_S,
        help=f"give up waiting after this long (default {DEFAULT_WAIT_TIMEOUT_S:g}; exit 6)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Client and admin tool for dynamokv, a Dynamo-style key-value store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, handler: Handler | None) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _connection_options(sub, top=False)
        sub.set_defaults(handler=handler)
        return sub

    def json_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="machine-readable JSON output")

    def timeout_ms(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--timeout-ms", type=int, help="deadline the node applies (ms)")

    p = command("get", "read a key: its value, or all its siblings (exit 3)", cmd_get)
    p.add_argument("key")
    p.add_argument("--r", help="read quorum: 1..N, one, quorum or all")
    timeout_ms(p)
    json_flag(p)

    p = command("put", "write a key; prints the new context", cmd_put)
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="the value ('-' reads stdin)")
    p.add_argument("--file", help="read the value from this file ('-' is stdin)")
    p.add_argument("--context", help="context of the versions this write supersedes")
    p.add_argument("--content-type", default=DEFAULT_CONTENT_TYPE, metavar="TYPE")
    p.add_argument("--w", help="write quorum: 1..N, one, quorum or all")
    timeout_ms(p)

    p = command(
        "delete",
        "delete a key (without --context: the versions visible now)",
        cmd_delete,
    )
    p.add_argument("key")
    p.add_argument("--context", help="context of the versions to delete")
    p.add_argument("--r", help="read quorum for the read that finds the context")
    p.add_argument("--w", help="write quorum: 1..N, one, quorum or all")
    timeout_ms(p)

    json_flag(command("status", "this node's view of the cluster", cmd_status))
    json_flag(command("ring", "partitions, owners and preference lists", cmd_ring))

    p = command("join", "stage a running node joining the ring", cmd_join)
    p.add_argument("address", metavar="ADDRESS", help="HOST:PORT of the joining node")
    json_flag(p)

    p = command("leave", "stage a node leaving the ring", cmd_leave)
    p.add_argument("node_id", metavar="NODE", help="node id as status reports it")
    json_flag(p)

    p = command(
        "force-remove",
        "stage removing a node gone for good; its partitions are rebuilt from the others",
        cmd_force_remove,
    )
    p.add_argument("node_id", metavar="NODE", help="node id as status reports it")
    json_flag(p)

    p = command(
        "replace",
        "stage a running node taking the place of a node gone for good",
        cmd_replace,
    )
    p.add_argument("old", metavar="OLD", help="node id of the node gone for good")
    p.add_argument("new", metavar="NEW", help="HOST:PORT of the running replacement")
    json_flag(p)

    p = command("plan", "show the staged ring change and its transfers", cmd_plan)
    p.add_argument("--clear", action="store_true", help="discard the staged changes")
    json_flag(p)

    p = command("commit", "apply the staged ring change", cmd_commit)
    p.add_argument("--wait", action="store_true", help="wait until every transfer is done")
    _wait_options(p)
    json_flag(p)

    p = command("repair", "start a full anti-entropy pass; prints its job id", cmd_repair)
    p.add_argument("--wait", action="store_true", help="wait for the job to finish")
    _wait_options(p)
    json_flag(p)

    p = command("local", "run a real N-node cluster on this machine (Ctrl-C stops)", None)
    p.add_argument("--nodes", type=int, default=LOCAL_NODES, help="number of nodes")
    p.add_argument("--port", type=int, default=LOCAL_PORT, help="node i listens on BASE+i")
    p.add_argument("--data-dir", default=LOCAL_DATA_DIR, help="one RocksDB dir per node in it")
    p.add_argument("--partitions", type=int, help="Q (a power of two)")
    p.add_argument("--n", type=int, help="replicas per key")
    p.add_argument("--r", type=int, help="default read quorum")
    p.add_argument("--w", type=int, help="default write quorum")
    p.add_argument("--durability", choices=DURABILITY_MODES)
    return parser


def exit_code_for(error: ClientError) -> int:
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, BadRequest):
        return EXIT_USAGE
    if isinstance(error, SiblingsError):
        return EXIT_SIBLINGS
    if isinstance(error, Unavailable | ConnectionFailed):
        return EXIT_UNAVAILABLE
    if isinstance(error, AuthError):
        return EXIT_AUTH
    return EXIT_OTHER


def _run(args: argparse.Namespace) -> int:
    handler: Handler | None = args.handler
    if handler is None:
        return cmd_local(args)
    try:
        client = DynamoClient(
            args.node, args.token, args.timeout, tls_ca=os.environ.get("DYNAMO_TLS_CA") or None
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with client:
        return handler(client, args)


def main(argv: list[str] | None = None) -> int:
    """Run dynamoctl; returns the exit code (the console script passes it to sys.exit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse already explained
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args)
    except ClientError as exc:
        _err(f"{PROG}: {exc.message}")
        return exit_code_for(exc)
    except UsageError as exc:
        _err(f"{PROG}: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `dynamoctl ring | head`: the reader has gone
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (tests, embedding)
        pass


if __name__ == "__main__":
    sys.exit(main())
