"""Desired Kubernetes objects of one DynamoCluster, as plain dicts (pure, deterministic).

Every builder takes the cluster's name, namespace and uid (for the owner reference) and,
where it matters, its `ClusterSpec`; it returns a fresh dict that shares nothing with the
spec. Randomness (the generated tokens) and the StatefulSet's replica count are passed in:
the handlers decide them, the builders only render them.

Invariants of every object built here:
- labels `app.kubernetes.io/{name,instance,managed-by}`; selectors use only the first two
  (a selector is immutable, so it never carries anything that might change);
- one owner reference to the DynamoCluster, controller and blockOwnerDeletion true, so
  the objects go with the resource. Two exceptions follow `spec.pvcRetention.whenDeleted`
  instead: the volumes (the StatefulSet's retention policy) and the generated auth
  Secret, which is owned only when the volumes go too (`auth_secret_owned`): data kept
  on retained volumes stays readable with the tokens it was written with;
- names derive from the cluster name only (`<name>`, `<name>-peers`, `<name>-config`,
  `<name>-auth`), so a restarted operator finds what it built.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

from .spec import ClusterSpec, JsonObject

API_GROUP = "dynamokv.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "DynamoCluster"

APP_NAME = "dynamokv"
MANAGED_BY = "dynamokv-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
CONFIG_HASH_ANNOTATION = f"{API_GROUP}/config-hash"

# The node's process contract (the `dynamo-node` console script in the node image).
CONTAINER_NAME = "node"
NODE_COMMAND = "dynamo-node"
CLIENT_PORT = 7070  # client and admin HTTP: /v1/..., /healthz, /readyz, /metrics
PEER_PORT = 17070  # node-to-node framed protocol (TCP)
CLIENT_PORT_NAME = "http"
PEER_PORT_NAME = "peer"
DATA_DIR = "/data"
CONFIG_DIR = "/etc/dynamokv"
CONFIG_FILE = "node.json"
TLS_VOLUME = "tls"
TLS_DIR = "/etc/dynamokv-tls"
TMP_DIR = "/tmp"
TMP_SIZE_LIMIT = "128Mi"
DATA_VOLUME = "data"
CONFIG_VOLUME = "config"
TMP_VOLUME = "tmp"
RUN_AS_USER = 10001  # the image's non-root user and group
RUN_AS_GROUP = 10001
CLIENT_TOKEN_KEY = "client-token"
CLUSTER_TOKEN_KEY = "cluster-token"
CLIENT_TOKEN_ENV = "DYNAMO_CLIENT_TOKEN"
CLUSTER_TOKEN_ENV = "DYNAMO_CLUSTER_TOKEN"
#: the node sizes its caches from this (bytes), filled by the downward API
MEMORY_LIMIT_ENV = "DYNAMO_MEMORY_LIMIT_BYTES"
#: the cluster id, from the identity ConfigMap (absent until the first formation)
CLUSTER_ID_ENV = "DYNAMO_CLUSTER_ID"
CLUSTER_ID_KEY = "cluster-id"
#: the node container's resources when `spec.resources` is unset: a request so the pods
#: are not BestEffort (first evicted, scheduled anywhere), a memory limit equal to the
#: request so the node knows what it may use (its row cache takes 1/8 of it), and no CPU
#: limit (CFS throttling would stall the event loop and trip the failure detector)
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "1Gi"},
}
#: SIGTERM makes the node flush and stop; give it time before the SIGKILL
TERMINATION_GRACE_PERIOD_S = 60
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"
PREFERRED_ANTI_AFFINITY_WEIGHT = 100

# Probes. Startup covers opening RocksDB and replaying its WAL (up to 10 minutes) so
# that liveness can be strict afterwards without killing a node that is still recovering.
STARTUP_PERIOD_S = 5
STARTUP_FAILURES = 120
LIVENESS_PERIOD_S = 10
LIVENESS_TIMEOUT_S = 5
LIVENESS_FAILURES = 6
READINESS_PERIOD_S = 5
READINESS_TIMEOUT_S = 3
READINESS_FAILURES = 3
STARTUP_TIMEOUT_S = 3
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"


# --- names -------------------------------------------------------------------------


def statefulset_name(name: str) -> str:
    return name


def client_service_name(name: str) -> str:
    return name


def headless_service_name(name: str) -> str:
    return f"{name}-peers"


def pdb_name(name: str) -> str:
    return name


def identity_configmap_name(name: str) -> str:
    return f"{name}-identity"


def configmap_name(name: str) -> str:
    return f"{name}-config"


def generated_secret_name(name: str) -> str:
    return f"{name}-auth"


def auth_secret_name(name: str, spec: ClusterSpec) -> str:
    """The Secret the nodes read their tokens from: the user's, else the generated one."""
    return spec.auth_secret_name or generated_secret_name(name)


