"""The `dynamo-operator` command line and the operator's settings."""

from __future__ import annotations

import pytest

from dynamo_operator.config import INTERVAL_ENV, OperatorConfig
from dynamo_operator.main import DEFAULT_LIVENESS, parse_args


def test_defaults() -> None:
    args = parse_args([])
    assert args.namespace == [] and not args.all_namespaces
    assert args.liveness == DEFAULT_LIVENESS == "http://0.0.0.0:8080/healthz"
    assert args.interval is None and not args.standalone


def test_namespaces_liveness_interval() -> None:
    args = parse_args(["-n", "a", "--namespace", "b", "--no-liveness", "--interval", "2.5"])
    assert args.namespace == ["a", "b"] and args.liveness is None and args.interval == 2.5
    assert parse_args(["--all-namespaces"]).all_namespaces


@pytest.mark.parametrize(
    "argv",
    [["-n", "a", "--all-namespaces"], ["--interval", "0"], ["--liveness", "x", "--no-liveness"]],
)
def test_invalid_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_config_from_env() -> None:
    assert OperatorConfig.from_env({}) == OperatorConfig()
    assert OperatorConfig.from_env({INTERVAL_ENV: "0.5"}).interval_s == 0.5
    with pytest.raises(ValueError):
        OperatorConfig(interval_s=0)
