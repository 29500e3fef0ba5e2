"""dynamoctl: the client and admin command line of dynamokv (docs/operations.md, docs/api.md).

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
    6  anything else: a conflict (409), a failed job, a --wait that timed out, 5xx,
       an address that answers but is not a dynamokv node
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn

from dynamo_node.client import (
    DEFAULT_CONTENT_TYPE,
    DEFAULT_NODE,
    DEFAULT_TIMEOUT_S,
    MAYBE_APPLIED,
    QUORUM_NAMES,
    AuthError,
    BadRequest,
    ClientError,
    ConnectionFailed,
    DynamoClient,
    GetResult,
    NotFound,
    Sibling,
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
ENV_TLS_CA: Final = "DYNAMO_TLS_CA"
STDIN_MARK: Final = "-"

POLL_INTERVAL_S: Final = 0.25
DEFAULT_WAIT_TIMEOUT_S: Final = 3600.0
BAR_WIDTH: Final = 30
PERCENT: Final = 100
JSON_INDENT: Final = 2

# `dynamoctl local` defaults
LOCAL_NODES: Final = 3
LOCAL_PORT: Final = 7070
LOCAL_DATA_DIR: Final = "./dynamokv-data"
DURABILITY_MODES: Final = ("sync", "wal")

EPILOG: Final = """\
exit codes:
  0  success
  1  not found (key, node, job)
  2  usage error or bad request (HTTP 400, 413)
  3  the key has siblings (resolve: dynamoctl put KEY VALUE --context CTX, or --overwrite)
  4  unavailable (HTTP 503, quorum not met) or the node cannot be reached
  5  authentication or authorization failed (HTTP 401, 403)
  6  other errors (409 conflict, failed job, --wait timed out, 5xx, not a dynamokv node)

environment:
  DYNAMO_NODE   default for --node (else 127.0.0.1:7070)
  DYNAMO_TOKEN  default for --token
  DYNAMO_TLS_CA default for --tls-ca (a CA file: use HTTPS, verify the node)
