"""What kube-apiserver checks in a CRD's schema before it accepts the CRD (kmock does none).

apiextensions-apiserver validates every `default` of a structural schema against the
schema it sits on and against every `x-kubernetes-validations` rule of that node and
below, evaluated on the default value *as written*: the defaults nested inside it are
NOT applied first. So `default: {}` on an object whose rule reads `self.r` is refused
("no such key: r evaluating rule ..."), although any real object would have `r`
defaulted. Transition rules (naming `oldSelf`) do not run on defaults.

It also estimates each rule's cost; a rule that walks a string, list or map of unbounded
size can exceed the budget. `bound_errors` is a conservative stand-in for that estimate:
a rule that applies a string function to `self` (or iterates a list or map) needs
`maxLength` (or an `enum`), `maxItems` or `maxProperties` on what it walks.

Every function takes a CRD document, so any CRD under crds/ is checked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from .crdcheck import (
    _MISSING,
    ROOT,
    _at,
    collect_rules,
    compile_rule,
    evaluate,
    load_yaml,
    to_json_schema,
)

#: CEL functions that walk a whole string
_STRING_WALKERS = re.compile(r"\b(matches|contains|startsWith|endsWith|duration|quantity|size)\(")
#: CEL macros that walk a whole list or map
_COLLECTION_WALKERS = re.compile(r"\.(all|exists|exists_one|map|filter)\(")


def crd_files() -> list[Path]:
    return sorted((ROOT / "crds").glob("*.yaml"))


def version_schemas(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for version in doc["spec"]["versions"]:
        yield version["name"], version["schema"]["openAPIV3Schema"]


@dataclass(frozen=True)
class Node:
    path: tuple[str, ...]
    schema: dict[str, Any]


def walk(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[Node]:
    yield Node(path, schema)
    for key, prop in schema.get("properties", {}).items():
        yield from walk(prop, (*path, key))
    for nested in ("items", "additionalProperties"):
        if isinstance(schema.get(nested), dict):
            yield from walk(schema[nested], (*path, f"[{nested}]"))


def default_errors(schema: dict[str, Any]) -> list[str]:
    """Every complaint the API server would make about the defaults in `schema`."""
    errors: list[str] = []
    for node in walk(schema):
        if "default" not in node.schema:
            continue
        where = ".".join(node.path) or "<root>"
        value = node.schema["default"]
        validator = jsonschema.Draft7Validator(to_json_schema(node.schema))
        errors += [f"{where}.default: {e.message}" for e in validator.iter_errors(value)]
        for rule in collect_rules(node.schema):
            if rule.transition:
                continue
            target = _at(value, rule.path)
            if target is _MISSING:
                continue
            if not evaluate(rule.rule, target):
                errors.append(f"{where}.default: rule {rule.rule!r} fails on {value!r}")
    return errors


def bound_errors(schema: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    for node in walk(schema):
        rules = node.schema.get("x-kubernetes-validations", [])
        for raw in rules:
            rule = " ".join(raw["rule"].split())
            compile_rule(rule)
            where = ".".join(node.path) or "<root>"
            kind = node.schema.get("type")
            if (
                kind == "string"
                and _STRING_WALKERS.search(rule)
                and "maxLength" not in node.schema
                and "enum" not in node.schema
            ):
                errors.append(f"{where}: rule {rule!r} walks a string without maxLength")
            if _COLLECTION_WALKERS.search(rule):
                if kind == "array" and "maxItems" not in node.schema:
                    errors.append(f"{where}: rule {rule!r} walks a list without maxItems")
                if kind == "object" and "maxProperties" not in node.schema:
                    errors.append(f"{where}: rule {rule!r} walks a map without maxProperties")
    return errors


def crd_errors(path: Path) -> list[str]:
    doc = load_yaml(path)
    errors: list[str] = []
    for name, schema in version_schemas(doc):
        errors += [f"{name}: {e}" for e in default_errors(schema) + bound_errors(schema)]
    return errors
