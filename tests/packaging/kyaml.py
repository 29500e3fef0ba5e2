"""YAML as Helm and kubectl read it, for tests that must see what the API server gets.

Both parse YAML with sigs.k8s.io/yaml over go-yaml v2, which follows YAML 1.1 more
closely than PyYAML: a plain `y`, `Y`, `n` or `N` is a boolean there (PyYAML keeps it a
string), and a boolean mapping key becomes the JSON key "true" or "false". So a CRD
property or a spec field written as a bare `n:` reaches the API server as "false".
`load_all` reproduces that; `yaml11_differences` lists where the two readings differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

_YAML11_SHORT_BOOL = re.compile(r"^(?:y|Y|n|N)$")


class KubeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus go-yaml v2's one-letter booleans."""

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


KubeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _YAML11_SHORT_BOOL, list("yYnN"))


def _json_key(key: Any) -> str:
    """A mapping key as sigs.k8s.io/yaml turns it into a JSON object key."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def jsonable(value: Any) -> Any:
    """`value` with every mapping key a string, as the JSON the API server receives."""
    if isinstance(value, dict):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    return value


def load_all(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a YAML stream, as Helm and kubectl read them."""
    return [jsonable(doc) for doc in yaml.load_all(text, Loader=KubeLoader) if doc]


def load(text: str) -> Any:
    return jsonable(yaml.load(text, Loader=KubeLoader))


def _walk(a: Any, b: Any, path: str) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in b:
                yield f"{path}/{key}: only in the YAML 1.1 reading (Helm, kubectl)"
            elif key not in a:
                yield f"{path}/{key}: only in PyYAML's reading (Helm and kubectl see it otherwise)"
            else:
                yield from _walk(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _walk(x, y, f"{path}/{index}")
    elif a != b or type(a) is not type(b):
        yield f"{path}: {b!r} (PyYAML) is {a!r} for Helm and kubectl"


def yaml11_differences(text: str) -> list[str]:
    """Where Helm/kubectl and PyYAML read `text` differently (e.g. a bare `n:` key)."""
    kube = [jsonable(d) for d in yaml.load_all(text, Loader=KubeLoader)]
    plain = [jsonable(d) for d in yaml.safe_load_all(text)]
    return [
        f"document {index}{line}"
        for index, (a, b) in enumerate(zip(kube, plain, strict=True))
        for line in _walk(a, b, "")
    ]