def pod_name(name: str, ordinal: int) -> str:
    return f"{statefulset_name(name)}-{ordinal}"


def pod_dns(name: str, namespace: str, ordinal: int) -> str:
    """The stable DNS name of pod `ordinal`, through the headless Service.

    Ends in `.svc` rather than `.svc.cluster.local`, so it resolves through the pod's
    DNS search path whatever the cluster domain is.
    """
    return f"{pod_name(name, ordinal)}.{headless_service_name(name)}.{namespace}.svc"


def node_address(name: str, namespace: str, ordinal: int) -> str:
    """HOST:PORT of a node's client/admin API (what the admin `join` takes)."""
    return f"{pod_dns(name, namespace, ordinal)}:{CLIENT_PORT}"


def seed_address(name: str, namespace: str) -> str:
    """The seed every node gossips with first: pod 0, which scale-down never removes.

    All pods share one template, so pod 0 gets itself as seed: the node must ignore a
    seed equal to its own ADVERTISE:PORT (which `node_address` matches exactly), or pod 0
    never founds the cluster.
    """
    return node_address(name, namespace, 0)


# --- labels and ownership ------------------------------------------------------------


def selector(name: str) -> dict[str, str]:
    """matchLabels of the cluster's pods (immutable in a StatefulSet: keep it minimal)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name}


def selector_string(name: str) -> str:
    """`selector` in label-selector syntax, as `status.selector` (scale subresource) wants."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector(name).items()))


def labels(name: str) -> dict[str, str]:
    return {**selector(name), LABEL_MANAGED_BY: MANAGED_BY}


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    object_name: str, name: str, namespace: str, uid: str, *, owned: bool = True
) -> dict[str, Any]:
    """`owned=False` gives an empty `ownerReferences` (rather than none), so reconciling
    the ownership paths removes a reference the object had."""
    return {
        "name": object_name,
        "namespace": namespace,
        "labels": labels(name),
        "ownerReferences": [owner_reference(name, uid)] if owned else [],
    }


# --- configuration -------------------------------------------------------------------


def node_config(spec: ClusterSpec) -> dict[str, Any]:
    """The cluster-wide node settings (`node.json`); keys are `dynamo_node.core.config` fields."""
    return {
        "partitions": spec.partitions,
        "n": spec.replication.n,
        "r": spec.replication.r,
        "w": spec.replication.w,
        "anti_entropy_interval_s": spec.anti_entropy_interval_s,
        "lww": spec.lww,
        "durability": spec.durability,
        "key_max_bytes": spec.limits.max_key_bytes,
        "value_max_bytes": spec.limits.max_value_bytes,
        "max_concurrent_requests": spec.limits.max_concurrent_requests,
    }


def node_config_json(spec: ClusterSpec) -> str:
    """`node_config` serialised canonically, so equal configs are equal strings."""
    return json.dumps(node_config(spec), sort_keys=True, separators=(",", ":"))


def config_hash(spec: ClusterSpec) -> str:
    """SHA-256 of `node.json`, put on the pod template so a config change is a template
    change: the operator sees which pods run an old config and rolls them."""
    return hashlib.sha256(node_config_json(spec).encode()).hexdigest()


def configmap(name: str, namespace: str, uid: str, spec: ClusterSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(configmap_name(name), name, namespace, uid),
        "data": {CONFIG_FILE: node_config_json(spec)},
    }


