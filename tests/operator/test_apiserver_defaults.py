"""Every CRD under crds/ passes the checks kube-apiserver makes before accepting a CRD."""

from __future__ import annotations

from pathlib import Path

import pytest

from .apiserver_defaults import bound_errors, crd_errors, crd_files, default_errors

OLD_CRD = Path(__file__).parent / "fixtures" / "dynamoclusters-0.1.0-rejected.yaml"


@pytest.mark.parametrize("path", crd_files(), ids=lambda p: p.name)
def test_crd_defaults_and_rules_pass_apiserver_checks(path: Path) -> None:
    assert crd_errors(path) == []


def test_there_is_a_crd_to_check() -> None:
    assert crd_files(), "no CRD under crds/"


def test_the_crd_shipped_in_0_1_0_is_rejected_as_the_api_server_rejected_it() -> None:
    errors = crd_errors(OLD_CRD)
    failing = sorted({e.split(": rule ")[0] for e in errors})
    assert failing == ["v1alpha1: spec.default", "v1alpha1: spec.replication.default"], errors
    assert any("self.replication.n <= self.replicas" in e for e in errors)
    assert any("1 <= self.r && self.r <= self.n" in e for e in errors)
    assert any("1 <= self.w && self.w <= self.n" in e for e in errors)


def test_nested_defaults_are_not_applied_before_the_check() -> None:
    schema = {
        "type": "object",
        "default": {},
        "x-kubernetes-validations": [{"rule": "self.a <= 3"}],
        "properties": {"a": {"type": "integer", "default": 1}},
    }
    assert len(default_errors(schema)) == 1
    schema["default"] = {"a": 1}
    assert default_errors(schema) == []


def test_a_default_that_breaks_its_own_schema_is_reported() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "default": 0}},
    }
    (error,) = default_errors(schema)
    assert error.startswith("n.default")


def test_a_rule_over_an_unbounded_string_is_reported() -> None:
    doc_schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "x-kubernetes-validations": [{"rule": "self.matches('a')"}]}
        },
    }
    assert bound_errors(doc_schema) == [
        "s: rule \"self.matches('a')\" walks a string without maxLength"
    ]
    doc_schema["properties"]["s"]["maxLength"] = 8
    assert bound_errors(doc_schema) == []
