"""The node's exception tree. Errors become HTTP statuses only at the edge (web_errors).

DynamoError
├── InvalidRequest            400  bad input the client can fix
│   ├── InvalidKey            400  empty, not UTF-8, or longer than the key limit
│   ├── InvalidContext        400  malformed or tampered X-Dynamo-Context
│   └── InvalidQuorum         400  r / w / timeout_ms out of range
├── PayloadTooLarge           413  value larger than the configured limit
├── Unauthorized              401  missing or wrong token
├── Forbidden                 403  a valid token without the needed scope
├── NotFound                  404
├── Conflict                  409  e.g. an admin change that contradicts the staged plan
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


class PayloadTooLarge(DynamoError):
    status = 413
    code = "payload_too_large"


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


class QuorumNotMet(DynamoError):
    """Fewer replicas answered than the request demanded."""

    status = 503
    code = "quorum_not_met"

    def __init__(self, message: str, *, required: int, answered: int) -> None:
        super().__init__(message)
        self.required = required
        self.answered = answered


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
