"""The chart variants the tests render, and small accessors over rendered objects."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.packaging import kyaml
from tests.packaging.render import template

RELEASE = "dk"
NAMESPACE = "ops"
DIGEST = "sha256:" + "ab" * 32

#: operator chart values: name -> values (JSON, merged over values.yaml)
OPERATOR_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "watch": {"clusterWide": False, "namespaces": ["kv", "team-a"]},
        "crds": {"keep": False},
        "image": {"repository": "registry.example/dynamokv/operator", "digest": DIGEST},
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {"interval": 2.5, "nodeTimeout": 5, "logLevel": "DEBUG", "livenessPort": 9090},
        "serviceAccount": {"name": "kv-operator", "annotations": {"team": "storage"}},
        "resources": {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"memory": 1}},
        "podAnnotations": {"example.com/scrape": "false"},
        "podLabels": {"team": "storage"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                    ]
                }
            }
        },
        "monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    },
    "release-namespace": {"watch": {"clusterWide": False}, "fullnameOverride": "kvop"},
    "namespaced-read-nodes": {
        "watch": {"clusterWide": False, "namespaces": ["kv"]},
        "rbac": {"readNodes": True},
    },
    "external-crd": {
        "crds": {"install": False},
        "image": {"tag": "0.1.0-rc.1", "pullPolicy": "Always"},
        "monitoring": {"serviceMonitor": {"enabled": True, "interval": "15s"}},
    },
}


def render_operator(helm: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    from tests.packaging.render import OPERATOR_CHART

    text = template(helm, OPERATOR_CHART, release=RELEASE, namespace=NAMESPACE, values=values)
    return kyaml.load_all(text)


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objs if obj.get("kind") == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def notes(helm: Path, chart: Path, tmp: Path, values: dict[str, Any]) -> str:
    """templates/NOTES.txt as `helm install` would print it (`helm template` renders no
    notes, and `helm install --dry-run` needs a cluster): a copy of the chart wraps the
    notes in a named template and renders them into a ConfigMap."""
    copy = tmp / chart.name
    shutil.copytree(chart, copy)
    notes_file = copy / "templates" / "NOTES.txt"
    body = notes_file.read_text()
    notes_file.unlink()
    (copy / "templates" / "_notes_under_test.tpl").write_text(
        '{{- define "notes-under-test" -}}\n' + body + "\n{{- end }}\n"
    )
    (copy / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "notes-under-test" . | toJson }}\n'
    )
    objs = kyaml.load_all(template(helm, copy, release=RELEASE, namespace=NAMESPACE, values=values))
    (config,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "notes"]
    return str(config["data"]["notes"])