def identity_configmap(name: str, namespace: str, uid: str, cluster_id: str) -> dict[str, Any]:
    """The cluster id (`status.clusterId`) for the pods, which read it through an
    optional `configMapKeyRef` (`DYNAMO_CLUSTER_ID`): a pod started before the id was
    recorded has none and may found the ring; any pod started after never does."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(identity_configmap_name(name), name, namespace, uid),
        "data": {CLUSTER_ID_KEY: cluster_id},
    }


def auth_secret_owned(spec: ClusterSpec) -> bool:
    """Whether the generated auth Secret goes with the DynamoCluster: only when its
    volumes do (`pvcRetention.whenDeleted: Delete`). With retained volumes the Secret is
    retained too, so a cluster deleted and created again under the same name finds its
    data, its ring and the tokens that data was written with (a new Secret would give
    the restarted nodes new tokens and lock every client out)."""
    return spec.pvc_retention.when_deleted == "Delete"


def auth_secret(
    name: str, namespace: str, uid: str, tokens: tuple[str, str], *, owned: bool = True
) -> dict[str, Any]:
    """The generated auth Secret (when `spec.auth.secretName` is unset).

    `tokens` is (client token, cluster token): the caller draws them (e.g.
    `secrets.token_hex(32)`), so this stays deterministic. `data` rather than
    `stringData`, so the desired object compares equal to what the API server returns.
    `owned`: see `auth_secret_owned`.
    """
    client, cluster = tokens
    if not client or not cluster or client == cluster:
        raise ValueError("need two different, non-empty tokens (client, cluster)")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(generated_secret_name(name), name, namespace, uid, owned=owned),
        "type": "Opaque",
        "data": {
            CLIENT_TOKEN_KEY: base64.b64encode(client.encode()).decode(),
            CLUSTER_TOKEN_KEY: base64.b64encode(cluster.encode()).decode(),
        },
    }


# --- services and disruption budget ----------------------------------------------------


def _service_port(port_name: str, port: int) -> dict[str, Any]:
    return {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}


def headless_service(name: str, namespace: str, uid: str) -> dict[str, Any]:
    """Peer discovery: one DNS record per pod (`pod_dns`), ready or not.

    publishNotReadyAddresses: a node is not ready until it knows the ring, which it learns
    by gossip through these very names, so they must resolve before readiness.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(headless_service_name(name), name, namespace, uid),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(name),
            "ports": [
                _service_port(CLIENT_PORT_NAME, CLIENT_PORT),
                _service_port(PEER_PORT_NAME, PEER_PORT),
            ],
        },
    }


def client_service(name: str, namespace: str, uid: str) -> dict[str, Any]:
    """What clients use (`<name>.<namespace>.svc:7070`): ready nodes only; any node
    coordinates any request, so plain load balancing is right."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(client_service_name(name), name, namespace, uid),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name),
            "ports": [_service_port(CLIENT_PORT_NAME, CLIENT_PORT)],
        },
    }


def pdb(name: str, namespace: str, uid: str) -> dict[str, Any]:
    """At most one node voluntarily down, so a drain never breaks a quorum (with N=3,
    R=W=2, one replica of any key may be missing).

    unhealthyPodEvictionPolicy AlwaysAllow: a pod that is not ready serves nothing, so
    evicting it costs no availability, and a crash-looping pod never blocks a node drain.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(pdb_name(name), name, namespace, uid),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# --- statefulset ---------------------------------------------------------------------


