"""Validating rendered manifests as the API server would see them.

Kubernetes kinds go through kubernetes-validate (strict: unknown fields are errors) for
Kubernetes 1.30 and the newest schema it has; DynamoClusters through the CRD's own
openAPIV3Schema and CEL rules (tests/operator/crdcheck.py); Prometheus Operator kinds
(monitoring.coreos.com) are not validated here: no schema of theirs is at hand.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from tests.operator.crdcheck import admission_errors

K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DYNAMO_API_VERSION = "dynamokv.io/v1alpha1"
UNVALIDATED_GROUPS = ("monitoring.coreos.com/",)


def name_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


def errors(obj: dict[str, Any]) -> list[str]:
    """Why the API server would refuse `obj` (empty when it would accept it)."""
    api_version = str(obj.get("apiVersion", ""))
    if api_version.startswith(UNVALIDATED_GROUPS):
        return []
    if obj.get("kind") == "DynamoCluster":
        if api_version != DYNAMO_API_VERSION:
            return [f"{name_of(obj)}: apiVersion {api_version!r} is not {DYNAMO_API_VERSION}"]
        return [f"{name_of(obj)}: {e}" for e in admission_errors(obj)]
    found = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path)) or "<root>"
            found.append(f"{name_of(obj)} (Kubernetes {version}): {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            found.append(f"{name_of(obj)} (Kubernetes {version}): {exc.message}")
    return found


def all_errors(objs: list[dict[str, Any]]) -> list[str]:
    return [message for obj in objs for message in errors(obj)]
