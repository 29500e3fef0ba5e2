"""What the HTTP edge needs of the node, named as ports (structural `Protocol`s).

The edge never imports the composition root (`dynamo_node.node`): `KvApi` takes a
`KvPort`, the admin handlers an `AdminPort`, health and the OpenAPI document a
`HealthPort`, and `web.build_app` an `AppPort` (all three). The node satisfies them by
its shape alone; the attributes are read-only properties here, so a plain attribute, a
property or a subtype of the named type all fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dynamo_node.cluster.antientropy import Job
from dynamo_node.cluster.claimant import Claimant
from dynamo_node.cluster.coordinator import Coordinator
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.membership import ClusterState


class KvPort(Protocol):
    """What the key-value API (`kvapi.KvApi`) uses."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def coordinator(self) -> Coordinator:
        """The quorum reads and writes of a key (`get`, `put`)."""
        ...

    def require_state(self) -> ClusterState:
        """The ring, or Unavailable while it is not known yet."""
        ...


class AdminPort(Protocol):
    """What the admin API (`web.AdminHandlers`) uses."""

    @property
    def claimant(self) -> Claimant: ...

    @property
    def jobs(self) -> Mapping[str, Job]:
        """The anti-entropy jobs by id."""
        ...

    def require_state(self) -> ClusterState:
        """The ring, or Unavailable while it is not known yet."""
        ...

    def status(self) -> dict[str, Any]: ...

    def ring_view(self) -> dict[str, Any]: ...

    def start_anti_entropy(self) -> str:
        """Start an anti-entropy job; its id."""
        ...


class HealthPort(Protocol):
    """What health (`/healthz`, `/readyz`) and the OpenAPI document use."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def node_id(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def state(self) -> ClusterState | None: ...

    def storage_failure(self) -> str | None:
        """Why storage cannot write, or None while it can."""
        ...


class AppPort(KvPort, AdminPort, HealthPort, Protocol):
    """What the aiohttp application (`web.build_app`) takes: all of the above."""
