"""The OpenAPI 3.0 document of the node's HTTP API (served at /openapi.json).

Kept beside the handlers and checked against them: tests/node/edge/test_openapi.py runs
schemathesis against a live node with this document.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dynamo_node import __version__
from dynamo_node.core.config import NodeConfig

#: the limits the document states by default: a node's configured defaults
_DEFAULTS: dict[str, int] = {
    f.name: f.default
    for f in dataclasses.fields(NodeConfig)
    if isinstance(f.default, int) and not isinstance(f.default, bool)
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "required": {
                    "type": "integer",
                    "description": "quorum_not_met: the replicas the request needed",
                },
                "answered": {
                    "type": "integer",
                    "description": "quorum_not_met: the replicas that answered in time",
                },
                "maybe_applied": {
                    "type": "boolean",
                    "description": "a PUT or DELETE answered 503 after the write reached a "
                    "replica: it may have been applied on some replicas (and may spread "
                    "to the others); read the key before retrying. Absent otherwise, and "
                    "on reads",
                },
            },
        }
    },
}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_CTX_HEADER = {
    "X-Dynamo-Context": {
        "schema": {"type": "string"},
        "description": "opaque causal context, valid for this key only",
    }
}


def _key(max_bytes: int) -> dict[str, Any]:
    return {
        "name": "key",
        "in": "path",
        "required": True,
        "description": f"the key: UTF-8, percent-encoded, 1..{max_bytes} bytes once decoded "
        "(the node's key_max_bytes; a longer key is a 400 invalid_key)",
        # a UTF-8 character is at most 4 bytes: this many characters always fit
        "schema": {"type": "string", "minLength": 1, "maxLength": max(1, max_bytes // 4)},
    }


#: the query-parameter rules of the kv operations
_QUERY_RULES = (
    "Only the parameters listed are accepted: an unknown or misspelt one (`W=all`), `r` "
    "on a PUT or DELETE, `w` on a GET, or a parameter given twice is a 400 "
    "`invalid_parameter` naming it, never silently ignored."
)


def _quorum(name: str, n: int) -> dict[str, Any]:
    values = [str(i) for i in range(1, n + 1)] + ["one", "quorum", "all"]
    what = (
        "replicas that must answer (GET only)"
        if name == "r"
        else ("replicas that must acknowledge (PUT and DELETE only)")
    )
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{what}; default: the cluster's {name.upper()}, capped at the "
        "replicas that exist (an explicit value never is)",
        "schema": {"type": "string", "enum": values},
    }


_TIMEOUT = {
    "name": "timeout_ms",
    "in": "query",
    "required": False,
    "description": "how long to wait for the replicas (default: the node's "
    "request_timeout_ms); out of range is a 400 invalid_parameter",
    "schema": {"type": "integer", "minimum": 1, "maximum": 120000},
}
_CTX = {
    "name": "X-Dynamo-Context",
    "in": "header",
    "required": False,
    "description": "the context of a read of this very key: the write supersedes the "
    "versions it covers (absent: supersedes nothing, adds a sibling). A context issued "
    "for another key is a 400 invalid_context",
    "schema": {"type": "string"},
}

_COMMON_ERRORS = {
    "400": _err(
        "bad key (invalid_key), context (malformed, tampered, or issued for another "
        "key: invalid_context), r/w value (invalid_quorum), or query parameter "
        "(invalid_parameter, naming it): unknown or misspelt (`W=all`), misplaced (`r` "
        "on a PUT or DELETE, `w` on a GET), repeated, or a bad timeout_ms"
    ),
    "401": _err("missing or invalid token"),
    "403": _err("token lacks the scope"),
    "503": _err("quorum not met or node unavailable"),
}


_FORCE = {
    "type": "boolean",
    "description": "take the node out even when fewer than N ring members would be left "
    "(default false)",
}
_TOO_FEW = (
    "conflicts with the ring, or too_few_members: fewer than N ring members would be "
    "left (counting the changes staged already): every partition would have fewer than "
    "N replicas and writes with w=all and reads with r=all would fail until a node "
    'joins; send "force": true to do it anyway'
)


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(
    n: int = 3,
    *,
    key_max_bytes: int = _DEFAULTS["key_max_bytes"],
    value_max_bytes: int = _DEFAULTS["value_max_bytes"],
    object_max_bytes: int = _DEFAULTS["object_max_bytes"],
    siblings_max: int = _DEFAULTS["siblings_max"],
) -> dict[str, Any]:
    """The document for a cluster with N replicas (r and w range over 1..N) and a node
    with these limits (by default a node's defaults)."""
    obj = {"type": "object"}
    _R, _W = _quorum("r", n), _quorum("w", n)  # noqa: N806
    _KEY = _key(key_max_bytes)  # noqa: N806
    too_many = (
        f"too_many_siblings: the key has {siblings_max} siblings (siblings_max) and this "
        "write resolves none of them; nothing is stored: read the key and write back with "
        "the context of that read"
    )
    too_large = (
        "object_too_large: the object with all its siblings would be over "
        f"{object_max_bytes} bytes (object_max_bytes); nothing is stored"
    )
    write_limits = (
        f"A client write that would add a sibling to a key that has {siblings_max} "
        "(siblings_max) is refused with 409 `too_many_siblings`, one that would make the "
        f"object (all its siblings together) larger than {object_max_bytes} bytes "
        "(object_max_bytes) with 413 `object_too_large`; nothing is stored then. Resolve "
        "by reading the key and writing back with the context of that read. A 503 after "
        "the write reached a replica says `maybe_applied`: read before retrying. "
    )
    return {
        "openapi": "3.0.3",
        "info": {"title": "dynamokv node API", "version": __version__},
        "paths": {
            "/v1/kv/{key}": {
                "parameters": [_KEY],
                "get": {
                    "summary": "Read a key: one value, or its siblings",
                    "description": "The X-Dynamo-Context answered is valid for this key "
                    "only. " + _QUERY_RULES,
                    "parameters": [_R, _TIMEOUT],
                    "responses": {
                        "200": {
                            "description": "one version; body is the value",
                            "headers": _CTX_HEADER,
                            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        "300": {
                            "description": "concurrent versions (siblings)",
                            "headers": _CTX_HEADER,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Siblings"}
                                }
                            },
                        },
                        "404": _err("absent or deleted"),
                        **_COMMON_ERRORS,
                    },
                },
                "head": {
                    "summary": "As GET, without the body",
                    "description": "The status and headers a GET would answer "
                    "(Content-Type, X-Dynamo-Context, the Content-Length of the body a "
                    "GET would send), no body. " + _QUERY_RULES,
                    "parameters": [_R, _TIMEOUT],
                    "responses": {
                        "200": {"description": "one version", "headers": _CTX_HEADER},
                        "300": {"description": "concurrent versions", "headers": _CTX_HEADER},
                        "404": {"description": "absent or deleted"},
                        # the errors GET answers, without their bodies
                        **{
                            status: {"description": error["description"]}
                            for status, error in _COMMON_ERRORS.items()
                        },
                    },
                },
                "put": {
                    "summary": "Write a value of any content type, stored and returned as "
                    "given (supersedes the versions its context covers)",
                    "description": "The body is the value, of any content type: stored "
                    "as it is with its Content-Type (default application/octet-stream) "
                    f"and returned as given, at most {value_max_bytes} bytes "
                    "(value_max_bytes; larger is a 413 payload_too_large). "
                    + write_limits
                    + _QUERY_RULES,
                    "parameters": [_W, _TIMEOUT, _CTX],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            "*/*": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "204": {"description": "written", "headers": _CTX_HEADER},
                        "409": _err(too_many),
                        "413": _err(
                            f"payload_too_large: the value is over {value_max_bytes} bytes "
                            f"(value_max_bytes); {too_large}"
                        ),
                        **_COMMON_ERRORS,
                        "503": _err(
                            "quorum not met (maybe_applied: the write may have been "
                            "applied on some replicas) or node unavailable"
                        ),
                    },
                },
                "delete": {
                    "summary": "Delete (write a tombstone superseding the context)",
                    "description": "A tombstone is a version too: the sibling and "
                    "object limits apply. " + write_limits + _QUERY_RULES,
                    "parameters": [_W, _TIMEOUT, _CTX],
                    "responses": {
                        "204": {"description": "deleted", "headers": _CTX_HEADER},
                        "409": _err(too_many),
                        "413": _err(too_large),
                        **_COMMON_ERRORS,
                        "503": _err(
                            "quorum not met (maybe_applied: the write may have been "
                            "applied on some replicas) or node unavailable"
                        ),
                    },
                },
            },
            "/v1/admin/status": {
                "get": {
                    "summary": "This node's view",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/ring": {
                "get": {
                    "summary": "Partitions, owners, preference lists",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Ring"}),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/join": {
                "post": {
                    "summary": "Stage a running node joining",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["address"],
                                    "properties": {"address": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(obj, "staged"),
                        "404": _err("no node there"),
                        "409": _err("conflicts with the ring"),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/leave": {
                "post": {
                    "summary": 'Stage a node leaving ("force": true to go below N members)',
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["node"],
                                    "properties": {"node": {"type": "string"}, "force": _FORCE},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(obj, "a member that owned nothing was forgotten"),
                        "202": _json(obj, "staged"),
                        "404": _err("unknown node"),
                        "409": _err(_TOO_FEW),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/force-remove": {
                "post": {
                    "summary": "Stage removing a node gone for good (its data is not used; "
                    '"force": true to go below N members)',
                    "description": (
                        "Each partition the node replicated is rebuilt on its new "
                        "replica from every surviving replica, never from the removed "
                        "node. Shown by the plan; applied by commit."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["node"],
                                    "properties": {"node": {"type": "string"}, "force": _FORCE},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(obj, "staged"),
                        "404": _err("unknown node"),
                        "409": _err(_TOO_FEW),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/replace": {
                "post": {
                    "summary": "Stage a running node taking the place of one gone for good",
                    "description": (
                        "`new` (a running node's HOST:PORT, or the id of a member that "
                        "owns nothing) takes exactly the partitions of `old`; they are "
                        "rebuilt on it from the surviving replicas."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["old", "new"],
                                    "properties": {
                                        "old": {"type": "string"},
                                        "new": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(obj, "staged"),
                        "404": _err("unknown node or no node at that address"),
                        "409": _err("conflicts with the ring"),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/plan": {
                "get": {
                    "summary": "The staged change and its transfers",
                    "responses": {
                        "200": _json(obj),
                        "409": _err("plan not possible now"),
                        **_COMMON_ERRORS,
                    },
                },
                "delete": {
                    "summary": "Discard the staged change",
                    "responses": {"200": _json(obj), **_COMMON_ERRORS},
                },
            },
            "/v1/admin/commit": {
                "post": {
                    "summary": "Commit the staged change",
                    "responses": {
                        "200": _json(obj),
                        "409": _err("nothing staged or busy"),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/anti-entropy": {
                "post": {
                    "summary": "Start a full anti-entropy pass",
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "required": ["job"],
                                "properties": {"job": {"type": "string"}},
                            }
                        ),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/jobs/{job_id}": {
                "parameters": [
                    {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": {
                    "summary": "A job's progress",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Job"}),
                        "404": _err("no such job"),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(obj)}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "responses": {"200": _json(obj), "503": _err("not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _json(obj)}}
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "Siblings": {
                    "type": "object",
                    "required": ["context", "siblings"],
                    "properties": {
                        "context": {"type": "string"},
                        "siblings": {
                            "type": "array",
                            "minItems": 2,
                            "items": {
                                "type": "object",
                                "required": ["content_type", "value_b64"],
                                "properties": {
                                    "content_type": {"type": "string"},
                                    "value_b64": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Status": {
                    "type": "object",
                    "required": [
                        "node",
                        "address",
                        "state",
                        "ring_version",
                        "members",
                        "partitions",
                        "hints_pending",
                        "transfers",
                        "last_anti_entropy",
                    ],
                    "properties": {
                        "node": {"type": "string"},
                        "address": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": ["joining", "up", "down", "replacing", "leaving", "left"],
                        },
                        "ring_version": {"type": "integer"},
                        "members": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["node", "address", "state"],
                                "properties": {
                                    "node": {"type": "string"},
                                    "address": {"type": "string"},
                                    "state": {
                                        "type": "string",
                                        "enum": [
                                            "joining",
                                            "up",
                                            "down",
                                            "replacing",
                                            "leaving",
                                            "left",
                                        ],
                                    },
                                },
                            },
                        },
                        "partitions": {"type": "array", "items": {"type": "integer"}},
                        "hints_pending": {"type": "integer"},
                        "transfers": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["partition", "from", "to", "keys_done", "keys_total"],
                            },
                        },
                        "last_anti_entropy": {"type": "string", "nullable": True},
                        "cluster": {
                            "type": "string",
                            "nullable": True,
                            "description": "the id of this node's cluster; null until it "
                            "knows a ring",
                        },
                        "storage_failure": {
                            "type": "string",
                            "nullable": True,
                            "description": "why this node's storage cannot write (disk "
                            "full, I/O error) while it cannot, else null",
                        },
                        "refill": {
                            "type": "object",
                            "nullable": True,
                            "description": "while this node is a replacement (its data "
                            "directory was lost) being refilled: partitions_done, "
                            "partitions_total, keys_repaired, waiting_for (down replicas "
                            "it waits for); else null",
                        },
                        "foreign_cluster": {
                            "type": "string",
                            "nullable": True,
                            "description": "the last other cluster whose gossip this node "
                            "refused (a wrong seed, a reused address), else null",
                        },
                        "n": {"type": "integer", "description": "the configured N"},
                        "r": {"type": "integer", "description": "the configured default R"},
                        "w": {"type": "integer", "description": "the configured default W"},
                        "effective": {
                            "type": "object",
                            "required": ["n", "r", "w"],
                            "description": "the N, R and W requests really get by default: "
                            "with fewer ring members than N, a key has only that many "
                            "replicas and the default R and W are capped to them",
                            "properties": {
                                "n": {"type": "integer"},
                                "r": {"type": "integer"},
                                "w": {"type": "integer"},
                            },
                        },
                    },
                },
                "Ring": {
                    "type": "object",
                    "required": ["ring_version", "partitions"],
                    "properties": {
                        "ring_version": {"type": "integer"},
                        "partitions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "owner", "preference_list"],
                                "properties": {
                                    "id": {"type": "integer"},
                                    "owner": {"type": "string"},
                                    "preference_list": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
                "Job": {
                    "type": "object",
                    "required": ["id", "kind", "state", "progress", "keys_repaired"],
                    "properties": {
                        "id": {"type": "string"},
                        "kind": {"type": "string"},
                        "state": {"type": "string", "enum": ["running", "done", "failed"]},
                        "progress": {"type": "number"},
                        "keys_repaired": {"type": "integer"},
                    },
                },
            },
        },
        "security": [{"bearer": []}, {}],
    }
