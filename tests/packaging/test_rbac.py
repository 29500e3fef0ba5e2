"""The chart's RBAC is exactly what the operator's code calls, no more.

The required permissions are derived from the source, not listed by hand:
- every Kubernetes call goes through `Kube` (operator/dynamo_operator/kube.py); its
  methods map to verbs, and each call site's kind is resolved statically (a literal, a
  module constant, or an object built by a `builders` function, followed through
  variables, loops and the callers of the enclosing function), then mapped to its API
  group and resource through `kube.KINDS`;
- the Kopf features the handlers use (resource handlers, timers, events) add what Kopf
  itself calls; cluster-wide, Kopf also watches CRDs; the chart runs Kopf with
  `--standalone`, so no peering resources.
The rendered Roles / ClusterRole must grant each of these and nothing else, apart from
the deliberate extras listed below with their reason.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dynamo_operator import kube
from tests.packaging.charts import OPERATOR_VARIANTS, by_kind, render_operator
from tests.packaging.tools import ROOT, Tools

PACKAGE = ROOT / "operator" / "dynamo_operator"
Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

#: Kube's methods and the verb each one needs (a new method fails the test until mapped)
KUBE_VERBS = {
    "get": "get",
    "list_objects": "list",
    "create": "create",
    "merge_patch": "patch",
    "json_patch": "patch",
    "delete": "delete",
}
#: the HTTP method each verb goes out as, checked against kube.py's `_request` calls
HTTP_METHODS = {"get": "GET", "list": "GET", "create": "POST", "patch": "PATCH", "delete": "DELETE"}
#: Kube methods that take the object (not a kind) as their first argument
TAKES_OBJECT = {"create"}
NOT_API_CALLS = {"from_environment", "for_url", "close"}

#: Kopf, for every resource a handler or timer is registered for: list + watch (the
#: watch stream), patch (its annotations, finalizers) and status patches (progress
#: under status.kopf, through the status subresource the CRD has)
KOPF_RESOURCE_VERBS = (("", "list"), ("", "watch"), ("", "patch"), ("/status", "patch"))
KOPF_RESOURCE_DECORATORS = {
    "create",
    "update",
    "resume",
    "delete",
    "field",
    "event",
    "timer",
    "daemon",
}
KOPF_EVENT_CALLS = {"event", "info", "warn", "exception"}
EVENTS: Permission = ("", "events", "create")
#: Kopf's resource observer watches CRDs (cluster-scoped) when serving the whole cluster
CRD_WATCH = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}

#: cluster-scoped reads (spec.autoReplace): in the ClusterRole cluster-wide; in
#: namespace-scoped mode a Role cannot grant them, a small ClusterRole does when the chart
#: value rbac.readNodes is set (without it, autoReplace does nothing and says why)
HOST_READS: set[Permission] = {("", "nodes", "list"), ("", "persistentvolumes", "get")}

#: granted on purpose though no call in the code makes it: permission -> reason
DELIBERATE_EXTRAS: dict[Permission, str] = {
    ("dynamokv.io", "dynamoclusters/finalizers", "update"): (
        "the owned objects' ownerReferences set blockOwnerDeletion "
        "(builders.owner_reference); API servers enforcing OwnerReferencesPermissionEnforcement "
        "(OpenShift) require update on the owner's finalizers to create such objects"
    ),
}


# --- reading the package -----------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str
    tree: ast.Module

    @functools.cached_property
    def constants(self) -> dict[str, Any]:
        """Module-level NAME = <literal> (and NAME = OTHER_NAME) assignments."""
        found: dict[str, Any] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        return found

    @functools.cached_property
    def imports(self) -> dict[str, tuple[str, str]]:
        """`from .module import NAME` -> {NAME: (module, NAME)}."""
        found = {}
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                for alias in node.names:
                    found[alias.asname or alias.name] = (node.module, alias.name)
        return found

    def functions(self) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield node


@functools.cache
def modules() -> dict[str, Module]:
    return {
        path.stem: Module(path.stem, ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.glob("*.py"))
    }


def constant(module: Module, name: str) -> Any:
    """The value of a module-level constant, following `from .x import NAME`."""
    if name in module.constants:
        value = module.constants[name]
        if isinstance(value, ast.Constant):
            return value.value
        if isinstance(value, ast.Name):
            return constant(module, value.id)
        if isinstance(value, ast.JoinedStr):
            parts = []
            for part in value.values:
                if isinstance(part, ast.Constant):
                    parts.append(str(part.value))
                else:
                    assert isinstance(part, ast.FormattedValue)
                    assert isinstance(part.value, ast.Name)
                    parts.append(str(constant(module, part.value.id)))
            return "".join(parts)
    if name in module.imports:
        source, original = module.imports[name]
        return constant(modules()[source], original)
    raise KeyError(f"{module.name}.{name} is not a constant")


@functools.cache
def builder_kinds() -> dict[str, str]:
    """builders.py function -> the kind of the object it returns (its top-level dict)."""
    kinds = {}
    for function in modules()["builders"].functions():
        for node in ast.walk(function):
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "kind"
                        and isinstance(value, ast.Constant)
                    ):
                        kinds[function.name] = str(value.value)
    return kinds


def enclosing_functions(module: Module) -> dict[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef]:
    owner = {}
    for function in module.functions():
        for node in ast.walk(function):
            owner.setdefault(node, function)
    return owner


def bound_names(target: ast.expr) -> set[str]:
    """The names an assignment target binds (`a`, `a, b = ...`; not `d[a] = ...`)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return set().union(*(bound_names(e) for e in target.elts))
    if isinstance(target, ast.Starred):
        return bound_names(target.value)
    return set()


