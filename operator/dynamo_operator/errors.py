"""The operator's exception tree. Errors become Kopf errors only at the edge (the handlers).

    OperatorError
    ├── SpecError                 the DynamoCluster spec is invalid; retrying will not help
    │   └── ImmutableFieldError   an update changed a field that is fixed at creation
    ├── NodeError                 a node's admin API refused a call or could not be reached
    │   └── NodeUnreachable       no HTTP answer at all (connection, timeout)
    └── KubeError                 a Kubernetes API call failed (other than not found)

At the edge a `SpecError` becomes `kopf.PermanentError` (plus a condition and an event),
so the operator never loops on a spec only the user can fix. A `NodeError` or
`KubeError` is transient: the next observation decides again (or `kopf.TemporaryError`).
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class SpecError(OperatorError):
    """An invalid value in a DynamoCluster spec; `field` is its path, e.g. `spec.partitions`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ImmutableFieldError(SpecError):
    """An update changed a field that cannot change after creation."""


class NodeError(OperatorError):
    """A node's admin API answered with an error; `status` is the HTTP status (0: none)."""

    def __init__(self, address: str, message: str, status: int = 0) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address
        self.message = message
        self.status = status


class NodeUnreachable(NodeError):
    """The node did not answer (refused connection, timeout, malformed reply)."""


class KubeError(OperatorError):
    """A Kubernetes API call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
