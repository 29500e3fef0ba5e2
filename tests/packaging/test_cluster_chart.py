"""charts/dynamokv-cluster: one DynamoCluster from values. It lints, renders what the
API server accepts (the CRD's schema and CEL rules), defaults to the CRD's defaults,
mirrors the CRD's constraints in values.schema.json, and refuses what the CRD refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.crdcheck import EXAMPLES, apply_defaults, load_yaml, openapi_schema
from tests.packaging import kyaml, manifests
from tests.packaging.charts import notes
from tests.packaging.render import CLUSTER_CHART, HelmError, lint, template
from tests.packaging.render import EXAMPLES as PACKAGING_EXAMPLES
from tests.packaging.tools import Tools

PRODUCTION_VALUES = PACKAGING_EXAMPLES / "helm-values" / "production-cluster.yaml"
SCHEMA = json.loads((CLUSTER_CHART / "values.schema.json").read_text())

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "paused-and-named": {
        "clusterName": "sessions-eu",
        "replicas": 0,
        "replication": {"n": 5, "r": 3, "w": 3},
        "partitions": 4096,
        "storage": {"size": "0.5Ti", "storageClassName": "standard"},
        "lww": True,
        "podAntiAffinity": "none",
        "labels": {"team": "storage"},
        "annotations": {"example.com/owner": "storage"},
    },
}


def render(helm: Path, values: dict[str, Any] | None = None, *files: Path) -> dict[str, Any]:
    text = template(
        helm, CLUSTER_CHART, release="kv", namespace="team", values=values, values_files=files
    )
    (obj,) = kyaml.load_all(text)
    return obj


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_lints_strictly(tools: Tools, variant: str) -> None:
    lint(tools.helm, CLUSTER_CHART, values=VARIANTS[variant])


def test_chart_lints_with_the_production_values(tools: Tools) -> None:
    lint(tools.helm, CLUSTER_CHART, values_files=(PRODUCTION_VALUES,))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_renders_one_valid_dynamocluster(tools: Tools, variant: str) -> None:
    obj = render(tools.helm, VARIANTS[variant])
    assert (obj["apiVersion"], obj["kind"]) == ("dynamokv.io/v1alpha1", "DynamoCluster")
    assert obj["metadata"]["namespace"] == "team"
    assert manifests.errors(obj) == []


def test_defaults_are_the_crds_defaults(tools: Tools) -> None:
    """`helm install kv charts/dynamokv-cluster` = crds/examples/minimal.yaml."""
    obj = render(tools.helm)
    assert obj["metadata"]["name"] == "kv"
    schema = openapi_schema()
    minimal = load_yaml(EXAMPLES / "minimal.yaml")
    assert apply_defaults(schema, obj)["spec"] == apply_defaults(schema, minimal)["spec"]
    assert obj["spec"] == apply_defaults(schema, obj)["spec"]  # every default is explicit


def test_production_values_make_the_production_example(tools: Tools) -> None:
    obj = render(tools.helm, None, PRODUCTION_VALUES)
    assert manifests.errors(obj) == []
    example = yaml.safe_load((EXAMPLES / "production.yaml").read_text())
    assert obj["spec"] == example["spec"]
    assert obj["metadata"]["name"] == "kv"  # the release name; the example's is sessions


def test_values_of_the_variant(tools: Tools) -> None:
    obj = render(tools.helm, VARIANTS["paused-and-named"])
    assert obj["metadata"]["name"] == "sessions-eu"
    assert obj["metadata"]["labels"]["team"] == "storage"
    assert obj["metadata"]["annotations"] == {"example.com/owner": "storage"}
    spec = obj["spec"]
    assert (spec["replicas"], spec["replication"]) == (0, {"n": 5, "r": 3, "w": 3})
    assert spec["storage"] == {"size": "0.5Ti", "storageClassName": "standard"}
    assert "auth" not in spec and "imagePullPolicy" not in spec  # empty means unset


def test_notes_render(tools: Tools, tmp_path: Path) -> None:
    text = notes(tools.helm, CLUSTER_CHART, tmp_path, {})
    assert "get dyc dk -w" in text
    assert "secret dk-auth" in text


# --- values.schema.json mirrors the CRD --------------------------------------------------

#: keys of the chart that are not spec fields: the object's name, labels and annotations
CHART_ONLY = {"clusterName", "labels", "annotations", "global"}
CONSTRAINTS = ("type", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern")
#: where the values schema says the CRD's rule differently, on purpose
RESTATED = {
    # CEL `self in [1, 2, 4, ...]` as a JSON Schema enum
    ("partitions",): {"enum"},
    # the pattern and the CEL rule matches('[1-9]') as two patterns under allOf
    ("storage", "size"): {"pattern"},
    # "" stands for "unset" in values; the template leaves such a field out
    ("imagePullPolicy",): {"enum"},
    ("storage", "storageClassName"): {"minLength"},
    ("auth", "secretName"): {"minLength"},
    ("tls", "secretName"): {"minLength"},  # "" means unset, as for auth
    # int-or-string quantities: the CRD's anyOf carries the pattern on the string branch
    ("resources",): set(),
}


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return _resolve(SCHEMA["definitions"][ref.rsplit("/", 1)[1]])
    return node


def _compare(crd: dict[str, Any], values: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    values = _resolve(values)
    problems = []
    skipped = RESTATED.get(path, set())
    if path == ("resources",):
        return []  # checked in test_resources_quantities_match
    for key in CONSTRAINTS:
        if key in skipped or key not in crd:
            continue
        if crd[key] != values.get(key):
            problems.append(f"{'.'.join(path)}: {key} {values.get(key)!r} != CRD {crd[key]!r}")
    for name, sub in crd.get("properties", {}).items():
        if name not in values.get("properties", {}):
            problems.append(f"{'.'.join((*path, name))}: missing from values.schema.json")
            continue
        problems += _compare(sub, values["properties"][name], (*path, name))
    extra = set(values.get("properties", {})) - set(crd.get("properties", {}))
    if path and extra - {"false"}:
        problems.append(f"{'.'.join(path)}: not in the CRD: {sorted(extra)}")
    return problems


def test_values_schema_mirrors_the_crd_spec() -> None:
    spec = openapi_schema()["properties"]["spec"]
    assert set(SCHEMA["properties"]) == set(spec["properties"]) | CHART_ONLY
    assert SCHEMA["additionalProperties"] is False
    problems = []
    for name, sub in spec["properties"].items():
        problems += _compare(sub, SCHEMA["properties"][name], (name,))
    assert problems == []


def test_restated_rules_say_the_same() -> None:
    spec = openapi_schema()["properties"]["spec"]["properties"]
    powers = [2**i for i in range(17)]
    assert SCHEMA["properties"]["partitions"]["enum"] == powers
    assert str(powers)[1:-1].replace(" ", "") in spec["partitions"]["x-kubernetes-validations"][0][
        "rule"
    ].replace(" ", "").replace("\n", "")
    size = SCHEMA["properties"]["storage"]["properties"]["size"]
    patterns = [p["pattern"] for p in size["allOf"]]
    crd_size = spec["storage"]["properties"]["size"]
    assert patterns == [crd_size["pattern"], "[1-9]"]
    assert crd_size["x-kubernetes-validations"][0]["rule"] == "self.matches('[1-9]')"
    assert SCHEMA["properties"]["imagePullPolicy"]["enum"] == ["", *spec["imagePullPolicy"]["enum"]]


def test_resources_quantities_match() -> None:
    crd = openapi_schema()["properties"]["spec"]["properties"]["resources"]["properties"]
    values = SCHEMA["properties"]["resources"]["properties"]
    for key in ("limits", "requests"):
        crd_pattern = crd[key]["additionalProperties"]["pattern"]
        quantity = _resolve(values[key]["additionalProperties"])
        (string,) = [branch for branch in quantity["anyOf"] if branch["type"] == "string"]
        assert string["pattern"] == crd_pattern


# --- refusals -------------------------------------------------------------------------------

SCHEMA_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "negative replicas": ({"replicas": -1}, "replicas"),
    "partitions not a power of two": ({"partitions": 100}, "partitions"),
    "partitions too many": ({"partitions": 131072}, "partitions"),
    "n too large": ({"replication": {"n": 17}}, "replication.n"),
    "r zero": ({"replication": {"r": 0}}, "replication.r"),
    "size zero": ({"storage": {"size": "0Gi"}}, "storage.size"),
    "size not a quantity": ({"storage": {"size": "ten gigs"}}, "storage.size"),
    "interval": ({"antiEntropy": {"interval": "10 minutes"}}, "antiEntropy.interval"),
    "anti-affinity": ({"podAntiAffinity": "sometimes"}, "podAntiAffinity"),
    "retention": ({"pvcRetention": {"whenScaled": "Keep"}}, "pvcRetention.whenScaled"),
    "durability": ({"durability": "fsync"}, "durability"),
    "name": ({"clusterName": "Sessions"}, "clusterName"),
    "long name": ({"clusterName": "a" * 53}, "clusterName"),
    "unknown field": ({"replicaCount": 3}, "Additional property replicaCount"),
    "image empty": ({"image": ""}, "image"),
    "resources quantity": ({"resources": {"requests": {"cpu": "two"}}}, "resources.requests.cpu"),
}

TEMPLATE_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "r above n": ({"replication": {"n": 3, "r": 4, "w": 2}}, "replication.r must be between"),
    "w above n": ({"replication": {"n": 2, "r": 1, "w": 3}}, "replication.w must be between"),
    "fewer replicas than n": ({"replicas": 2}, "replicas must be at least replication.n"),
    "bare n key": ({"replication": {"false": 5}}, 'write the key as "n" (quoted)'),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REFUSALS))
def test_schema_refuses(tools: Tools, case: str) -> None:
    values, where = SCHEMA_REFUSALS[case]
    with pytest.raises(HelmError) as failed:
        render(tools.helm, values)
    assert "don't meet the specifications of the schema" in failed.value.stderr
    assert where in failed.value.stderr, failed.value.stderr


@pytest.mark.parametrize("case", sorted(TEMPLATE_REFUSALS))
def test_template_refuses_what_the_crds_cel_rules_refuse(tools: Tools, case: str) -> None:
    values, message = TEMPLATE_REFUSALS[case]
    with pytest.raises(HelmError) as failed:
        render(tools.helm, values)
    assert message in failed.value.stderr, failed.value.stderr


def test_a_bare_n_in_a_values_file_is_refused_with_a_hint(tools: Tools, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("replication:\n  n: 5\n")  # YAML 1.1: the key is the boolean false
    with pytest.raises(HelmError) as failed:
        render(tools.helm, None, values)
    assert 'write the key as "n"' in failed.value.stderr
