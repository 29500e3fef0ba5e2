"""charts/dynamokv-operator: lints, renders valid objects for every variant, refuses bad
values, ships the canonical CRD, and runs the operator the way its code expects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dynamo_operator import builders
from dynamo_operator.main import parse_args
from tests.operator.crdcheck import CRD_PATH
from tests.packaging import kyaml, manifests
from tests.packaging.charts import (
    DIGEST,
    NAMESPACE,
    OPERATOR_VARIANTS,
    by_kind,
    notes,
    one,
    render_operator,
)
from tests.packaging.render import OPERATOR_CHART, HelmError, lint, template
from tests.packaging.tools import Tools

CHART_CRD = OPERATOR_CHART / "files" / "dynamoclusters.yaml"
KEEP = "helm.sh/resource-policy"
VARIANTS = sorted(OPERATOR_VARIANTS)


@pytest.fixture(scope="module")
def rendered(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    return {name: render_operator(tools.helm, values) for name, values in OPERATOR_VARIANTS.items()}


def chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((OPERATOR_CHART / "Chart.yaml").read_text())
    return meta


def operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


# --- lint and render ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_lints_strictly(tools: Tools, variant: str) -> None:
    lint(tools.helm, OPERATOR_CHART, values=OPERATOR_VARIANTS[variant])


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_objects_are_valid_kubernetes_objects(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    assert manifests.all_errors(rendered[variant]) == []


def test_chart_metadata() -> None:
    meta = chart_meta()
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == "0.1.0"
    assert meta["name"] == OPERATOR_CHART.name


def test_what_each_variant_creates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def kinds(variant: str) -> list[str]:
        return sorted(obj["kind"] for obj in rendered[variant])

    assert kinds("default") == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    ]
    assert kinds("namespaced") == [
        "CustomResourceDefinition",
        "Deployment",
        "PodMonitor",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "ServiceAccount",
    ]
    assert kinds("external-crd") == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    for variant in VARIANTS:
        namespaced = [
            o
            for o in rendered[variant]
            if o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")
        ]
        for obj in namespaced:
            assert obj["metadata"].get("namespace"), f"{variant}: {manifests.name_of(obj)}"


# --- values.schema.json --------------------------------------------------------------------

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown top-level key": ({"replicaCount": 2}, "Additional property replicaCount"),
    "namespaces while cluster-wide": ({"watch": {"namespaces": ["kv"]}}, "watch"),
    "namespace not a DNS label": (
        {"watch": {"clusterWide": False, "namespaces": ["Team_A"]}},
        "watch.namespaces.0",
    ),
    "duplicate namespace": (
        {"watch": {"clusterWide": False, "namespaces": ["kv", "kv"]}},
        "watch.namespaces",
    ),
    "pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    "digest": ({"image": {"digest": "sha256:1234"}}, "image.digest"),
    "tag": ({"image": {"tag": "has space"}}, "image.tag"),
    "zero interval": ({"operator": {"interval": 0}}, "operator.interval"),
    "log level": ({"operator": {"logLevel": "TRACE"}}, "operator.logLevel"),
    "privileged liveness port": ({"operator": {"livenessPort": 80}}, "operator.livenessPort"),
    "crds.install not a boolean": ({"crds": {"install": "yes"}}, "crds.install"),
    "quantity": ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory"),
    "unknown resources key": ({"resources": {"claims": []}}, "resources"),
    "both monitors": (
        {"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
        "monitoring",
    ),
    "scrape interval": (
        {"monitoring": {"podMonitor": {"enabled": True, "interval": "soon"}}},
        "monitoring.podMonitor.interval",
    ),
    "node selector value": ({"nodeSelector": {"zone": 1}}, "nodeSelector.zone"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(tools: Tools, case: str) -> None:
    values, where = BAD_VALUES[case]
    with pytest.raises(HelmError) as failed:
        template(tools.helm, OPERATOR_CHART, values=values)
    assert "don't meet the specifications of the schema" in failed.value.stderr
    assert where in failed.value.stderr, failed.value.stderr


# --- the CRD -------------------------------------------------------------------------------


def test_chart_copy_of_the_crd_is_byte_for_byte_the_canonical_one() -> None:
    assert CHART_CRD.read_bytes() == CRD_PATH.read_bytes(), (
        f"{CHART_CRD.relative_to(OPERATOR_CHART.parents[1])} differs from "
        f"crds/dynamoclusters.yaml: cp crds/dynamoclusters.yaml {CHART_CRD}"
    )


def test_rendered_crd_is_the_canonical_crd_plus_the_keep_annotation(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    canonical = kyaml.load(CRD_PATH.read_text())
    crd = one(rendered["default"], "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {KEEP: "keep"}
    del crd["metadata"]["annotations"]
    assert crd == canonical
    assert one(rendered["namespaced"], "CustomResourceDefinition") == canonical  # keep: false
    assert by_kind(rendered["external-crd"], "CustomResourceDefinition") == []  # install: false


def test_crd_is_not_in_the_charts_crds_directory() -> None:
    """Helm would install a crds/ copy first and then fail on the templated one."""
    assert not (OPERATOR_CHART / "crds").exists()


# --- the operator's Deployment -------------------------------------------------------------


def test_deployment_runs_one_operator_at_a_time(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant in VARIANTS:
        spec = one(rendered[variant], "Deployment")["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        assert "--standalone" in operator_container(rendered[variant])["args"]


def test_pod_and_container_security(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant in VARIANTS:
        pod = one(rendered[variant], "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": builders.RUN_AS_USER,
            "runAsGroup": builders.RUN_AS_GROUP,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        container = operator_container(rendered[variant])
        assert container["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        # read-only root: /tmp (HOME and TMPDIR in the image) is an emptyDir
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]
        assert set(container["resources"]) == {"requests", "limits"}
        assert container["resources"]["limits"]["memory"]


def test_args_are_the_operators_flags_and_match_the_probe(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    expected_namespaces = {
        "default": None,
        "namespaced": ["kv", "team-a"],
        "release-namespace": [NAMESPACE],
        "namespaced-read-nodes": ["kv"],
        "external-crd": None,
    }
    for variant in VARIANTS:
        container = operator_container(rendered[variant])
        assert container["command"] == ["dynamo-operator"]
        args = parse_args(container["args"])  # the operator's own parser accepts them
        assert args.standalone
        if expected_namespaces[variant] is None:
            assert args.all_namespaces and args.namespace == []
        else:
            assert not args.all_namespaces and args.namespace == expected_namespaces[variant]
        url = urlsplit(args.liveness)
        probe = container["livenessProbe"]["httpGet"]
        (port,) = [p for p in container["ports"] if p["name"] == probe["port"]]
        assert (url.path, url.port) == (probe["path"], port["containerPort"])
        assert url.hostname == "0.0.0.0"  # reachable by the kubelet on the pod IP


def test_image_reference(rendered: dict[str, list[dict[str, Any]]]) -> None:
    image = {variant: operator_container(rendered[variant])["image"] for variant in VARIANTS}
    assert image["default"] == f"dynamokv/operator:{chart_meta()['appVersion']}"
    assert image["namespaced"] == f"registry.example/dynamokv/operator@{DIGEST}"
    assert image["external-crd"] == "dynamokv/operator:0.1.0-rc.1"


# --- monitoring ----------------------------------------------------------------------------


def _selects_node_objects(selector: dict[str, str]) -> None:
    labels = builders.labels("kv")
    assert selector.items() <= labels.items(), (selector, labels)
    assert builders.LABEL_INSTANCE not in selector  # every cluster, not one


def test_pod_monitor_scrapes_the_node_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    monitor = one(rendered["namespaced"], "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    _selects_node_objects(spec["selector"]["matchLabels"])
    assert spec["namespaceSelector"] == {"matchNames": ["kv", "team-a"]}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == (builders.CLIENT_PORT_NAME, "/metrics")


def test_service_monitor_scrapes_each_pod_once(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = one(rendered["external-crd"], "ServiceMonitor")["spec"]
    _selects_node_objects(spec["selector"]["matchLabels"])
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (builders.CLIENT_PORT_NAME, "/metrics")
    assert endpoint["interval"] == "15s"
    (keep,) = [r for r in endpoint["relabelings"] if r.get("action") == "keep"]
    assert keep["sourceLabels"] == ["__meta_kubernetes_service_name"]
    pattern = re.compile(f"^(?:{keep['regex']})$")  # Prometheus anchors relabel regexes
    assert pattern.match(builders.headless_service_name("kv"))
    assert not pattern.match(builders.client_service_name("kv"))
    # both Services select the same pods: without the keep rule each pod is scraped twice
    headless = builders.headless_service("kv", "ns", "uid")
    client = builders.client_service("kv", "ns", "uid")
    assert headless["spec"]["selector"] == client["spec"]["selector"]
    assert spec["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()


def test_monitors_are_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert by_kind(rendered["default"], "ServiceMonitor") == []
    assert by_kind(rendered["default"], "PodMonitor") == []


# --- NOTES.txt -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_notes_render(tools: Tools, tmp_path: Path, variant: str) -> None:
    text = notes(tools.helm, OPERATOR_CHART, tmp_path, OPERATOR_VARIANTS[variant])
    assert "kubectl scale dyc/demo --replicas=5" in text
    assert "kubectl get dyc demo" in text
    if variant == "namespaced":
        assert "It serves DynamoClusters in: kv, team-a." in text
    if variant == "external-crd":
        assert "kubectl apply --server-side -f crds/dynamoclusters.yaml" in text
