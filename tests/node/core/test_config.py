"""config: every NodeConfig field has a validation rule, and `validate` checks the type
and range of each, naming the field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dynamo_node.core.config import FIELD_RULES, FIELD_TYPES, NodeConfig, check_field
from dynamo_node.core.errors import InvalidRequest

FIELDS = [f.name for f in dataclasses.fields(NodeConfig)]
BASE = NodeConfig(data_dir="/tmp/x")


def test_every_field_has_a_rule_and_a_type() -> None:
    assert set(FIELD_RULES) == set(FIELDS), "add a Rule to FIELD_RULES for each new field"
    assert set(FIELD_TYPES) == set(FIELDS)
    assert all(rule.help for rule in FIELD_RULES.values())


def test_defaults_are_valid() -> None:
    for name in FIELDS:
        check_field(name, getattr(BASE, name))


def _wrong_types(name: str) -> list[Any]:
    ftype = FIELD_TYPES[name]
    if ftype.many:
        return ["127.0.0.1:7070", ["a"], (1,)]
    if ftype.kind is bool:
        return [1, 0, "true", None]
    if ftype.kind is str:
        return [1, True, None] if not ftype.optional else [1, True]
    if ftype.kind is int:
        wrong: list[Any] = ["5", 5.5, 5.0, True]
    else:  # float
        wrong = ["5", True, float("nan"), float("inf")]
    return wrong if ftype.optional else [*wrong, None]


@pytest.mark.parametrize("name", FIELDS)
def test_each_field_refuses_a_wrong_type_naming_it(name: str) -> None:
    for value in _wrong_types(name):
        with pytest.raises(InvalidRequest, match=name):
            BASE.replace(**{name: value})


@pytest.mark.parametrize("name", [n for n in FIELDS if FIELD_RULES[n].min is not None])
def test_each_field_refuses_values_below_its_minimum(name: str) -> None:
    low = FIELD_RULES[name].min
    assert low is not None
    below = low - 1 if FIELD_TYPES[name].kind is int else low / 2 if low else -1.0
    with pytest.raises(InvalidRequest, match=name):
        BASE.replace(**{name: below})


@pytest.mark.parametrize("name", [n for n in FIELDS if FIELD_RULES[n].above is not None])
def test_each_field_refuses_values_at_its_exclusive_bound(name: str) -> None:
    with pytest.raises(InvalidRequest, match=name):
        BASE.replace(**{name: FIELD_RULES[name].above})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # would freeze or spin the event loop
        ("transfer_batch_keys", 0),
        ("fsync_interval_s", 0),
        ("fsync_interval_s", 0.0),
        ("gossip_interval_s", 0),
        ("hint_delivery_interval_s", 0.0),
        ("port", 70000),
        ("peer_port", 70000),
        ("partitions", 100),
        ("partitions", 1 << 17),
        ("n", 17),
        ("r", 4),  # > n
        ("durability", "fast"),
        ("on_corruption", "delete"),
        ("max_connections", 0),
        ("row_cache_bytes", -1),
        ("siblings_warn", 101),  # > siblings_max
        ("cluster_id", "no spaces"),
    ],
)
def test_unsafe_or_out_of_range_values_are_refused(name: str, value: object) -> None:
    with pytest.raises(InvalidRequest, match=name.split("_", maxsplit=1)[0]):
        BASE.replace(**{name: value})


def test_ints_are_accepted_for_float_fields_and_none_for_optional_ones() -> None:
    config = BASE.replace(gossip_interval_s=2, max_connections=None, row_cache_bytes=None)
    assert config.gossip_interval_s == 2
    assert BASE.replace(max_connections=10, anti_entropy_interval_s=0).max_connections == 10


def test_unknown_field() -> None:
    with pytest.raises(InvalidRequest, match="bogus"):
        check_field("bogus", 1)
