"""Quorum arithmetic and request options (pure).

`parse_quorum` turns a request's `r`/`w` value (an integer 1..N, "quorum", "all",
"one") into a number, or raises InvalidQuorum. `effective_default` clamps the *cluster
defaults* to the replicas that exist (a 1-node cluster with default W=2 still writes);
an explicit per-request value is never clamped: asking for more replicas than answer is
a 503, never a success that did not happen.
"""

from __future__ import annotations

from dynamo_node.core.errors import InvalidParameter, InvalidQuorum

MIN_TIMEOUT_MS = 1
MAX_TIMEOUT_MS = 120_000


def parse_quorum(raw: str | None, n: int, default: int, name: str) -> int | None:
    """None when absent (use the default); else a value in 1..n."""
    if raw is None or raw == "":
        return None
    text = raw.strip().lower()
    if text == "quorum":
        return n // 2 + 1
    if text == "all":
        return n
    if text == "one":
        return 1
    try:
        value = int(text)
    except ValueError:
        raise InvalidQuorum(
            f"{name} must be an integer 1..{n}, 'one', 'quorum' or 'all', got {raw!r}"
        ) from None
    if not 1 <= value <= n:
        raise InvalidQuorum(f"{name} must be in 1..{n}, got {value}")
    return value


def parse_timeout_ms(raw: str | None, default: int) -> int:
    """None or "" when absent (the default); else milliseconds in 1..120000, or
    InvalidParameter (a timeout is not a quorum)."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"timeout_ms must be an integer, got {raw!r}") from None
    if not MIN_TIMEOUT_MS <= value <= MAX_TIMEOUT_MS:
        raise InvalidParameter(
            f"timeout_ms must be in {MIN_TIMEOUT_MS}..{MAX_TIMEOUT_MS}, got {value}"
        )
    return value


def effective(explicit: int | None, default: int, replicas: int) -> int:
    if explicit is not None:
        return explicit
    return max(1, min(default, replicas))
