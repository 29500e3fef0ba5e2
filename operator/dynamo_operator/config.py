"""The operator's own settings, in one frozen object (no magic numbers in the handlers).

Read once from the environment (`OperatorConfig.from_env`) when the handlers import;
`dynamo-operator --interval` sets the variable before importing them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

INTERVAL_ENV = "DYNAMO_OPERATOR_INTERVAL"
#: "off" when the operator watches exact namespaces: Kopf then scans nothing
SCANNING_ENV = "DYNAMO_OPERATOR_SCANNING"
NODE_TIMEOUT_ENV = "DYNAMO_OPERATOR_NODE_TIMEOUT"

DEFAULT_INTERVAL_S = 5.0
DEFAULT_NODE_TIMEOUT_S = 3.0
#: a failed Kubernetes call in a create/update handler is retried after this long
DEFAULT_RETRY_DELAY_S = 10.0


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """interval_s: how often each cluster is observed and stepped;
    node_timeout_s: the deadline of one admin call to a node;
    retry_delay_s: the delay of `kopf.TemporaryError` after a failed API call."""

    interval_s: float = DEFAULT_INTERVAL_S
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S

    def __post_init__(self) -> None:
        for name in ("interval_s", "node_timeout_s", "retry_delay_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        return cls(
            interval_s=float(env.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)),
            node_timeout_s=float(env.get(NODE_TIMEOUT_ENV, DEFAULT_NODE_TIMEOUT_S)),
        )
