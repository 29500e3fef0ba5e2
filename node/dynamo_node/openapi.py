"""The OpenAPI 3.0 document of the node's HTTP API (served at /openapi.json).

Kept beside the handlers and checked against them: tests/node/test_openapi.py runs
schemathesis against a live node with this document.
"""

from __future__ import annotations

from typing import Any

from . import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_CTX_HEADER = {
    "X-Dynamo-Context": {"schema": {"type": "string"}, "description": "opaque causal context"}
}

_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "the key, UTF-8, percent-encoded, 1..1024 bytes",
    # 1..1024 UTF-8 bytes: 256 characters always fit
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}


def _quorum(name: str, n: int) -> dict[str, Any]:
    values = [str(i) for i in range(1, n + 1)] + ["one", "quorum", "all"]
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": values},
    }


_TIMEOUT = {
    "name": "timeout_ms",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 120000},
}
_CTX = {"name": "X-Dynamo-Context", "in": "header", "required": False, "schema": {"type": "string"}}

_COMMON_ERRORS = {
    "400": _err("bad key, context, r/w or timeout"),
    "401": _err("missing or invalid token"),
    "403": _err("token lacks the scope"),
    "503": _err("quorum not met or node unavailable"),
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(n: int = 3) -> dict[str, Any]:
    """The document for a cluster with N replicas (r and w range over 1..N)."""
    obj = {"type": "object"}
    _R, _W = _quorum("r", n), _quorum("w", n)  # noqa: N806
    return {
        "openapi": "3.0.3",
        "info": {"title": "dynamokv node API", "version": __version__},
        "paths": {
            "/v1/kv/{key}": {
                "parameters": [_KEY],
                "get": {
                    "summary": "Read a key: one value, or its siblings",
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
                "put": {
                    "summary": "Write a value (supersedes the versions its context covers)",
                    "parameters": [_W, _TIMEOUT, _CTX],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "204": {"description": "written", "headers": _CTX_HEADER},
                        "413": _err("value too large"),
                        **_COMMON_ERRORS,
                    },
                },
                "delete": {
                    "summary": "Delete (write a tombstone superseding the context)",
                    "parameters": [_W, _TIMEOUT, _CTX],
                    "responses": {
                        "204": {"description": "deleted", "headers": _CTX_HEADER},
                        **_COMMON_ERRORS,
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
                    "summary": "Stage a node leaving",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["node"],
                                    "properties": {"node": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(obj, "a member that owned nothing was forgotten"),
                        "202": _json(obj, "staged"),
                        "404": _err("unknown node"),
                        "409": _err("conflicts with the ring"),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/v1/admin/force-remove": {
                "post": {
                    "summary": "Stage removing a node gone for good (its data is not used)",
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
                                    "properties": {"node": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(obj, "staged"),
                        "404": _err("unknown node"),
                        "409": _err("conflicts with the ring"),
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
