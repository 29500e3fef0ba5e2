"""crds/dynamoclusters.yaml: a valid CRD for Kubernetes 1.30 and the newest schema we have,
structural, with CEL rules that compile and accept and reject what they should, and
examples the API server would accept."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from jsonschema import Draft7Validator

from tests.operator.crdcheck import (
    EXAMPLES,
    Rule,
    admission_errors,
    all_rules,
    apply_defaults,
    compile_rule,
    crd,
    evaluate,
    load_yaml,
    openapi_schema,
    resource,
    subschema,
    to_json_schema,
)

K8S_VERSIONS = ["1.30", kubernetes_validate.latest_version()]

# --- the CRD as a Kubernetes object ----------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_crd_is_a_valid_customresourcedefinition(version: str) -> None:
    kubernetes_validate.validate(crd(), version, strict=True)


def test_names_scope_and_version() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "dynamoclusters.dynamokv.io"
    assert spec["group"] == "dynamokv.io"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "DynamoCluster",
        "dynamoclusters",
        "dynamocluster",
    )
    assert names["shortNames"] == ["dyc"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def _schema_at(json_path: str) -> dict[str, Any]:
    assert json_path.startswith(".")
    return subschema(tuple(json_path[1:].split(".")))


def test_status_and_scale_subresources() -> None:
    (version,) = crd()["spec"]["versions"]
    sub = version["subresources"]
    assert sub["status"] == {}
    assert sub["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert _schema_at(".spec.replicas")["type"] == "integer"
    assert _schema_at(".status.replicas")["type"] == "integer"
    assert _schema_at(".status.selector")["type"] == "string"


def test_printer_columns() -> None:
    (version,) = crd()["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    default_columns = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert default_columns == ["Replicas", "Ready", "Phase", "Age"]
    for column in columns:
        if column["jsonPath"] != ".metadata.creationTimestamp":
            _schema_at(column["jsonPath"])  # names a declared field


def test_status_has_room_for_operator_bookkeeping() -> None:
    status = subschema(("status",))["properties"]
    for key in ("operation", "kopf"):  # Kopf keeps handler progress in status.kopf
        assert status[key]["x-kubernetes-preserve-unknown-fields"] is True
    expected = {
        "phase",
        "replicas",
        "readyReplicas",
        "selector",
        "ringVersion",
        "members",
        "conditions",
        "lastAntiEntropy",
        "observedGeneration",
    }
    assert expected <= set(status)
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


# --- structural schema -----------------------------------------------------------------


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path or "<root>", schema)]
    for key, prop in schema.get("properties", {}).items():
        nodes += _walk(prop, f"{path}.{key}")
    for nested in ("items", "additionalProperties"):
        if isinstance(schema.get(nested), dict):
            nodes += _walk(schema[nested], f"{path}[{nested}]")
    return nodes


def test_schema_is_structural() -> None:
    for path, node in _walk(openapi_schema()):
        typed = (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        )
        assert typed, f"{path} has no type"
        if node.get("type") == "array":
            assert "items" in node, f"{path}: array without items"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-list-type") == "map":
            required = set(node["items"].get("required", []))
            assert set(node["x-kubernetes-list-map-keys"]) <= required, path
    metadata = openapi_schema()["properties"]["metadata"]
    assert set(metadata["properties"]) <= {"name", "generateName"}  # all the API allows


def test_spec_fields_are_documented() -> None:
    for key, prop in subschema(("spec",))["properties"].items():
        assert prop.get("description"), f"spec.{key} has no description"


def test_defaults_satisfy_their_own_schema_and_rules() -> None:
    # The API server refuses a CRD whose defaults would not validate.
    for path, node in _walk(openapi_schema()):
        if "default" not in node:
            continue
        value = apply_defaults(node, node["default"])
        errors = list(Draft7Validator(to_json_schema(node)).iter_errors(value))
        assert not errors, f"default of {path}: {errors}"
        for rule in node.get("x-kubernetes-validations", []):
            if "oldSelf" not in rule["rule"]:
                assert evaluate(rule["rule"], value), f"default of {path} fails {rule['rule']}"


def test_pvc_retention_defaults_are_documented() -> None:
    retention = subschema(("spec", "pvcRetention"))["properties"]
    assert retention["whenDeleted"]["default"] == "Retain"
    assert retention["whenScaled"]["default"] == "Delete"
    for prop in retention.values():
        assert len(prop["description"]) > 80


# --- CEL rules -----------------------------------------------------------------------

# The Kubernetes CEL environment is standard CEL plus extension libraries; these rules use
# only the standard part, which both Python libraries implement.
STANDARD_CEL = {"_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "_&&_", "_||_", "!_", "@in"}
STANDARD_CEL |= {"size", "duration", "matches"}

RULES = all_rules()


def test_there_are_rules() -> None:
    assert len(RULES) >= 8


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_rule_compiles_with_both_cel_libraries(rule: Rule) -> None:
    compile_rule(rule.rule)
    import cel

    assert set(cel.compile(rule.rule).functions()) <= STANDARD_CEL
    assert rule.message and "\n" not in rule.message


def test_bitwise_operators_do_not_compile() -> None:
    # Why the power-of-two rule is a list membership (Kubernetes CEL has no `&`).
    with pytest.raises(Exception):  # noqa: B017 - each library raises its own
        compile_rule("self & (self - 1) == 0")


# message fragment -> [(self, oldSelf, verdict)]; every rule needs a True and a False case
RULE_CASES: dict[str, list[tuple[Any, Any, bool]]] = {
    "replicas must be at least replication.n": [
        ({"replicas": 3, "replication": {"n": 3, "r": 2, "w": 2}}, None, True),
        ({"replicas": 5, "replication": {"n": 3, "r": 2, "w": 2}}, None, True),
        ({"replicas": 0, "replication": {"n": 3, "r": 2, "w": 2}}, None, True),
        ({"replicas": 2, "replication": {"n": 3, "r": 2, "w": 2}}, None, False),
        ({"replicas": 1, "replication": {"n": 2, "r": 1, "w": 1}}, None, False),
    ],
    "replication.r must be between": [
        ({"n": 3, "r": 2, "w": 2}, None, True),
        ({"n": 3, "r": 3, "w": 2}, None, True),
        ({"n": 1, "r": 1, "w": 1}, None, True),
        ({"n": 3, "r": 4, "w": 2}, None, False),
        ({"n": 3, "r": 0, "w": 2}, None, False),
    ],
    "replication.w must be between": [
        ({"n": 3, "r": 2, "w": 3}, None, True),
        ({"n": 5, "r": 2, "w": 1}, None, True),
        ({"n": 3, "r": 2, "w": 4}, None, False),
        ({"n": 3, "r": 2, "w": 0}, None, False),
    ],
    "replication.n is immutable": [
        (3, 3, True),
        (5, 3, False),
        (3, 5, False),
    ],
    "partitions must be a power of two": [
        *[(1 << i, None, True) for i in range(17)],
        (0, None, False),
        (3, None, False),
        (100, None, False),
        (255, None, False),
        (1 << 17, None, False),
    ],
    "partitions is immutable": [
        (256, 256, True),
        (512, 256, False),
        (128, 256, False),
    ],
    "storage is immutable": [
        ({"size": "1Gi"}, {"size": "1Gi"}, True),
        (
            {"size": "1Gi", "storageClassName": "ssd"},
            {"size": "1Gi", "storageClassName": "ssd"},
            True,
        ),
        ({"size": "2Gi"}, {"size": "1Gi"}, False),
        ({"size": "1Gi", "storageClassName": "ssd"}, {"size": "1Gi"}, False),
        ({"size": "1Gi"}, {"size": "1Gi", "storageClassName": "ssd"}, False),
    ],
    "storage.size must be greater than zero": [
        ("1Gi", None, True),
        ("0.5Gi", None, True),
        ("100", None, True),
        ("10Ti", None, True),
        ("0", None, False),
        ("0Gi", None, False),
        ("0.0Mi", None, False),
    ],
    "antiEntropy.interval must be at least 1s": [
        ("10m", None, True),
        ("1s", None, True),
        ("1h30m", None, True),
        ("1.5m", None, True),
        ("1500ms", None, True),
        ("999ms", None, False),
        ("0s", None, False),
        ("0.5s", None, False),
    ],
    "autoReplace.after must be at least 1m": [
        ("10m", None, True),
        ("1m", None, True),
        ("60s", None, True),
        ("1h", None, True),
        ("59s", None, False),
        ("0.5m", None, False),
        ("59999ms", None, False),
    ],
}


def _rule_for(fragment: str) -> Rule:
    (rule,) = [r for r in RULES if fragment in r.message]
    return rule


def test_every_rule_has_accepting_and_rejecting_cases() -> None:
    covered = {_rule_for(fragment) for fragment in RULE_CASES}
    assert covered == set(RULES), f"rules without cases: {set(RULES) - covered}"
    for fragment, cases in RULE_CASES.items():
        assert {verdict for _, _, verdict in cases} == {True, False}, fragment


@pytest.mark.parametrize(
    ("fragment", "self_value", "old_value", "verdict"),
    [(fragment, *case) for fragment, cases in RULE_CASES.items() for case in cases],
)
def test_rule_verdict(fragment: str, self_value: Any, old_value: Any, verdict: bool) -> None:
    assert evaluate(_rule_for(fragment).rule, self_value, old_value) is verdict


# --- whole resources, as the API server would see them ----------------------------------

ACCEPTED = [
    {},
    {"replicas": 0},
    {"replicas": 1, "replication": {"n": 1, "r": 1, "w": 1}},
    {"replicas": 5, "replication": {"n": 5, "r": 3, "w": 3}},
    {"partitions": 1},
    {"partitions": 65536},
    {"storage": {"size": "500Mi", "storageClassName": "standard"}},
    {"antiEntropy": {"interval": "1h30m"}},
    {"autoReplace": {"enabled": True, "after": "30m"}},
    {"podAntiAffinity": "required", "durability": "sync", "lww": True},
    {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}}},
    {"tolerations": [{"key": "k", "operator": "Exists"}], "nodeSelector": {"disk": "ssd"}},
]

REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"replication": {"r": 4}}, "replication.r must be between"),
    ({"replication": {"w": 4}}, "replication.w must be between"),
    ({"replication": {"r": 0}}, "minimum"),
    ({"replicas": 2}, "replicas must be at least replication.n"),
    ({"replicas": 4, "replication": {"n": 5, "r": 1, "w": 1}}, "replicas must be at least"),
    ({"replicas": -1}, "minimum"),
    ({"replication": {"n": 17, "r": 1, "w": 1}, "replicas": 20}, "maximum"),
    ({"partitions": 100}, "partitions must be a power of two"),
    ({"partitions": 0}, "minimum"),
    ({"partitions": 131072}, "maximum"),
    ({"storage": {"size": "0Gi"}}, "storage.size must be greater than zero"),
    ({"storage": {"size": "lots"}}, "does not match"),
    ({"antiEntropy": {"interval": "500ms"}}, "antiEntropy.interval must be at least 1s"),
    ({"antiEntropy": {"interval": "10 minutes"}}, "does not match"),
    ({"autoReplace": {"after": "30s"}}, "autoReplace.after must be at least 1m"),
    ({"autoReplace": {"enabled": "yes"}}, "is not of type"),
    ({"podAntiAffinity": "sometimes"}, "is not one of"),
    ({"pvcRetention": {"whenScaled": "Keep"}}, "is not one of"),
    ({"durability": "fsync"}, "is not one of"),
    ({"lww": "yes"}, "is not of type"),
    ({"replicas": "3"}, "is not of type"),
    ({"resources": {"limits": {"memory": "4 GB"}}}, "does not match"),
    ({"replicaz": 3}, "Additional properties"),
]


@pytest.mark.parametrize("spec", ACCEPTED, ids=repr)
def test_accepted_specs(spec: dict[str, Any]) -> None:
    assert admission_errors(resource(spec)) == []


def test_missing_spec_is_defaulted() -> None:
    assert admission_errors(resource(None)) == []
    defaulted = apply_defaults(openapi_schema(), resource(None))
    assert defaulted["spec"]["replication"] == {"n": 3, "r": 2, "w": 2}
    assert defaulted["spec"]["partitions"] == 256
    assert defaulted["spec"]["pvcRetention"] == {"whenDeleted": "Retain", "whenScaled": "Delete"}


@pytest.mark.parametrize(("spec", "expected"), REJECTED, ids=repr)
def test_rejected_specs(spec: dict[str, Any], expected: str) -> None:
    errors = admission_errors(resource(spec))
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize(
    "name", ["a", "demo", "my-cluster-1", "x" * 52], ids=lambda n: n if len(n) < 20 else "long"
)
def test_accepted_names(name: str) -> None:
    assert admission_errors(resource({}, name=name)) == []


@pytest.mark.parametrize("name", ["1abc", "a.b", "-a", "a-", "Abc", "x" * 53])
def test_rejected_names(name: str) -> None:
    assert admission_errors(resource({}, name=name))


UPDATES: list[tuple[dict[str, Any], dict[str, Any], str | None]] = [
    ({}, {"replicas": 5}, None),
    ({}, {"replication": {"r": 3, "w": 1}}, None),
    ({}, {"image": "dynamokv/node:0.2.0"}, None),
    ({}, {"antiEntropy": {"interval": "1h"}}, None),
    ({}, {"autoReplace": {"enabled": True}}, None),
    ({}, {"replicas": 0}, None),
    ({}, {"partitions": 256}, None),  # explicit default: no change
    ({}, {"partitions": 512}, "partitions is immutable"),
    ({"partitions": 1024}, {}, "partitions is immutable"),  # back to the default is a change
    ({}, {"replication": {"n": 5, "r": 2, "w": 2}, "replicas": 5}, "replication.n is immutable"),
    ({}, {"storage": {"size": "2Gi"}}, "storage is immutable"),
    ({}, {"storage": {"storageClassName": "ssd"}}, "storage is immutable"),
]


@pytest.mark.parametrize(("old", "new", "expected"), UPDATES, ids=repr)
def test_updates(old: dict[str, Any], new: dict[str, Any], expected: str | None) -> None:
    errors = admission_errors(resource(new), old=resource(old))
    if expected is None:
        assert errors == []
    else:
        assert any(expected in error for error in errors), errors


def test_transition_rules_do_not_run_on_create() -> None:
    assert admission_errors(resource({"partitions": 512})) == []


# --- examples --------------------------------------------------------------------------

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLE_FILES} >= {"minimal.yaml", "production.yaml"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_accepted(path: Any) -> None:
    body = load_yaml(path)
    assert body["apiVersion"] == "dynamokv.io/v1alpha1"
    assert body["kind"] == "DynamoCluster"
    assert admission_errors(body) == []


def test_production_example_is_fully_specified() -> None:
    spec = load_yaml(EXAMPLES / "production.yaml")["spec"]
    declared = set(subschema(("spec",))["properties"])
    assert set(spec) == declared
    assert spec["podAntiAffinity"] == "required"
    assert spec["storage"]["storageClassName"]
    assert spec["auth"]["secretName"]
    assert spec["topologySpreadConstraints"]
    assert spec["resources"]["requests"]


def test_admission_does_not_mutate_its_input() -> None:
    body = resource({"replicas": 5})
    before = copy.deepcopy(body)
    admission_errors(body, old=resource({}))
    assert body == before


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_strict_crd_validation_is_not_vacuous(version: str) -> None:
    body = crd()
    body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validation"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, version, strict=True)
