"""parse_spec / check_update / check_name enforce exactly what the CRD enforces (kmock runs
no CEL, so the operator must), with the CRD's defaults."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_operator.errors import ImmutableFieldError, OperatorError, SpecError
from dynamo_operator.spec import (
    AutoReplace,
    ClusterSpec,
    PvcRetention,
    Replication,
    Storage,
    check_name,
    check_update,
    parse_duration,
    parse_spec,
)
from tests.operator.crdcheck import (
    EXAMPLES,
    admission_errors,
    apply_defaults,
    load_yaml,
    openapi_schema,
    resource,
)


def test_defaults() -> None:
    spec = parse_spec({})
    assert spec == ClusterSpec()
    assert spec.replicas == 3
    assert spec.image == "dynamokv/node:0.1.0"
    assert spec.image_pull_policy is None
    assert spec.replication == Replication(n=3, r=2, w=2)
    assert spec.partitions == 256
    assert spec.storage == Storage(size="1Gi", storage_class_name=None)
    assert spec.resources is None
    assert spec.auth_secret_name is None
    assert spec.anti_entropy_interval == "10m"
    assert spec.anti_entropy_interval_s == 600.0
    assert spec.pod_anti_affinity == "preferred"
    assert spec.pvc_retention == PvcRetention(when_deleted="Retain", when_scaled="Delete")
    assert spec.lww is False
    assert spec.durability == "wal"
    assert spec.tolerations == ()
    assert spec.node_selector == {}
    assert spec.auto_replace == AutoReplace(enabled=False, after="10m")
    assert spec.auto_replace.after_s == 600.0
    assert not spec.paused


def test_defaults_match_the_crd() -> None:
    defaulted = apply_defaults(openapi_schema(), resource(None))["spec"]
    assert parse_spec(defaulted) == parse_spec({}) == parse_spec(None)


def test_null_means_absent() -> None:
    assert parse_spec({"replicas": None, "replication": None, "storage": {"size": None}}) == (
        ClusterSpec()
    )


def test_production_example() -> None:
    spec = parse_spec(load_yaml(EXAMPLES / "production.yaml")["spec"])
    assert spec.replicas == 5
    assert spec.partitions == 1024
    assert spec.storage == Storage(size="50Gi", storage_class_name="fast-ssd")
    assert spec.auth_secret_name == "sessions-auth"
    assert spec.anti_entropy_interval_s == 1800.0
    assert spec.pod_anti_affinity == "required"
    assert spec.resources == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert spec.tolerations[0]["key"] == "dedicated"
    assert spec.topology_spread_constraints[0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec.node_selector == {"kubernetes.io/os": "linux"}
    assert spec.durability == "sync"


def test_auto_replace() -> None:
    spec = parse_spec({"autoReplace": {"enabled": True, "after": "1h30m"}})
    assert spec.auto_replace == AutoReplace(enabled=True, after="1h30m")
    assert spec.auto_replace.after_s == 5400.0
    assert parse_spec({"autoReplace": {"enabled": True}}).auto_replace.after_s == 600.0
    assert parse_spec({"autoReplace": {"after": "1m"}}).auto_replace == AutoReplace(after="1m")


def test_minimal_example() -> None:
    assert parse_spec(load_yaml(EXAMPLES / "minimal.yaml")["spec"]) == ClusterSpec()


def test_paused() -> None:
    assert parse_spec({"replicas": 0}).paused


def test_spec_does_not_alias_its_input() -> None:
    raw: dict[str, Any] = {
        "affinity": {"nodeAffinity": {}},
        "tolerations": [{"key": "a"}],
        "resources": {"requests": {"cpu": "1"}},
        "nodeSelector": {"a": "b"},
    }
    spec = parse_spec(raw)
    before = copy.deepcopy(spec)
    raw["affinity"]["x"] = 1
    raw["tolerations"][0]["key"] = "b"
    raw["resources"]["requests"]["cpu"] = "2"
    raw["nodeSelector"]["a"] = "c"
    assert spec == before


def test_resources_keep_only_limits_and_requests() -> None:
    spec = parse_spec({"resources": {"requests": {"cpu": 1}, "claims": [{"name": "gpu"}]}})
    assert spec.resources == {"requests": {"cpu": 1}}


def test_spec_is_hashable_and_frozen() -> None:
    spec = parse_spec({"tolerations": [{"key": "a"}]})
    assert hash(spec) == hash(parse_spec({"tolerations": [{"key": "b"}]}))
    with pytest.raises(AttributeError):
        spec.replicas = 5  # type: ignore[misc]


INVALID: list[tuple[Any, str, str]] = [
    ([], "spec", "must be an object"),
    ({"replicas": -1}, "spec.replicas", "at least 0"),
    ({"replicas": 2}, "spec.replicas", "at least replication.n (3)"),
    ({"replicas": True}, "spec.replicas", "integer"),
    ({"replicas": 3.0}, "spec.replicas", "integer"),
    ({"replicas": "3"}, "spec.replicas", "integer"),
    ({"replication": {"r": 4}}, "spec.replication.r", "between 1 and replication.n (3)"),
    ({"replication": {"w": 4}}, "spec.replication.w", "between 1 and replication.n (3)"),
    ({"replication": {"r": 0}}, "spec.replication.r", "between 1 and 16"),
    ({"replication": {"n": 17}, "replicas": 20}, "spec.replication.n", "between 1 and 16"),
    ({"replication": 3}, "spec.replication", "must be an object"),
    ({"partitions": 100}, "spec.partitions", "power of two"),
    ({"partitions": 0}, "spec.partitions", "between 1 and 65536"),
    ({"partitions": 1 << 17}, "spec.partitions", "between 1 and 65536"),
    ({"image": ""}, "spec.image", "empty"),
    ({"image": 7}, "spec.image", "string"),
    ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy", "one of Always"),
    ({"storage": {"size": "0"}}, "spec.storage.size", "greater than zero"),
    ({"storage": {"size": "ten gigs"}}, "spec.storage.size", "quantity"),
    ({"storage": {"size": "1" * 33}}, "spec.storage.size", "at most 32"),
    ({"storage": {"storageClassName": ""}}, "spec.storage.storageClassName", "empty"),
    ({"resources": {"limits": {"memory": "4 GB"}}}, "spec.resources.limits.memory", "quantity"),
    ({"resources": {"limits": {"memory": True}}}, "spec.resources.limits.memory", "quantity"),
    ({"resources": {"limits": []}}, "spec.resources.limits", "must be an object"),
    ({"auth": {"secretName": ""}}, "spec.auth.secretName", "empty"),
    ({"antiEntropy": {"interval": "500ms"}}, "spec.antiEntropy.interval", "at least 1s"),
    ({"antiEntropy": {"interval": "10"}}, "spec.antiEntropy.interval", "not a duration"),
    ({"autoReplace": {"after": "59s"}}, "spec.autoReplace.after", "at least 1m"),
    ({"autoReplace": {"after": "10"}}, "spec.autoReplace.after", "not a duration"),
    ({"autoReplace": {"after": "1" * 32 + "s"}}, "spec.autoReplace.after", "at most 32"),
    ({"autoReplace": {"enabled": "yes"}}, "spec.autoReplace.enabled", "true or false"),
    ({"autoReplace": True}, "spec.autoReplace", "must be an object"),
    ({"podAntiAffinity": "always"}, "spec.podAntiAffinity", "none, preferred, required"),
    ({"affinity": []}, "spec.affinity", "must be an object"),
    ({"tolerations": {}}, "spec.tolerations", "must be a list"),
    ({"tolerations": ["x"]}, "spec.tolerations[0]", "must be an object"),
    ({"topologySpreadConstraints": [1]}, "spec.topologySpreadConstraints[0]", "object"),
    ({"nodeSelector": {"a": 1}}, "spec.nodeSelector.a", "must be a string"),
    ({"pvcRetention": {"whenDeleted": "Keep"}}, "spec.pvcRetention.whenDeleted", "Retain"),
    ({"lww": "true"}, "spec.lww", "true or false"),
    ({"durability": "fsync"}, "spec.durability", "sync, wal"),
]


@pytest.mark.parametrize(("raw", "field", "message"), INVALID, ids=repr)
def test_invalid(raw: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert caught.value.field == field
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_error_tree() -> None:
    assert issubclass(SpecError, OperatorError)
    assert issubclass(ImmutableFieldError, SpecError)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(SpecError, match=r"replication\.r"):
        ClusterSpec(replication=Replication(n=3, r=5, w=2))
    with pytest.raises(SpecError, match="replicas"):
        ClusterSpec(replicas=1)
    with pytest.raises(SpecError, match="partitions"):
        ClusterSpec(partitions=3)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("10m", 600.0), ("1h30m", 5400.0), ("1.5m", 90.0), ("250ms", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "m", "1.m", " 1s", "-1s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_duration(text)


# --- updates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 7},
        {"replicas": 0},
        {"replication": {"r": 1, "w": 3}},
        {"image": "dynamokv/node:0.2.0"},
        {"antiEntropy": {"interval": "1h"}},
        {"autoReplace": {"enabled": True, "after": "30m"}},
        {"lww": True, "durability": "sync", "podAntiAffinity": "required"},
        {"auth": {"secretName": "mine"}},
    ],
)
def test_mutable_fields(change: dict[str, Any]) -> None:
    check_update(parse_spec({}), parse_spec(change))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"partitions": 512}, "spec.partitions"),
        ({"replication": {"n": 5}, "replicas": 5}, "spec.replication.n"),
        ({"storage": {"size": "2Gi"}}, "spec.storage"),
        ({"storage": {"storageClassName": "ssd"}}, "spec.storage"),
    ],
)
def test_immutable_fields(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ImmutableFieldError) as caught:
        check_update(parse_spec({}), parse_spec(change))
    assert caught.value.field == field


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "demo", "my-cluster-1", "x" * 52])
def test_good_names(name: str) -> None:
    check_name(name)
    assert admission_errors(resource({}, name=name)) == []


@pytest.mark.parametrize("name", ["", "1abc", "a.b", "-a", "a-", "Abc", "a_b", "x" * 53])
def test_bad_names(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_name(name)
    assert caught.value.field == "metadata.name"
    if name:  # the API server refuses an empty name before any schema
        assert admission_errors(resource({}, name=name))


# --- the same rules as the CRD, property-tested ------------------------------------------

small_ints = st.integers(min_value=-1, max_value=18)
maybe = st.none() | st.just(...)  # ... = leave the key out


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(...), st.none(), strategy)


def _build(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not ...}


odd_values = st.sampled_from(["3", True, 2.5, [], {}])

specs = st.builds(
    _build,
    replicas=_optional(st.integers(min_value=-1, max_value=8) | odd_values),
    replication=_optional(
        st.builds(
            _build,
            n=_optional(small_ints | odd_values),
            r=_optional(small_ints),
            w=_optional(small_ints),
        )
    ),
    partitions=_optional(
        st.sampled_from([0, 1, 2, 3, 64, 100, 256, 1000, 1024, 65536, 65537, 131072])
    ),
    storage=_optional(
        st.builds(
            _build,
            size=_optional(st.sampled_from(["1Gi", "0", "0Gi", "0.5Gi", "10", "1.5G", "x", ""])),
            storageClassName=_optional(st.sampled_from(["ssd", ""])),
        )
    ),
    antiEntropy=_optional(
        st.builds(
            _build,
            interval=_optional(
                st.sampled_from(["10m", "1s", "999ms", "1000ms", "0s", "2h5m", "5", "1d", ""])
            ),
        )
    ),
    autoReplace=_optional(
        st.builds(
            _build,
            enabled=_optional(st.booleans() | st.just("on")),
            after=_optional(st.sampled_from(["10m", "1m", "59s", "60s", "1h", "90", "", "0.5m"])),
        )
    ),
    podAntiAffinity=_optional(st.sampled_from(["none", "preferred", "required", "maybe"])),
    pvcRetention=_optional(
        st.builds(_build, whenScaled=_optional(st.sampled_from(["Retain", "Delete", "Keep"])))
    ),
    durability=_optional(st.sampled_from(["sync", "wal", "async"])),
    lww=_optional(st.booleans() | st.just("no")),
    image=_optional(st.sampled_from(["img:1", ""])),
    resources=_optional(
        st.builds(
            _build,
            limits=_optional(
                st.dictionaries(
                    st.sampled_from(["cpu", "memory"]),
                    st.sampled_from(["1", "500m", "4Gi", 2, "x y"]),
                )
            ),
        )
    ),
)


def _parses(spec: dict[str, Any]) -> bool:
    try:
        parse_spec(spec)
    except SpecError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(specs)
def test_parse_spec_accepts_exactly_what_the_crd_accepts(spec: dict[str, Any]) -> None:
    errors = admission_errors(resource(spec))
    assert _parses(spec) == (not errors), errors


@settings(max_examples=200, deadline=None)
@given(specs, specs)
def test_check_update_refuses_exactly_what_the_crd_refuses(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    if not (_parses(old) and _parses(new)):
        return
    errors = admission_errors(resource(new), old=resource(old))
    try:
        check_update(parse_spec(old), parse_spec(new))
    except ImmutableFieldError:
        assert errors
    else:
        assert errors == []
