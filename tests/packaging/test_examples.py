"""The manifests users apply: examples/operator-install.yaml is the chart's fresh render,
every example is a valid object, and every YAML file shipped reads the same to Helm and
kubectl (YAML 1.1) as to the Python tooling (PyYAML) the other tests use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging import kyaml, manifests
from tests.packaging.charts import OPERATOR_VARIANTS
from tests.packaging.render import (
    CLUSTER_CHART,
    EXAMPLES,
    OPERATOR_CHART,
    OPERATOR_INSTALL,
    operator_install,
    template,
)
from tests.packaging.tools import ROOT, Tools

MANIFESTS = sorted((ROOT / "crds" / "examples").glob("*.yaml")) + sorted(EXAMPLES.glob("*.yaml"))
#: YAML files the project ships (templates are checked through their renders)
SHIPPED = sorted(
    {
        *(ROOT / "crds").rglob("*.yaml"),
        *EXAMPLES.rglob("*.yaml"),
        *(p for p in (ROOT / "charts").rglob("*.yaml") if "templates" not in p.parts),
    }
)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_operator_install_is_a_fresh_render_of_the_chart(tools: Tools) -> None:
    assert OPERATOR_INSTALL.read_text() == operator_install(tools.helm), (
        "examples/operator-install.yaml is stale: python -m tests.packaging.render"
    )


def test_operator_install_creates_the_namespace_first() -> None:
    objs = kyaml.load_all(OPERATOR_INSTALL.read_text())
    assert objs[0]["kind"] == "Namespace"
    namespace = objs[0]["metadata"]["name"]
    for obj in objs[1:]:
        if obj["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == namespace, manifests.name_of(obj)


@pytest.mark.parametrize("path", MANIFESTS, ids=rel)
def test_example_manifests_are_valid(path: Path) -> None:
    objs = kyaml.load_all(path.read_text())
    assert objs, f"{rel(path)} holds no object"
    assert manifests.all_errors(objs) == []


def test_the_production_example_is_production_shaped() -> None:
    (obj,) = kyaml.load_all((ROOT / "crds" / "examples" / "production.yaml").read_text())
    spec = obj["spec"]
    assert spec["podAntiAffinity"] == "required"
    assert spec["resources"]["requests"] and spec["resources"]["limits"]["memory"]
    assert spec["storage"]["storageClassName"]
    assert spec["auth"]["secretName"]
    assert spec["topologySpreadConstraints"]


@pytest.mark.parametrize("path", SHIPPED, ids=rel)
def test_shipped_yaml_reads_the_same_to_helm_and_kubectl(path: Path) -> None:
    """YAML 1.1 (sigs.k8s.io/yaml, in Helm and kubectl) reads a bare `n`, `y`, `on`, `off`
    ... as a boolean, also as a mapping key, which then reaches the API server as "false"
    or "true". PyYAML does not, so the other tests could not notice: quote such keys."""
    assert kyaml.yaml11_differences(path.read_text()) == []


@pytest.mark.parametrize("variant", sorted(OPERATOR_VARIANTS))
def test_rendered_operator_chart_reads_the_same_to_helm_and_kubectl(
    tools: Tools, variant: str
) -> None:
    text = template(tools.helm, OPERATOR_CHART, values=OPERATOR_VARIANTS[variant])
    assert kyaml.yaml11_differences(text) == []


def test_rendered_cluster_chart_reads_the_same_to_helm_and_kubectl(tools: Tools) -> None:
    text = template(
        tools.helm,
        CLUSTER_CHART,
        values_files=(EXAMPLES / "helm-values" / "production-cluster.yaml",),
    )
    assert kyaml.yaml11_differences(text) == []