class Unresolved(AssertionError):
    pass


class KindResolver:
    """Which kinds an expression at a Kube call site can be."""

    def __init__(self) -> None:
        self._owners = {name: enclosing_functions(m) for name, m in modules().items()}

    def kinds(self, expr: ast.expr, module: Module, seen: frozenset[str] = frozenset()) -> set[str]:
        key = f"{module.name}:{ast.dump(expr)}:{getattr(expr, 'lineno', 0)}"
        if key in seen:
            return set()
        seen = seen | {key}
        if isinstance(expr, ast.Await):
            return self.kinds(expr.value, module, seen)
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.Call):
            name = expr.func.id if isinstance(expr.func, ast.Name) else None
            if name in builder_kinds():
                return {builder_kinds()[name]}
            # not a builder (with_template_hash(...), _name_of(desired)): whatever its
            # arguments are
            return set().union(*(self.kinds(arg, module, seen) for arg in expr.args))
        if isinstance(expr, ast.Name):
            return self._name(expr, module, seen)
        raise Unresolved(
            f"{module.name}.py:{expr.lineno}: cannot tell the kind of `{ast.unparse(expr)}`"
        )

    def _name(self, expr: ast.Name, module: Module, seen: frozenset[str]) -> set[str]:
        function = self._owners[module.name].get(expr)
        if function is not None:
            found = self._local(expr.id, function, module, seen)
            if found is not None:
                return found
        try:
            return {str(constant(module, expr.id))}
        except KeyError:
            raise Unresolved(
                f"{module.name}.py:{expr.lineno}: cannot tell the kind of `{expr.id}`"
            ) from None

    def _local(
        self, name: str, function: ast.AST, module: Module, seen: frozenset[str]
    ) -> set[str] | None:
        assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        sources: list[ast.expr] = []
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and any(
                name in bound_names(target) for target in node.targets
            ):
                sources.append(node.value)
            if (
                isinstance(node, ast.For)
                and isinstance(node.target, ast.Name)
                and node.target.id == name
            ):
                assert isinstance(node.iter, ast.Tuple | ast.List), ast.unparse(node.iter)
                sources.extend(node.iter.elts)
        if sources:
            return set().union(*(self.kinds(source, module, seen) for source in sources))
        params = [a.arg for a in function.args.args]
        if name in params:  # a parameter: what every caller passes
            return self._callers(function.name, params.index(name), name, seen)
        return None

    def _callers(self, function: str, index: int, param: str, seen: frozenset[str]) -> set[str]:
        found: set[str] = set()
        calls = 0
        for module in modules().values():
            for node in ast.walk(module.tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == function
                ):
                    calls += 1
                    keyword = [k.value for k in node.keywords if k.arg == param]
                    arg = keyword[0] if keyword else node.args[index]
                    found |= self.kinds(arg, module, seen)
        if not calls:
            raise Unresolved(f"nothing calls {function}(); cannot tell what `{param}` is")
        return found


