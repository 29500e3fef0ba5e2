"""The docs cannot drift from the code: docs/api.md is docs/gen_api.py's output, and
docs/operations.md names every phase, condition, reason, event and metric there is and
the RBAC rules the chart grants; README's Kubernetes quick start points at real files."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from tests.harness import cluster
from tests.packaging.charts import by_kind, render_operator
from tests.packaging.test_rbac import granted
from tests.packaging.tools import ROOT, Tools

DOCS = ROOT / "docs"
OPERATIONS = (DOCS / "operations.md").read_text()
README = (ROOT / "README.md").read_text()
#: module-level string constants of the operator that users see in status and events
USER_VISIBLE = re.compile(r"^(PHASE|REASON|EVENT)_[A-Z_]+$|^(AVAILABLE|PROGRESSING|DEGRADED)$")


def gen_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_generated_from_the_openapi_document() -> None:
    assert (DOCS / "api.md").read_text() == gen_api().render(), (
        "docs/api.md is stale: python docs/gen_api.py --write"
    )


def test_api_reference_covers_every_path_and_command() -> None:
    from dynamo_node.cli import build_parser
    from dynamo_node.edge.openapi import openapi_document

    text = (DOCS / "api.md").read_text()
    for path, item in openapi_document()["paths"].items():
        for method in item:
            if method != "parameters":
                assert f"### `{method.upper()} {path}`" in text
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in commands.choices:
        assert f"### dynamoctl {name}" in text


def user_visible_strings() -> dict[str, str]:
    found = {}
    for path in sorted((ROOT / "operator" / "dynamo_operator").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and USER_VISIBLE.match(node.targets[0].id)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found[f"{path.stem}.{node.targets[0].id}"] = node.value.value
    return found


def test_operations_guide_names_every_phase_condition_reason_and_event() -> None:
    strings = user_visible_strings()
    assert len(strings) > 30  # the constants are found at all
    missing = {name: value for name, value in strings.items() if f"`{value}`" not in OPERATIONS}
    assert missing == {}, "document these in docs/operations.md"


def test_operations_guide_lists_every_metric_a_node_exposes(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        node = c.add_node()
        with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
            exposition = response.read().decode()
    names = set(re.findall(r"^# TYPE (dynamo_\w+) ", exposition, re.MULTILINE))
    names = {n for n in names if not n.endswith("_created")}
    assert len(names) > 10
    missing = sorted(n for n in names if f"`{n}`" not in OPERATIONS)
    assert missing == [], "add these to the metrics table of docs/operations.md"


def test_operations_guide_rbac_table_is_what_the_chart_grants(tools: Tools) -> None:
    lines = OPERATIONS.splitlines()
    start = lines.index("| API group | resource | verbs | why |")
    documented = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        group, resources, verbs = (cell.strip() for cell in line.split("|")[1:4])
        group = "" if group == '""' else group
        for resource in resources.split(", "):
            for verb in verbs.split(", "):
                documented.add((group, resource, verb))
    (role,) = by_kind(render_operator(tools.helm, {}), "ClusterRole")
    assert documented == granted(role["rules"])


QUICK_START = README.split("## Quick start on Kubernetes", 1)


def test_readme_keeps_its_setup_commands_and_markers() -> None:
    assert "<!-- main-command -->" in README and "<!-- test-command -->" in README
    assert "dynamoctl local --nodes 3" in README
    assert len(QUICK_START) == 2, "README lacks the 'Quick start on Kubernetes' section"


@pytest.mark.parametrize(
    "needle", ["helm install", "kubectl -n kv apply", "kubectl -n kv scale dyc/demo", "get dyc"]
)
def test_kubernetes_quick_start_has_each_step(needle: str) -> None:
    assert needle in QUICK_START[1]


def test_kubernetes_quick_start_points_at_real_files() -> None:
    section = QUICK_START[1].split("\n## ", 2)
    text = section[0] + section[1] if len(section) > 1 else section[0]
    paths = set(re.findall(r"(?:charts|crds|examples|docs|node|operator|tests)/[\w./-]+", text))
    assert paths
    for path in paths:
        assert (ROOT / path.rstrip(".")).exists(), path


#: text files a user or a contributor reads (code docstrings and comments included)
_REFERENCE_SOURCES = ("*.md", "*.py", "*.yaml", "*.toml", "Dockerfile")
#: `docs/<name>.md`, `tests/<module>.py`: a path into this repository named in text
_REPO_PATH = re.compile(
    r"(?<![\w./-])((?:docs|node|operator|crds|charts|tests|bench|examples)/[\w./-]*\w)"
)


def _reference_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "__pycache__", "results"}
    found: list[Path] = []
    for pattern in _REFERENCE_SOURCES:
        for path in ROOT.rglob(pattern):
            if not skip.intersection(path.relative_to(ROOT).parts):
                found.append(path)
    return sorted(set(found))


def test_no_reference_points_outside_the_repository() -> None:
    """The design lives in docs/ here: nothing cites a document that is not shipped."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _reference_files()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if re.search(r"DESIGN(\.md| §)|\.\./shared/", line)
    ]
    assert offenders == []


def test_every_repository_path_named_in_docs_and_code_exists() -> None:
    missing = set()
    for path in _reference_files():
        for found in _REPO_PATH.findall(path.read_text(errors="replace")):
            ref = found.rstrip(".")
            if any(ch in ref for ch in "*{<") or (ROOT / ref).exists():
                continue
            if (ROOT / (ref.split(".", 1)[0] + ".py")).exists():  # module.attribute
                continue
            missing.add(f"{path.relative_to(ROOT)}: {ref}")
    assert sorted(missing) == []


def test_markdown_links_resolve() -> None:
    missing = []
    for doc in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert missing == []