"""

#: what `leave --force` / `force-remove --force` cost, shown with and without --force
FORCE_COST: Final = (
    "with fewer members than N, every key keeps fewer than N replicas, "
    "and writes with w=all and reads with r=all fail until a node joins"
)
JSON_TYPES: Final = ("application/json", "text/json")

Handler = Callable[[DynamoClient, argparse.Namespace], int]


class UsageError(Exception):
    """A command line that parses but cannot be run (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (exit 2), not the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


# --- argument types (argparse turns their errors into a usage line, exit 2) ------------------
def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _non_negative_seconds(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return _positive_seconds(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _quorum(name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text in QUORUM_NAMES or (text.isdigit() and int(text) >= 1):
            return text
        raise argparse.ArgumentTypeError(
            f"{name} must be 1..N, {', '.join(QUORUM_NAMES[:-1])} or {QUORUM_NAMES[-1]}, "
            f"got {text!r}"
        )

    parse.__name__ = f"{name} quorum"
    return parse


def _non_empty(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"the {what} must not be empty")
        return text

    parse.__name__ = what
    return parse


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
def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or media.endswith("+json")


def _sibling_json(sibling: Sibling) -> dict[str, Any]:
    """A sibling for `get --json`: content type, base64 value, and for a JSON value
    (a JSON content type whose bytes parse) the parsed value as `value`."""
    shown: dict[str, Any] = {
        "content_type": sibling.content_type,
        "value_b64": base64.b64encode(sibling.value).decode(),
    }
    if _is_json_type(sibling.content_type):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            shown["value"] = json.loads(sibling.value)
    return shown


def _get_json(result: GetResult) -> dict[str, Any]:
    return {
        "key": result.key,
        "context": result.context,
        "siblings": [_sibling_json(s) for s in result.siblings],
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


def _write_failed(exc: ClientError) -> ClientError:
    """A failed PUT/DELETE: after a 503, or a connection lost once the write was sent
    (the client says so with maybe_applied), it may be stored on some replicas."""
    if isinstance(exc, Unavailable) or exc.maybe_applied:
        exc.maybe_applied = True
        if MAYBE_APPLIED not in exc.message:
            exc.message = f"{exc.message}; {MAYBE_APPLIED}"
    return exc


def cmd_put(client: DynamoClient, args: argparse.Namespace) -> int:
    value = _read_value(args)
    context = args.context
    if args.overwrite:
        if context is not None:
            raise UsageError("give either --context or --overwrite, not both")
        current = client.get(args.key, r=args.r, timeout_ms=args.timeout_ms)
        context = current.context
        if args.verbose and current.has_siblings:
            _err(f"replacing {len(current.siblings)} siblings of {args.key!r}")
    try:
        new_context = client.put(
            args.key,
            value,
            context,
            args.content_type,
            w=args.w,
            timeout_ms=args.timeout_ms,
        )
    except ClientError as exc:
        raise _write_failed(exc) from None
    _out(new_context)
    return EXIT_OK


def cmd_delete(client: DynamoClient, args: argparse.Namespace) -> int:
    context = args.context
    if context is None:
        # A delete without a context would supersede nothing (docs/api.md): delete
        # what is there now, like `riak delete` does.
        current = client.get(args.key, r=args.r)
        if not current.found:
            _err(f"{PROG}: {args.key!r} not found (nothing to delete)")
            return EXIT_NOT_FOUND
        context = current.context
    try:
        client.delete(args.key, context, w=args.w, timeout_ms=args.timeout_ms)
    except ClientError as exc:
        raise _write_failed(exc) from None
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


def render_replication(status: dict[str, Any]) -> str:
    """N/R/W as the cluster really applies them; the configured ones beside them when a
    cluster with fewer members than N cannot meet them."""
    configured = f"N={status['n']} R={status.get('r')} W={status.get('w')}"
    eff = status.get("effective")
    if not isinstance(eff, dict):
        return configured
    effective = f"N={eff.get('n')} R={eff.get('r')} W={eff.get('w')}"
    if effective == configured:
        return configured
    return f"{effective} (configured {configured}: too few members)"


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
        pairs.append(("replication", render_replication(status)))
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


def _member_removal(call: Callable[..., dict[str, Any]], args: argparse.Namespace) -> Any:
    """A leave or force-remove: with --force, warn of the cost; without, a refusal for
    leaving fewer than N members says how to insist and what it costs."""
    if args.force:
        _err(f"{PROG}: warning: --force: {FORCE_COST}")
    try:
        return call(args.node_id, force=args.force)
    except ClientError as exc:
        if exc.code == "too_few_members" and not args.force:
            exc.message = f"{exc.message}\n{PROG}: to stage it anyway add --force ({FORCE_COST})"
        raise


def cmd_leave(client: DynamoClient, args: argparse.Namespace) -> int:
    answer = _member_removal(client.leave, args)
    if args.json:
        _print_json(answer)
    else:
        _out(
            f"staged: {answer.get('node')} leaves; "
            f"review with '{PROG} plan', apply with '{PROG} commit'"
        )
    return EXIT_OK


def cmd_force_remove(client: DynamoClient, args: argparse.Namespace) -> int:
    answer = _member_removal(client.force_remove, args)
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


def _wait_job(client: DynamoClient, job_id: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Poll the job until it is no longer running, drawing progress; None on timeout."""
    deadline = _deadline(args)
    progress = _Progress()
    while True:
        job = client.job(job_id)
        if str(job.get("state", "running")) != "running":
            progress.finish(_job_line(job))
            return job
        progress.show(_job_line(job))
        if time.monotonic() >= deadline:
            progress.finish(progress.last + "  (timed out)")
            _err(f"{PROG}: job {job_id} still running after {args.wait_timeout:g}s")
            return None
        time.sleep(POLL_INTERVAL_S)


def _job_failed(job: dict[str, Any], job_id: str) -> int:
    if str(job.get("state")) == "failed":
        errors = job.get("errors") or [job.get("error") or "see the node log"]
        _err(f"{PROG}: job {job_id} failed: {errors[-1]}")
        return EXIT_OTHER
    return EXIT_OK


def cmd_repair(client: DynamoClient, args: argparse.Namespace) -> int:
    job_id = client.anti_entropy()
    if args.json and not args.wait:
        _print_json({"job": job_id})
    else:
        _out(job_id)
    if not args.wait:
        return EXIT_OK
    job = _wait_job(client, job_id, args)
    if job is None:
        return EXIT_OTHER
    if args.json:
        _print_json(job)
    return _job_failed(job, job_id)


def render_job(job: dict[str, Any]) -> str:
    pairs = [
        (name.replace("_", " "), "-" if value is None else str(value))
        for name, value in job.items()
        if not isinstance(value, dict | list) and name not in ("progress",)
    ]
    pairs.append(("progress", _job_line(job)))
    errors = [str(e) for e in job.get("errors") or []]
    pairs += [("error", e) for e in errors]
    return _fields(pairs)


def cmd_job(client: DynamoClient, args: argparse.Namespace) -> int:
    job = _wait_job(client, args.job_id, args) if args.wait else client.job(args.job_id)
    if job is None:
        return EXIT_OTHER
    if args.json:
        _print_json(job)
    else:
        _out(render_job(job))
    return _job_failed(job, args.job_id)


def cmd_local(args: argparse.Namespace) -> int:
    from dynamo_node.local import run_local  # type: ignore[import-not-found,unused-ignore]

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
        type=_positive_seconds,
        metavar="SECONDS",
        default=default(DEFAULT_TIMEOUT_S),
        help=f"network timeout per request (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=default(os.environ.get(ENV_TLS_CA) or None),
        help=f"CA file: talk HTTPS and verify the node against it (default: ${ENV_TLS_CA}; "
        "--node https://HOST:PORT uses the system's CAs)",
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
        type=_non_negative_seconds,
        metavar="SECONDS",
        default=DEFAULT_WAIT_TIMEOUT_S,
        help=f"give up waiting after this long (default {DEFAULT_WAIT_TIMEOUT_S:g}; exit 6)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        sub.add_argument("--timeout-ms", type=_positive_int, help="deadline the node applies (ms)")

    def key(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("key", type=_non_empty("key"), help="any non-empty UTF-8 string")

    p = command("get", "read a key: its value, or all its siblings (exit 3)", cmd_get)
    key(p)
    p.add_argument("--r", type=_quorum("r"), help="read quorum: 1..N, one, quorum or all")
    timeout_ms(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable JSON: key, context and the list of siblings, each with "
        "value_b64 and, for a JSON content type, the parsed value as value",
    )

    p = command("put", "write a key; prints the new context", cmd_put)
    key(p)
    p.add_argument("value", nargs="?", help="the value ('-' reads stdin)")
    p.add_argument("--file", help="read the value from this file ('-' is stdin)")
    p.add_argument("--context", help="context of the versions this write supersedes")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="read the key first and write with its context: replaces what is there "
        "instead of adding a sibling (siblings the read shows are resolved into this value)",
    )
    p.add_argument("--content-type", default=DEFAULT_CONTENT_TYPE, metavar="TYPE")
    p.add_argument("--r", type=_quorum("r"), help="read quorum for the read of --overwrite")
    p.add_argument("--w", type=_quorum("w"), help="write quorum: 1..N, one, quorum or all")
    timeout_ms(p)

    p = command(
        "delete",
        "delete a key (without --context: the versions visible now)",
        cmd_delete,
    )
    key(p)
    p.add_argument("--context", help="context of the versions to delete")
    p.add_argument("--r", type=_quorum("r"), help="read quorum for the read that finds the context")
    p.add_argument("--w", type=_quorum("w"), help="write quorum: 1..N, one, quorum or all")
    timeout_ms(p)

    json_flag(command("status", "this node's view of the cluster", cmd_status))
    json_flag(command("ring", "partitions, owners and preference lists", cmd_ring))

    p = command("join", "stage a running node joining the ring", cmd_join)
    p.add_argument("address", metavar="ADDRESS", help="HOST:PORT of the joining node")
    json_flag(p)

    def force_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--force",
            action="store_true",
            help=f"stage it even if fewer than N members remain ({FORCE_COST})",
        )

    p = command("leave", "stage a node leaving the ring", cmd_leave)
    p.add_argument("node_id", metavar="NODE", help="node id as status reports it")
    force_flag(p)
    json_flag(p)

    p = command(
        "force-remove",
        "stage removing a node gone for good; its partitions are rebuilt from the others",
        cmd_force_remove,
    )
    p.add_argument("node_id", metavar="NODE", help="node id as status reports it")
    force_flag(p)
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

    p = command("job", "show an admin job (e.g. a repair): state and progress", cmd_job)
    p.add_argument("job_id", metavar="ID", type=_non_empty("job id"), help="the job id")
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
    p.add_argument("--durability", choices=DURABILITY_MODES, help="when a write is acknowledged")
    p.add_argument(
        "--restart",
        action="store_true",
        help="restart a node that exits (default: print the command that restarts it)",
    )
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
        client = DynamoClient(args.node, args.token, args.timeout, tls_ca=args.tls_ca)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with client:
        try:
            return handler(client, args)
        except ValueError as exc:  # an argument the client refused before sending it
            raise UsageError(str(exc)) from None


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