# --- what the code needs -----------------------------------------------------------------


def is_kube(receiver: ast.expr) -> bool:
    text = ast.unparse(receiver)
    return text == "kube" or text.endswith(".kube")


@dataclass(frozen=True)
class CallSite:
    where: str
    method: str
    kinds: frozenset[str]
    subresource: str | None


def kube_call_sites() -> list[CallSite]:
    resolver = KindResolver()
    sites = []
    for module in modules().values():
        if module.name == "kube":
            continue
        for node in ast.walk(module.tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in KUBE_VERBS
                and is_kube(node.func.value)
            ):
                continue
            sub = [k.value for k in node.keywords if k.arg == "subresource"]
            subresource = None
            if sub:
                assert isinstance(sub[0], ast.Constant), ast.unparse(sub[0])
                subresource = str(sub[0].value)
            sites.append(
                CallSite(
                    f"{module.name}.py:{node.lineno}",
                    node.func.attr,
                    frozenset(resolver.kinds(node.args[0], module)),
                    subresource,
                )
            )
    return sites


def group_and_resource(kind: str) -> tuple[str, str]:
    where = kube.KINDS[kind]
    parts = where.prefix.split("/")  # api/v1 or apis/GROUP/VERSION
    group = "" if parts[0] == "api" else parts[1]
    return group, where.plural


def code_permissions() -> dict[Permission, set[str]]:
    """Every permission the operator's own calls need -> where they are made."""
    needed: dict[Permission, set[str]] = {}
    for site in kube_call_sites():
        for kind in site.kinds:
            group, resource = group_and_resource(kind)
            if site.subresource:
                resource += f"/{site.subresource}"
            needed.setdefault((group, resource, KUBE_VERBS[site.method]), set()).add(site.where)
    return needed


def kopf_permissions() -> dict[Permission, set[str]]:
    """What Kopf calls for the features handlers.py uses."""
    handlers = modules()["handlers"]
    needed: dict[Permission, set[str]] = {}
    for node in ast.walk(handlers.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                if not isinstance(decorator, ast.Call):
                    continue
                name = ast.unparse(decorator.func)
                if name.rsplit(".", 1)[-1] not in KOPF_RESOURCE_DECORATORS or not name.startswith(
                    "kopf."
                ):
                    continue
                group, _version, plural = (
                    constant(handlers, arg.id) if isinstance(arg, ast.Name) else arg.value
                    for arg in decorator.args[:3]
                    if isinstance(arg, ast.Name | ast.Constant)
                )
                for suffix, verb in KOPF_RESOURCE_VERBS:
                    needed.setdefault((group, plural + suffix, verb), set()).add(
                        f"@{name} on {node.name}"
                    )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and ast.unparse(node.func.value) == "kopf"
            and node.func.attr in KOPF_EVENT_CALLS
        ):
            needed.setdefault(EVENTS, set()).add(
                f"kopf.{node.func.attr} (handlers.py:{node.lineno})"
            )
    return needed


def required(cluster_wide: bool) -> set[Permission]:
    needed = set(code_permissions()) | set(kopf_permissions())
    return needed | CRD_WATCH if cluster_wide else needed


def granted(rules: list[dict[str, Any]]) -> set[Permission]:
    out = set()
    for rule in rules:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add((group, resource, verb))
    return out


# --- the tests ---------------------------------------------------------------------------


def test_every_kube_method_is_mapped_to_a_verb() -> None:
    (cls,) = [
        n
        for n in ast.walk(modules()["kube"].tree)
        if isinstance(n, ast.ClassDef) and n.name == "Kube"
    ]
    methods = {
        n.name
        for n in cls.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_")
    }
    assert methods - NOT_API_CALLS == set(KUBE_VERBS)
    for method in cls.body:
        if not isinstance(method, ast.AsyncFunctionDef) or method.name not in KUBE_VERBS:
            continue
        sent = {
            node.args[0].value
            for node in ast.walk(method)
            if isinstance(node, ast.Call)
            and ast.unparse(node.func) == "self._request"
            and isinstance(node.args[0], ast.Constant)
        }
        assert sent == {HTTP_METHODS[KUBE_VERBS[method.name]]}, method.name