def statefulset(
    name: str, namespace: str, uid: str, spec: ClusterSpec, *, replicas: int
) -> dict[str, Any]:
    """The nodes. `replicas` is the StatefulSet's count, chosen by the operator, which is
    not always `spec.replicas`: it grows first on scale-up and shrinks last on scale-down,
    once the leaving nodes' data has moved. It is required so no caller shrinks by accident.

    podManagementPolicy Parallel: the operator, not the StatefulSet controller, orders
    membership changes (a pod joins the ring only when the operator stages it), so ordered
    pod creation buys no safety; and OrderedReady stalls every later pod behind one that
    cannot become ready (after a full outage, on a lost node), which is the "stuck
    StatefulSet" operators of stateful stores warn about.

    updateStrategy OnDelete: the controller never restarts pods by itself. The operator
    rolls them one at a time, and only after the restarted node is back in the ring and
    its peers' hints for it are drained; RollingUpdate only waits for readiness, which
    says nothing about hints, and could take down a second replica too early.

    Scaling to 0 (pause) retains the volumes whatever `pvcRetention.whenScaled` says.
    """
    if replicas < 0:
        raise ValueError(f"replicas must not be negative, got {replicas}")
    when_scaled = "Retain" if replicas == 0 else spec.pvc_retention.when_scaled
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(statefulset_name(name), name, namespace, uid),
        "spec": {
            "replicas": replicas,
            "serviceName": headless_service_name(name),
            "selector": {"matchLabels": selector(name)},
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": spec.pvc_retention.when_deleted,
                "whenScaled": when_scaled,
            },
            "template": pod_template(name, namespace, spec),
            "volumeClaimTemplates": [_volume_claim_template(name, spec)],
        },
    }


def pod_template(name: str, namespace: str, spec: ClusterSpec) -> dict[str, Any]:
    """The pod template; any difference between two of them means the pod must roll."""
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the node never calls the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_S,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_GROUP,
            "fsGroup": RUN_AS_GROUP,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(name, namespace, spec)],
        "volumes": [
            {"name": CONFIG_VOLUME, "configMap": {"name": configmap_name(name)}},
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
        ],
    }
    if spec.tls_secret_name:
        pod_spec["volumes"].append(
            {
                "name": TLS_VOLUME,
                "secret": {"secretName": spec.tls_secret_name, "defaultMode": 0o440},
            }
        )
    affinity = _affinity(name, spec)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(list(spec.tolerations))
    if spec.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = _topology_spread(name, spec)
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    return {
        "metadata": {
            "labels": labels(name),
            "annotations": {
                CONFIG_HASH_ANNOTATION: config_hash(spec),
                "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
            },
        },
        "spec": pod_spec,
    }


