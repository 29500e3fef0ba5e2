"""The pure manifest builders: valid Kubernetes objects (strict schema, 1.30 and the newest
we have), labelled and owned, and shaped as the node and the scaling protocol need."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from typing import Any

import kubernetes_validate
import pytest

from dynamo_node.core.config import NodeConfig
from dynamo_node.host import memory as node_memory
from dynamo_operator import builders
from dynamo_operator.builders import (
    MEMORY_LIMIT_ENV,
    auth_secret,
    client_service,
    config_hash,
    configmap,
    headless_service,
    labels,
    node_address,
    node_config,
    owner_reference,
    pdb,
    pod_dns,
    seed_address,
    selector,
    selector_string,
    statefulset,
)
from dynamo_operator.spec import ClusterSpec, PvcRetention, parse_spec
from tests.operator.crdcheck import EXAMPLES, load_yaml

NAME = "demo"
NS = "kv"
UID = "6f1c2a7e-0000-4000-8000-000000000001"
TOKENS = ("client-secret-token", "cluster-secret-token")
K8S_VERSIONS = ["1.30", kubernetes_validate.latest_version()]

PRODUCTION = parse_spec(load_yaml(EXAMPLES / "production.yaml")["spec"])
SPECS = {
    "default": ClusterSpec(),
    "production": PRODUCTION,
    "paused": parse_spec({"replicas": 0}),
    "no-anti-affinity": parse_spec({"podAntiAffinity": "none", "imagePullPolicy": "Always"}),
}


def all_objects(spec: ClusterSpec, replicas: int | None = None) -> list[dict[str, Any]]:
    return [
        statefulset(NAME, NS, UID, spec, replicas=spec.replicas if replicas is None else replicas),
        headless_service(NAME, NS, UID),
        client_service(NAME, NS, UID),
        pdb(NAME, NS, UID),
        configmap(NAME, NS, UID, spec),
        auth_secret(NAME, NS, UID, TOKENS),
    ]


def _ids(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


CASES = [
    pytest.param(obj, version, id=f"{label}-{_ids(obj)}-{version}")
    for label, spec in SPECS.items()
    for obj in all_objects(spec)
    for version in K8S_VERSIONS
]


@pytest.mark.parametrize(("obj", "version"), CASES)
def test_valid_kubernetes_object(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("obj", all_objects(PRODUCTION), ids=_ids)
def test_labels_and_owner(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    assert meta["namespace"] == NS
    assert meta["labels"] == {
        "app.kubernetes.io/name": "dynamokv",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/managed-by": "dynamokv-operator",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "dynamokv.io/v1alpha1",
            "kind": "DynamoCluster",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_owner_reference() -> None:
    ref = owner_reference("x", "u")
    assert (ref["name"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "x",
        "u",
        True,
        True,
    )


def test_object_names_are_distinct_per_kind() -> None:
    names = [_ids(obj) for obj in all_objects(ClusterSpec())]
    assert len(set(names)) == len(names)
    assert {obj["metadata"]["name"] for obj in all_objects(ClusterSpec())} == {
        "demo",
        "demo-peers",
        "demo-config",
        "demo-auth",
    }


def test_selector_is_a_subset_of_labels() -> None:
    assert selector(NAME).items() <= labels(NAME).items()
    assert "app.kubernetes.io/managed-by" not in selector(NAME)
    assert (
        selector_string(NAME) == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=dynamokv"
    )


def test_builders_are_deterministic_and_share_nothing_with_the_spec() -> None:
    spec = PRODUCTION
    before = copy.deepcopy(spec)
    first = all_objects(spec)
    assert first == all_objects(spec)
    sts = first[0]
    pod = sts["spec"]["template"]["spec"]
    pod["tolerations"][0]["key"] = "changed"
    pod["affinity"]["nodeAffinity"] = {}
    pod["containers"][0]["resources"]["requests"]["cpu"] = "99"
    pod["topologySpreadConstraints"][0]["maxSkew"] = 9
    pod["nodeSelector"]["x"] = "y"
    assert spec == before
    assert spec.tolerations == before.tolerations
    assert spec.affinity == before.affinity


def test_addresses() -> None:
    assert pod_dns(NAME, NS, 2) == "demo-2.demo-peers.kv.svc"
    assert node_address(NAME, NS, 2) == "demo-2.demo-peers.kv.svc:7070"
    assert seed_address(NAME, NS) == "demo-0.demo-peers.kv.svc:7070"


# --- statefulset ---------------------------------------------------------------------


def _sts(spec: ClusterSpec | None = None, replicas: int = 3) -> dict[str, Any]:
    return statefulset(NAME, NS, UID, spec or ClusterSpec(), replicas=replicas)


def _pod(spec: ClusterSpec | None = None, replicas: int = 3) -> dict[str, Any]:
    pod: dict[str, Any] = _sts(spec, replicas)["spec"]["template"]["spec"]
    return pod


def _container(spec: ClusterSpec | None = None) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = _pod(spec)["containers"]
    return container


def test_statefulset_shape() -> None:
    sts = _sts()["spec"]
    assert sts["replicas"] == 3
    assert sts["serviceName"] == "demo-peers"
    assert sts["selector"] == {"matchLabels": selector(NAME)}
    assert sts["template"]["metadata"]["labels"] == labels(NAME)
    assert sts["podManagementPolicy"] == "Parallel"
    assert sts["updateStrategy"] == {"type": "OnDelete"}
    assert sts["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Delete",
    }


def test_replicas_come_from_the_caller() -> None:
    spec = parse_spec({"replicas": 5})
    assert _sts(spec, replicas=3)["spec"]["replicas"] == 3  # mid scale-up
    assert _sts(spec, replicas=7)["spec"]["replicas"] == 7  # mid scale-down
    with pytest.raises(ValueError, match="negative"):
        _sts(spec, replicas=-1)


def test_pause_retains_volumes() -> None:
    paused = _sts(parse_spec({"replicas": 0}), replicas=0)["spec"]
    assert paused["replicas"] == 0
    assert paused["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    # and the template is unchanged, so pausing never looks like an upgrade
    assert paused["template"] == _sts(parse_spec({}))["spec"]["template"]


def test_pvc_retention_from_spec() -> None:
    spec = parse_spec({"pvcRetention": {"whenDeleted": "Delete", "whenScaled": "Retain"}})
    policy = _sts(spec)["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert policy == {"whenDeleted": "Delete", "whenScaled": "Retain"}


def test_volume_claim_template() -> None:
    (claim,) = _sts()["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    (claim,) = _sts(PRODUCTION, 5)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"


def test_container_command_line() -> None:
    container = _container()
    assert container["image"] == "dynamokv/node:0.1.0"
    assert "imagePullPolicy" not in container
    assert container["command"] == ["dynamo-node"]
    args = container["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options == {
        "--data-dir": "/data",
        "--port": "7070",
        "--host": "0.0.0.0",
        "--peer-port": "17070",
        "--advertise": "$(POD_NAME).demo-peers.$(NAMESPACE).svc",
        "--node-id": "$(POD_NAME)",
        "--seed": "demo-0.demo-peers.kv.svc:7070",
        "--config": "/etc/dynamokv/node.json",
    }
    env_names = {env["name"] for env in container["env"]}
    for var in ("POD_NAME", "NAMESPACE"):  # every $(VAR) in args is defined
        assert var in env_names


def test_environment() -> None:
    env = {e["name"]: e["valueFrom"] for e in _container()["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env["NAMESPACE"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
    assert env["DYNAMO_CLIENT_TOKEN"] == {
        "secretKeyRef": {"name": "demo-auth", "key": "client-token"}
    }
    assert env["DYNAMO_CLUSTER_TOKEN"] == {
        "secretKeyRef": {"name": "demo-auth", "key": "cluster-token"}
    }
    production = {e["name"]: e["valueFrom"] for e in _container(PRODUCTION)["env"]}
    assert production["DYNAMO_CLUSTER_TOKEN"]["secretKeyRef"]["name"] == "sessions-auth"
    # the cluster id: optional, the ConfigMap exists only after the first formation
    assert env["DYNAMO_CLUSTER_ID"] == {
        "configMapKeyRef": {"name": "demo-identity", "key": "cluster-id", "optional": True}
    }


def test_identity_configmap() -> None:
    built = builders.identity_configmap(NAME, NS, UID, "abc123")
    assert built["metadata"]["name"] == "demo-identity"
    assert built["data"] == {"cluster-id": "abc123"}
    (ref,) = built["metadata"]["ownerReferences"]
    assert ref["uid"] == UID


def test_ports_and_probes() -> None:
    container = _container()
    assert container["ports"] == [
        {"name": "http", "containerPort": 7070, "protocol": "TCP"},
        {"name": "peer", "containerPort": 17070, "protocol": "TCP"},
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # time to recover


def test_volumes_and_mounts() -> None:
    pod = _pod()
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"] == {"name": "demo-config"}
    assert "emptyDir" in volumes["tmp"]
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    assert mounts["/data"]["name"] == "data"
    assert mounts["/etc/dynamokv"] == {
        "name": "config",
        "mountPath": "/etc/dynamokv",
        "readOnly": True,
    }
    assert mounts["/tmp"]["name"] == "tmp"
    declared = set(volumes) | {"data"}  # data comes from the volume claim template
    assert {m["name"] for m in mounts.values()} == declared


def test_security_context() -> None:
    pod = _pod()
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    context = _container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False


def test_graceful_termination() -> None:
    assert _pod()["terminationGracePeriodSeconds"] >= 30


def test_resources_and_pull_policy() -> None:
    container = _container(PRODUCTION)
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert container["imagePullPolicy"] == "IfNotPresent"


def _memory_env(container: dict[str, Any]) -> dict[str, Any] | None:
    found = [e for e in container["env"] if e["name"] == MEMORY_LIMIT_ENV]
    assert len(found) <= 1
    return found[0]["valueFrom"]["resourceFieldRef"] if found else None


def test_default_resources_give_requests_and_a_memory_limit() -> None:
    container = _container()
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }
    assert "cpu" not in container["resources"]["limits"]  # no CFS throttling of the loop
    # the node reads the limit from the downward API, by the name the node reads
    assert MEMORY_LIMIT_ENV == node_memory.MEMORY_LIMIT_ENV
    assert _memory_env(container) == {
        "containerName": container["name"],
        "resource": "limits.memory",
        "divisor": "1",
    }


@pytest.mark.parametrize(
    ("resources", "basis"),
    [
        ({"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}, "limits.memory"),
        ({"requests": {"memory": "2Gi"}}, "requests.memory"),
        ({"requests": {"cpu": "1"}}, None),
    ],
)
def test_user_resources_are_kept_as_given(resources: dict[str, Any], basis: str | None) -> None:
    container = _container(dataclasses.replace(ClusterSpec(), resources=resources))
    assert container["resources"] == resources
    ref = _memory_env(container)
    assert (ref["resource"] if ref else None) == basis


# --- scheduling ----------------------------------------------------------------------

TERM = {"labelSelector": {"matchLabels": selector(NAME)}, "topologyKey": "kubernetes.io/hostname"}


def test_anti_affinity_preferred_by_default() -> None:
    assert _pod()["affinity"] == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": TERM}
            ]
        }
    }


def test_anti_affinity_required() -> None:
    affinity = _pod(parse_spec({"podAntiAffinity": "required"}))["affinity"]
    assert affinity == {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [TERM]}
    }


def test_anti_affinity_none() -> None:
    assert "affinity" not in _pod(parse_spec({"podAntiAffinity": "none"}))
    user: dict[str, Any] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    spec = parse_spec({"podAntiAffinity": "none", "affinity": user})
    assert _pod(spec)["affinity"] == user


def test_anti_affinity_preset_adds_to_the_users_terms() -> None:
    user_term = {"labelSelector": {"matchLabels": {"app": "noisy"}}, "topologyKey": "zone"}
    user = {
        "nodeAffinity": {"x": 1},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [user_term]},
    }
    spec = parse_spec({"podAntiAffinity": "required", "affinity": user})
    affinity = _pod(spec)["affinity"]
    assert affinity["nodeAffinity"] == {"x": 1}
    assert affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        user_term,
        TERM,
    ]


def test_production_scheduling() -> None:
    pod = _pod(PRODUCTION)
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "dynamokv", "effect": "NoSchedule"}
    ]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "nodeAffinity" in pod["affinity"]
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (constraint,) = pod["topologySpreadConstraints"]
    assert constraint["labelSelector"] == {"matchLabels": selector("demo")}


def test_topology_spread_keeps_a_users_label_selector() -> None:
    own = {"matchLabels": {"tier": "kv"}}
    spec = parse_spec(
        {
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
                {"maxSkew": 2, "topologyKey": "host", "whenUnsatisfiable": "ScheduleAnyway"}
                | {"labelSelector": own},
            ]
        }
    )
    first, second = _pod(spec)["topologySpreadConstraints"]
    assert first["labelSelector"] == {"matchLabels": selector(NAME)}
    assert second["labelSelector"] == own


def test_no_scheduling_fields_by_default() -> None:
    pod = _pod()
    for key in ("tolerations", "topologySpreadConstraints", "nodeSelector"):
        assert key not in pod


# --- config --------------------------------------------------------------------------


def test_configmap_holds_node_json() -> None:
    cm = configmap(NAME, NS, UID, PRODUCTION)
    assert cm["metadata"]["name"] == "demo-config"
    assert json.loads(cm["data"]["node.json"]) == {
        "partitions": 1024,
        "n": 3,
        "r": 2,
        "w": 2,
        "anti_entropy_interval_s": 1800.0,
        "lww": False,
        "durability": "sync",
        "key_max_bytes": 1024,
        "value_max_bytes": 1048576,
        "max_concurrent_requests": 2048,
    }


def test_limits_and_tls_are_wired_from_the_spec() -> None:
    spec = parse_spec(
        {
            "limits": {"maxKeyBytes": 512, "maxValueBytes": 65536, "maxConcurrentRequests": 64},
            "tls": {"secretName": "demo-tls"},
        }
    )
    node_json = json.loads(configmap(NAME, NS, UID, spec)["data"]["node.json"])
    assert node_json["key_max_bytes"] == 512
    assert node_json["value_max_bytes"] == 65536
    assert node_json["max_concurrent_requests"] == 64
    pod = _pod(spec)
    (container,) = pod["containers"]
    args = container["args"]
    for flag, value in (
        ("--tls-cert", "/etc/dynamokv-tls/tls.crt"),
        ("--tls-key", "/etc/dynamokv-tls/tls.key"),
        ("--tls-ca", "/etc/dynamokv-tls/ca.crt"),
    ):
        assert args[args.index(flag) + 1] == value
    assert {"name": "tls", "mountPath": "/etc/dynamokv-tls", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert any(v.get("secret", {}).get("secretName") == "demo-tls" for v in pod["volumes"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    plain = _pod(parse_spec({}))["containers"][0]
    assert "--tls-cert" not in plain["args"]
    assert plain["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
def test_node_accepts_node_json(spec: ClusterSpec) -> None:
    # node.json keys are NodeConfig fields, and the node validates the values too
    config = json.loads(configmap(NAME, NS, UID, spec)["data"]["node.json"])
    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    assert set(config) <= fields
    NodeConfig(data_dir="/data", **config)


def test_config_hash_on_the_pod_template() -> None:
    annotations = _sts()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["dynamokv.io/config-hash"] == config_hash(ClusterSpec())
    assert len(config_hash(ClusterSpec())) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"replication": {"r": 3}},
        {"replication": {"w": 1}},
        {"antiEntropy": {"interval": "1h"}},
        {"lww": True},
        {"durability": "sync"},
    ],
)
def test_config_change_changes_the_template(change: dict[str, Any]) -> None:
    assert config_hash(parse_spec(change)) != config_hash(ClusterSpec())
    assert _sts(parse_spec(change))["spec"]["template"] != _sts()["spec"]["template"]


def test_equivalent_configs_hash_equal() -> None:
    assert config_hash(parse_spec({"antiEntropy": {"interval": "600s"}})) == config_hash(
        ClusterSpec()
    )


@pytest.mark.parametrize("change", [{"replicas": 5}, {"pvcRetention": {"whenScaled": "Retain"}}])
def test_scaling_does_not_change_the_template(change: dict[str, Any]) -> None:
    # a template change means "roll every pod": scaling must never cause one
    assert _sts(parse_spec(change))["spec"]["template"] == _sts()["spec"]["template"]


def test_image_change_changes_the_template() -> None:
    changed = _sts(parse_spec({"image": "dynamokv/node:0.2.0"}))["spec"]["template"]
    assert changed != _sts()["spec"]["template"]


def test_node_config_matches_spec() -> None:
    assert node_config(ClusterSpec())["anti_entropy_interval_s"] == 600.0


# --- services, budget, secret --------------------------------------------------------


def test_headless_service() -> None:
    svc = headless_service(NAME, NS, UID)
    assert svc["metadata"]["name"] == "demo-peers"
    spec = svc["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert spec["selector"] == selector(NAME)
    assert {(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]} == {
        ("http", 7070, "http"),
        ("peer", 17070, "peer"),
    }


def test_client_service() -> None:
    svc = client_service(NAME, NS, UID)
    assert svc["metadata"]["name"] == "demo"
    spec = svc["spec"]
    assert spec["type"] == "ClusterIP"
    assert "clusterIP" not in spec
    assert not spec.get("publishNotReadyAddresses")
    assert spec["selector"] == selector(NAME)
    assert [(p["name"], p["port"]) for p in spec["ports"]] == [("http", 7070)]


def test_pdb() -> None:
    budget = pdb(NAME, NS, UID)["spec"]
    assert budget["maxUnavailable"] == 1
    assert "minAvailable" not in budget
    assert budget["selector"] == {"matchLabels": selector(NAME)}


def test_auth_secret() -> None:
    secret = auth_secret(NAME, NS, UID, TOKENS)
    assert secret["metadata"]["name"] == "demo-auth"
    assert secret["type"] == "Opaque"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"client-token": TOKENS[0], "cluster-token": TOKENS[1]}


def test_auth_secret_is_owned_only_when_the_volumes_go_too() -> None:
    retained = ClusterSpec()
    assert retained.pvc_retention.when_deleted == "Retain"
    assert not builders.auth_secret_owned(retained)
    deleted = dataclasses.replace(retained, pvc_retention=PvcRetention(when_deleted="Delete"))
    assert builders.auth_secret_owned(deleted)
    assert auth_secret(NAME, NS, UID, TOKENS, owned=False)["metadata"]["ownerReferences"] == []
    (ref,) = auth_secret(NAME, NS, UID, TOKENS, owned=True)["metadata"]["ownerReferences"]
    assert ref["uid"] == UID and ref["controller"] is True


@pytest.mark.parametrize("tokens", [("", "x"), ("x", ""), ("same", "same")])
def test_auth_secret_refuses_bad_tokens(tokens: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="tokens"):
        auth_secret(NAME, NS, UID, tokens)


def test_auth_secret_name() -> None:
    assert builders.auth_secret_name(NAME, ClusterSpec()) == "demo-auth"
    assert builders.auth_secret_name(NAME, PRODUCTION) == "sessions-auth"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_strict_validation_is_not_vacuous(version: str) -> None:
    sts = _sts()
    sts["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, version, strict=True)


def test_pod_zero_advertises_the_seed_address() -> None:
    # The node recognises itself among its seeds by comparing ADVERTISE:PORT with the
    # seed string, so pod 0 (which founds the cluster) must expand to exactly the seed.
    args = _container()["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    expanded = options["--advertise"].replace("$(POD_NAME)", "demo-0").replace("$(NAMESPACE)", NS)
    assert f"{expanded}:{options['--port']}" == options["--seed"] == seed_address(NAME, NS)
    assert options["--node-id"].replace("$(POD_NAME)", "demo-0") == builders.pod_name(NAME, 0)


def test_a_node_alone_runs_anti_entropy_as_often_as_the_operator_makes_it() -> None:
    """`dynamo-node` without the flag and a DynamoCluster without spec.antiEntropy get
    the same interval: one default, whoever starts the node."""
    spec = parse_spec({"replicas": 3})
    assert NodeConfig(data_dir="/d").anti_entropy_interval_s == spec.anti_entropy_interval_s
