"""The operator's exception tree. Errors become Kopf errors only at the edge (the handlers).

    OperatorError
    └── SpecError                 the DynamoCluster spec is invalid; retrying will not help
        └── ImmutableFieldError   an update changed a field that is fixed at creation

At the edge a `SpecError` becomes `kopf.PermanentError` (plus a condition and an event),
so the operator never loops on a spec only the user can fix.
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
