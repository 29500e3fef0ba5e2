"""Quorum arithmetic and request options."""

from __future__ import annotations

import pytest

from dynamo_node.core.errors import InvalidParameter, InvalidQuorum, InvalidRequest
from dynamo_node.core.quorum import MAX_TIMEOUT_MS, effective, parse_quorum, parse_timeout_ms


@pytest.mark.parametrize(
    ("raw", "n", "want"),
    [
        ("1", 3, 1),
        ("2", 3, 2),
        ("3", 3, 3),
        (" 2 ", 3, 2),
        ("one", 3, 1),
        ("ONE", 3, 1),
        ("quorum", 1, 1),
        ("quorum", 2, 2),
        ("quorum", 3, 2),
        ("quorum", 4, 3),
        ("quorum", 5, 3),
        ("Quorum", 16, 9),
        ("all", 1, 1),
        ("all", 3, 3),
        ("ALL", 5, 5),
        ("5", 5, 5),
    ],
)
def test_parse_quorum_values(raw: str, n: int, want: int) -> None:
    assert parse_quorum(raw, n, 2, "r") == want


@pytest.mark.parametrize("raw", [None, ""])
def test_parse_quorum_absent_means_default(raw: str | None) -> None:
    assert parse_quorum(raw, 3, 2, "w") is None


@pytest.mark.parametrize(
    "raw", ["0", "4", "-1", "100", "abc", "1.5", "2x", "majority", "none", "two", " ", "1e1"]
)
def test_parse_quorum_rejects_bad_values(raw: str) -> None:
    with pytest.raises(InvalidQuorum) as info:
        parse_quorum(raw, 3, 2, "r")
    assert isinstance(info.value, InvalidRequest)
    assert info.value.status == 400
    assert "r" in info.value.message


def test_parse_quorum_names_the_parameter() -> None:
    with pytest.raises(InvalidQuorum, match="w"):
        parse_quorum("9", 3, 2, "w")


def test_quorum_is_a_majority() -> None:
    for n in range(1, 17):
        q = parse_quorum("quorum", n, 2, "r")
        assert q is not None and 1 <= q <= n
        assert 2 * q > n  # two quorums always overlap
        assert 2 * (q - 1) <= n  # and it is the smallest such number


@pytest.mark.parametrize(
    ("raw", "want"),
    [(None, 3000), ("", 3000), ("1", 1), ("250", 250), (str(MAX_TIMEOUT_MS), MAX_TIMEOUT_MS)],
)
def test_parse_timeout_ms(raw: str | None, want: int) -> None:
    assert parse_timeout_ms(raw, 3000) == want


@pytest.mark.parametrize(
    "raw", ["0", "-5", str(MAX_TIMEOUT_MS + 1), "abc", "1.5", "10ms", "1e3", " "]
)
def test_parse_timeout_ms_rejects_bad_values(raw: str) -> None:
    # a bad timeout is an invalid parameter, not an invalid quorum
    with pytest.raises(InvalidParameter) as caught:
        parse_timeout_ms(raw, 3000)
    assert caught.value.code == "invalid_parameter" and caught.value.status == 400
    assert not isinstance(caught.value, InvalidQuorum)


def test_effective_explicit_is_never_clamped() -> None:
    assert effective(3, 2, 1) == 3
    assert effective(1, 3, 3) == 1
    assert effective(2, 2, 0) == 2


def test_effective_default_is_clamped_to_the_replicas() -> None:
    assert effective(None, 2, 3) == 2
    assert effective(None, 2, 1) == 1
    assert effective(None, 3, 2) == 2
    assert effective(None, 2, 0) == 1  # never below one
    assert effective(None, 1, 5) == 1