def _container(name: str, namespace: str, spec: ClusterSpec) -> dict[str, Any]:
    secret = auth_secret_name(name, spec)
    scheme = "HTTPS" if spec.tls_secret_name else "HTTP"
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": [NODE_COMMAND],
        "args": _args(name, namespace, tls=bool(spec.tls_secret_name)),
        "ports": [
            {"name": CLIENT_PORT_NAME, "containerPort": CLIENT_PORT, "protocol": "TCP"},
            {"name": PEER_PORT_NAME, "containerPort": PEER_PORT, "protocol": "TCP"},
        ],
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("NAMESPACE", "metadata.namespace"),
            _secret_env(CLIENT_TOKEN_ENV, secret, CLIENT_TOKEN_KEY),
            _secret_env(CLUSTER_TOKEN_ENV, secret, CLUSTER_TOKEN_KEY),
            _configmap_env(CLUSTER_ID_ENV, identity_configmap_name(name), CLUSTER_ID_KEY),
        ],
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": TMP_DIR},
        ],
        "startupProbe": _http_probe(
            HEALTHZ_PATH, STARTUP_PERIOD_S, STARTUP_TIMEOUT_S, STARTUP_FAILURES, scheme
        ),
        "livenessProbe": _http_probe(
            HEALTHZ_PATH, LIVENESS_PERIOD_S, LIVENESS_TIMEOUT_S, LIVENESS_FAILURES, scheme
        ),
        "readinessProbe": _http_probe(
            READYZ_PATH, READINESS_PERIOD_S, READINESS_TIMEOUT_S, READINESS_FAILURES, scheme
        ),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_GROUP,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.tls_secret_name:
        container["volumeMounts"].append(
            {"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True}
        )
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy
    resources = node_resources(spec)
    container["resources"] = resources
    basis = memory_basis(resources)
    if basis is not None:
        container["env"].append(_resource_env(MEMORY_LIMIT_ENV, basis))
    return container


def node_resources(spec: ClusterSpec) -> JsonObject:
    """`spec.resources` as given, or DEFAULT_RESOURCES when unset (a fresh copy)."""
    return copy.deepcopy(dict(spec.resources) if spec.resources else DEFAULT_RESOURCES)


def memory_basis(resources: JsonObject) -> str | None:
    """What the node sizes its memory from: `limits.memory`, else `requests.memory`
    (what the scheduler promised), else nothing (the node then falls back on its cgroup,
    i.e. the Kubernetes node's memory: docs/operations.md says to give a limit)."""
    for part, resource in (("limits", "limits.memory"), ("requests", "requests.memory")):
        amounts = resources.get(part)
        if isinstance(amounts, dict) and "memory" in amounts:
            return resource
    return None


def _resource_env(env: str, resource: str) -> dict[str, Any]:
    ref = {"containerName": CONTAINER_NAME, "resource": resource, "divisor": "1"}
    return {"name": env, "valueFrom": {"resourceFieldRef": ref}}


def _args(name: str, namespace: str, *, tls: bool = False) -> list[str]:
    """The node's command line; $(VAR) is expanded by the kubelet from the container env."""
    options = {
        "--data-dir": DATA_DIR,
        "--port": str(CLIENT_PORT),
        "--host": "0.0.0.0",
        "--peer-port": str(PEER_PORT),
        "--advertise": f"$(POD_NAME).{headless_service_name(name)}.$(NAMESPACE).svc",
        "--node-id": "$(POD_NAME)",
        "--seed": seed_address(name, namespace),
        "--config": f"{CONFIG_DIR}/{CONFIG_FILE}",
    }
    if tls:
        options["--tls-cert"] = f"{TLS_DIR}/tls.crt"
        options["--tls-key"] = f"{TLS_DIR}/tls.key"
        options["--tls-ca"] = f"{TLS_DIR}/ca.crt"
    return [part for option, value in options.items() for part in (option, value)]


def _field_env(env: str, field_path: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def _configmap_env(env: str, configmap: str, key: str) -> dict[str, Any]:
    """Optional: the pod starts without it (the ConfigMap does not exist yet)."""
    ref = {"name": configmap, "key": key, "optional": True}
    return {"name": env, "valueFrom": {"configMapKeyRef": ref}}


def _secret_env(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _http_probe(
    path: str, period_s: int, timeout_s: int, failures: int, scheme: str = "HTTP"
) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": CLIENT_PORT_NAME, "scheme": scheme},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _volume_claim_template(name: str, spec: ClusterSpec) -> dict[str, Any]:
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name is not None:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": DATA_VOLUME, "labels": labels(name)},
        "spec": claim_spec,
    }


def _anti_affinity_term(name: str) -> dict[str, Any]:
    return {
        "labelSelector": {"matchLabels": selector(name)},
        "topologyKey": HOSTNAME_TOPOLOGY_KEY,
    }


def _affinity(name: str, spec: ClusterSpec) -> JsonObject:
    """The user's affinity plus the podAntiAffinity preset, appended to any
    anti-affinity terms the user gave (never replacing them)."""
    affinity: JsonObject = copy.deepcopy(spec.affinity) if spec.affinity else {}
    if spec.pod_anti_affinity == "none":
        return affinity
    anti: JsonObject = affinity.setdefault("podAntiAffinity", {})
    if spec.pod_anti_affinity == "required":
        key = "requiredDuringSchedulingIgnoredDuringExecution"
        term: JsonObject = _anti_affinity_term(name)
    else:
        key = "preferredDuringSchedulingIgnoredDuringExecution"
        term = {
            "weight": PREFERRED_ANTI_AFFINITY_WEIGHT,
            "podAffinityTerm": _anti_affinity_term(name),
        }
    anti[key] = [*anti.get(key, []), term]
    return affinity


def _topology_spread(name: str, spec: ClusterSpec) -> list[JsonObject]:
    """The user's constraints; one without labelSelector would match no pod (and so do
    nothing), so it gets the cluster's selector."""
    constraints = copy.deepcopy(list(spec.topology_spread_constraints))
    for constraint in constraints:
        constraint.setdefault("labelSelector", {"matchLabels": selector(name)})
    return constraints
