"""The node's exception tree. Errors become HTTP statuses only at the edge (web_errors).

DynamoError
├── InvalidRequest            400  bad input the client can fix
│   ├── InvalidKey            400  empty, not UTF-8, or longer than the key limit
│   ├── InvalidContext        400  malformed, tampered, or issued for another key
│   ├── InvalidQuorum         400  r / w out of range
│   └── InvalidParameter      400  unknown, repeated or misplaced query parameter, bad
│                                  timeout_ms
├── PayloadTooLarge           413  value larger than the configured limit
│   └── ObjectTooLarge        413  the object with all its siblings would be too large
├── Unauthorized              401  missing or wrong token
├── Forbidden                 403  a valid token without the needed scope
├── NotFound                  404
├── Conflict                  409  e.g. an admin change that contradicts the staged plan
│   ├── TooFewMembers         409  a leave/removal would leave fewer members than N
│   └── TooManySiblings       409  a write would add a sibling past siblings_max
├── QuorumNotMet              503  fewer replicas answered than r / w demanded
├── Unavailable               503  storage closed, node stopping, ring unknown
│   └── StorageCorrupt        503  RocksDB found damaged data (a checksum mismatch)
└── PeerError                 (internal) a node-to-node call failed or timed out
"""

from __future__ import annotations


class DynamoError(Exception):
    """Base of every error the node raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DynamoError):
    status = 400
    code = "invalid_request"


class InvalidKey(InvalidRequest):
    code = "invalid_key"


class InvalidContext(InvalidRequest):
    code = "invalid_context"


class InvalidQuorum(InvalidRequest):
    code = "invalid_quorum"


class InvalidParameter(InvalidRequest):
    code = "invalid_parameter"


class PayloadTooLarge(DynamoError):
    status = 413
    code = "payload_too_large"


class ObjectTooLarge(PayloadTooLarge):
    """A client write that would make the object (all its siblings) exceed
    `object_max_bytes`; nothing was stored."""

    code = "object_too_large"


class Unauthorized(DynamoError):
    status = 401
    code = "unauthorized"


class Forbidden(DynamoError):
    status = 403
    code = "forbidden"


class NotFound(DynamoError):
    status = 404
    code = "not_found"


class Conflict(DynamoError):
    status = 409
    code = "conflict"


class TooFewMembers(Conflict):
    """A leave or force-remove that would leave the ring fewer members than N."""

    code = "too_few_members"


class TooManySiblings(Conflict):
    """A client write that would add a sibling past `siblings_max`; nothing was stored."""

    code = "too_many_siblings"


#: refusals of a client write a replica may answer a forwarded put with: the
#: coordinator passes them on as they are (they are not a replica failing)
WRITE_REFUSALS: dict[str, type[DynamoError]] = {
    "too_many_siblings": TooManySiblings,
    "object_too_large": ObjectTooLarge,
}


MAYBE_APPLIED = "the write may have been applied on some replicas; read the key before retrying"


class QuorumNotMet(DynamoError):
    """Fewer replicas answered than the request demanded. `maybe_applied`: a write that
    was stored on some replica (or sent to one, which may have stored it) before the
    quorum failed: the error body says so."""

    status = 503
    code = "quorum_not_met"

    def __init__(
        self, message: str, *, required: int, answered: int, maybe_applied: bool = False
    ) -> None:
        if maybe_applied:
            message = f"{message}; {MAYBE_APPLIED}"
        super().__init__(message)
        self.required = required
        self.answered = answered
        self.maybe_applied = maybe_applied


class Unavailable(DynamoError):
    status = 503
    code = "unavailable"


class StorageCorrupt(Unavailable):
    """RocksDB reported Corruption (a checksum mismatch in a table or log file): the
    data is never served or skipped; the node's storage is failed until it is replaced
    or restored."""

    code = "storage_corrupt"


class PeerError(DynamoError):
    """A node-to-node call failed (connection refused, reset, timeout, remote error)."""

    status = 503
    code = "peer_error"
