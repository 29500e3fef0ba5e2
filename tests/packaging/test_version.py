"""The version lives in one place, `dynamo_node.__version__`; the distribution reads it
from there (hatch's dynamic version) and the operator derives its default image from it.
Files that cannot import Python (charts, Dockerfiles, manifests, README) hold copies:
this test finds each copy and fails when one drifts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from dynamo_node import __version__
from dynamo_operator.spec import DEFAULT_IMAGE

ROOT = Path(__file__).resolve().parents[2]


def test_the_distribution_reads_the_version_from_the_package() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"]
    assert meta["project"]["dynamic"] == ["version"]
    assert meta["tool"]["hatch"]["version"]["path"] == "node/dynamo_node/__init__.py"


def test_the_operator_default_image_is_this_version() -> None:
    image, tag = DEFAULT_IMAGE.rsplit(":", 1)
    assert (image, tag) == ("dynamokv/node", __version__)


@pytest.mark.parametrize("chart", ["dynamokv-operator", "dynamokv-cluster"])
def test_charts_carry_this_version(chart: str) -> None:
    meta = yaml.safe_load((ROOT / "charts" / chart / "Chart.yaml").read_text())
    assert str(meta["version"]) == __version__
    assert str(meta["appVersion"]) == __version__


@pytest.mark.parametrize("dockerfile", ["node/Dockerfile", "operator/Dockerfile"])
def test_dockerfiles_default_to_this_version(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert re.findall(r"^ARG VERSION=(\S+)$", text, re.M) == [__version__]


def test_every_image_tag_in_manifests_and_docs_is_this_version() -> None:
    files = [
        ROOT / "README.md",
        ROOT / "crds" / "dynamoclusters.yaml",
        ROOT / "charts" / "dynamokv-operator" / "files" / "dynamoclusters.yaml",
        ROOT / "examples" / "operator-install.yaml",
        *sorted((ROOT / "crds" / "examples").glob("*.yaml")),
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "charts").glob("*/values.yaml")),
    ]
    seen = 0
    for path in files:
        for tag in re.findall(r"dynamokv/(?:node|operator):([0-9][\w.+-]*)", path.read_text()):
            seen += 1
            assert tag == __version__, f"{path.relative_to(ROOT)}: image tag {tag}"
    assert seen > 0