def test_call_sites_are_found_and_resolved() -> None:
    sites = kube_call_sites()
    assert len(sites) >= 10  # the resolver sees the calls (a refactor would not hide them)
    for site in sites:
        assert site.kinds, site
        assert site.kinds <= set(kube.KINDS), site
    assert set().union(*(site.kinds for site in sites)) == set(kube.KINDS)


def test_the_code_needs_what_the_design_says() -> None:
    """A readable statement of the derived set, so a change in the code shows up here."""
    assert required(cluster_wide=False) == {
        ("dynamokv.io", "dynamoclusters", "list"),
        ("dynamokv.io", "dynamoclusters", "watch"),
        ("dynamokv.io", "dynamoclusters", "patch"),
        ("dynamokv.io", "dynamoclusters/status", "patch"),
        ("apps", "statefulsets", "get"),
        ("apps", "statefulsets", "create"),
        ("apps", "statefulsets", "patch"),
        ("", "services", "get"),
        ("", "services", "create"),
        ("", "services", "patch"),
        ("", "configmaps", "get"),
        ("", "configmaps", "create"),
        ("", "configmaps", "patch"),
        ("policy", "poddisruptionbudgets", "get"),
        ("policy", "poddisruptionbudgets", "create"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("", "secrets", "get"),
        ("", "secrets", "create"),
        ("", "secrets", "patch"),
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("", "persistentvolumeclaims", "get"),
        ("", "persistentvolumeclaims", "delete"),
        ("", "nodes", "list"),
        ("", "persistentvolumes", "get"),
        ("", "events", "create"),
    }
    assert required(cluster_wide=False) >= HOST_READS


def test_deliberate_extras_still_have_their_reason() -> None:
    source = (PACKAGE / "builders.py").read_text()
    assert '"blockOwnerDeletion": True' in source


@pytest.fixture(scope="module")
def rendered(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    return {name: render_operator(tools.helm, values) for name, values in OPERATOR_VARIANTS.items()}


@pytest.mark.parametrize("variant", ["default", "external-crd"])
def test_cluster_wide_rbac_is_exactly_what_the_code_calls(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    objs = rendered[variant]
    assert by_kind(objs, "Role") == [] and by_kind(objs, "RoleBinding") == []
    (role,) = by_kind(objs, "ClusterRole")
    have = granted(role["rules"])
    need = required(cluster_wide=True)
    assert need - have == set(), "missing grants"
    assert have - need == set(DELIBERATE_EXTRAS), "grants no code needs"
    (binding,) = by_kind(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    _binds_the_operator(objs, binding)


@pytest.mark.parametrize("variant", ["namespaced", "release-namespace", "namespaced-read-nodes"])
def test_namespaced_rbac_is_exactly_what_the_code_calls(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    objs = rendered[variant]
    if variant == "namespaced-read-nodes":
        (cluster_role,) = by_kind(objs, "ClusterRole")
        assert granted(cluster_role["rules"]) == HOST_READS  # read-only, nothing else
        (cluster_binding,) = by_kind(objs, "ClusterRoleBinding")
        assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
        _binds_the_operator(objs, cluster_binding)
    else:
        assert by_kind(objs, "ClusterRole") == [] and by_kind(objs, "ClusterRoleBinding") == []
    roles = by_kind(objs, "Role")
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objs, "RoleBinding")}
    (container,) = by_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    served = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--namespace=")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(served) == sorted(bindings)
    need = required(cluster_wide=False) - HOST_READS
    for role in roles:
        have = granted(role["rules"])
        assert need - have == set(), "missing grants"
        assert have - need == set(DELIBERATE_EXTRAS), "grants no code needs"
        binding = bindings[role["metadata"]["namespace"]]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        _binds_the_operator(objs, binding)


def _binds_the_operator(objs: list[dict[str, Any]], binding: dict[str, Any]) -> None:
    (deployment,) = by_kind(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]


def test_peering_is_off_so_no_peering_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, objs in rendered.items():
        (container,) = by_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
        assert "--standalone" in container["args"], variant
        for role in by_kind(objs, "Role") + by_kind(objs, "ClusterRole"):
            assert not any("kopf" in g for r in role["rules"] for g in r["apiGroups"])
