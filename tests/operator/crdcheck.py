"""What a real API server does with a DynamoCluster, emulated for tests (kmock does none of it).

- `apply_defaults`: structural defaulting (null in a non-nullable field is pruned; a default
  is applied, then its own fields are defaulted in turn, as the API server does).
- `schema_errors`: the openAPIV3Schema as JSON Schema, stricter than the API server in
  one way: an unknown field is an error here where the API server would prune it
  silently (so a typo in an example fails a test instead of vanishing).
- `cel_errors`: every `x-kubernetes-validations` rule, evaluated by BOTH CEL libraries
  (cel-python `celpy` and the Rust-backed `common-expression-language`); they must agree.
  Transition rules (those naming `oldSelf`) run only when there is an old value, like on
  an UPDATE. A rule that fails to evaluate counts as a rejection, as on the API server.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cel
import celpy
import jsonschema
import yaml
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "dynamoclusters.yaml"
EXAMPLES = ROOT / "crds" / "examples"


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as f:
        body: dict[str, Any] = yaml.safe_load(f)
    return body


@functools.cache
def _crd() -> dict[str, Any]:
    return load_yaml(CRD_PATH)


def crd() -> dict[str, Any]:
    return copy.deepcopy(_crd())


def openapi_schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def subschema(path: tuple[str, ...]) -> dict[str, Any]:
    node = openapi_schema()
    for key in path:
        node = node["properties"][key]
    return node


def resource(spec: dict[str, Any] | None, name: str = "demo") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "dynamokv.io/v1alpha1",
        "kind": "DynamoCluster",
        "metadata": {"name": name, "namespace": "default"},
    }
    if spec is not None:
        body["spec"] = spec
    return body


# --- defaulting ----------------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of `value` with the schema's defaults applied, recursively."""
    value = copy.deepcopy(value)
    _default(schema, value)
    return value


def _default(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for key, prop in schema.get("properties", {}).items():
            if key in value and value[key] is None and not prop.get("nullable"):
                del value[key]  # pruned before defaulting, as the API server does
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                _default(prop, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _default(extra, item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(schema["items"], item)


# --- OpenAPI schema as JSON Schema ---------------------------------------------------

_KEPT = (
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "required",
)


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema as a JSON Schema (formats are not checked)."""
    out: dict[str, Any] = {key: schema[key] for key in _KEPT if key in schema}
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    elif "type" in schema:
        out["type"] = schema["type"]
    if schema.get("nullable"):
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    if "properties" in schema:
        out["properties"] = {k: to_json_schema(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = to_json_schema(schema["items"])
    return out


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    schema = to_json_schema(openapi_schema())
    del schema["properties"]["metadata"]["additionalProperties"]  # ObjectMeta, not ours
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(obj: dict[str, Any]) -> list[str]:
    errors = sorted(_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# --- CEL -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    path: tuple[str, ...]  # properties from the root of the resource to `self`
    rule: str
    message: str

    @property
    def transition(self) -> bool:
        return "oldSelf" in self.rule

    def __str__(self) -> str:
        return f"{'.'.join(self.path) or '<root>'}: {self.rule}"


def collect_rules(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[Rule]:
    """Every x-kubernetes-validations rule, with where it applies. Rules under arrays or
    maps would need a wildcard path; this CRD has none, and the walker refuses them."""
    rules = [
        Rule(path, " ".join(r["rule"].split()), r.get("message", f"failed rule: {r['rule']}"))
        for r in schema.get("x-kubernetes-validations", [])
    ]
    for key, prop in schema.get("properties", {}).items():
        rules += collect_rules(prop, (*path, key))
    for nested in ("items", "additionalProperties"):
        if isinstance(schema.get(nested), dict):
            assert not collect_rules(schema[nested]), f"rules under {path}.{nested}: extend me"
    return rules


def all_rules() -> list[Rule]:
    return collect_rules(openapi_schema())


@functools.cache
def _celpy_program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


@functools.cache
def _cel_program(rule: str) -> Any:
    return cel.compile(rule)


def compile_rule(rule: str) -> None:
    """Raise unless both libraries compile the rule."""
    _celpy_program(rule)
    _cel_program(rule)


def evaluate(rule: str, self_value: Any, old_value: Any = None) -> bool:
    """The rule's verdict; both libraries must agree. An evaluation error is False."""
    variables = {"self": self_value}
    if "oldSelf" in rule:
        variables["oldSelf"] = old_value
    verdicts = {_eval_celpy(rule, variables), _eval_cel(rule, variables)}
    assert len(verdicts) == 1, f"CEL libraries disagree on {rule!r} with {variables!r}"
    return verdicts.pop()


def _eval_celpy(rule: str, variables: dict[str, Any]) -> bool:
    try:
        result = _celpy_program(rule).evaluate(
            {name: json_to_cel(value) for name, value in variables.items()}
        )
    except CELEvalError:
        return False
    if isinstance(result, CELEvalError):
        return False
    assert isinstance(result, BoolType), (rule, result)
    return bool(result)


def _eval_cel(rule: str, variables: dict[str, Any]) -> bool:
    try:
        result = _cel_program(rule).execute(variables)
    except (KeyError, RuntimeError, ValueError, TypeError):
        return False
    assert isinstance(result, bool), (rule, result)
    return result


_MISSING = object()


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or obj.get(key) is None:
            return _MISSING
        obj = obj[key]
    return obj


def cel_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    messages = []
    for rule in all_rules():
        value = _at(obj, rule.path)
        if value is _MISSING:
            continue
        old_value = _MISSING if old is None else _at(old, rule.path)
        if rule.transition and old_value is _MISSING:
            continue
        if not evaluate(rule.rule, value, old_value):
            messages.append(rule.message)
    return messages


def admission_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """What the API server would refuse in `obj` (an UPDATE from `old` when given)."""
    schema = openapi_schema()
    obj = apply_defaults(schema, obj)
    errors = schema_errors(obj)
    if errors:  # the verdict is already "rejected"; CEL on ill-typed values proves nothing
        return errors
    return cel_errors(obj, None if old is None else apply_defaults(schema, old))
