"""The distribution's parts: the client and `dynamoctl` need no server or operator
dependency (`pip install dynamokv`), the node and the operator are extras, and a missing
extra is one line naming the install command."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from dynamo_node import extras
from tests.harness import cluster

ROOT = Path(__file__).resolve().parents[2]
META = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

#: run in a fresh interpreter in which the server packages cannot be imported
_BLOCKED_RUN = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {{name}}")
        return None
sys.meta_path.insert(0, Blocker())
{body}
"""
_MODULES = ["aiohttp", "rocksdict", "msgpack", "prometheus_client", "uvloop", "kopf", "kubernetes"]


def _blocked(body: str) -> subprocess.CompletedProcess[str]:
    code = _BLOCKED_RUN.format(blocked=_MODULES, body=textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_the_base_distribution_has_no_server_dependency() -> None:
    assert META["dependencies"] == []
    extras_ = META["optional-dependencies"]
    assert {"node", "operator", "test"} <= set(extras_)
    node = " ".join(extras_["node"])
    for name in ("aiohttp", "rocksdict", "msgpack", "prometheus-client", "uvloop"):
        assert name in node
    operator = " ".join(extras_["operator"])
    for name in ("kopf", "kubernetes", "aiohttp"):
        assert name in operator
    assert "dynamokv[node,operator]" in extras_["test"]


def test_entry_points_check_their_extra_first() -> None:
    scripts = META["scripts"]
    assert scripts["dynamo-node"] == "dynamo_node.extras:node_main"
    assert scripts["dynamo-operator"] == "dynamo_operator.entry:main"
    assert scripts["dynamoctl"] == "dynamo_node.cli:main"


def test_client_and_dynamoctl_work_without_any_server_package(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        node = c.add_node()
        result = _blocked(
            f"""
            from dynamo_node.client import DynamoClient
            with DynamoClient({node.address!r}) as client:
                client.put("k", "v")
                print(client.get("k").value.decode())
            from dynamo_node import cli
            sys.exit(cli.main(["--node", {node.address!r}, "get", "k"]))
            """
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["v", "v"]
    assert "blocked" not in result.stderr


def test_a_missing_node_extra_is_one_line_with_the_install_command() -> None:
    result = _blocked(
        """
        from dynamo_node.extras import node_main
        node_main()
        """
    )
    assert result.returncode == extras.EXIT_USAGE
    assert "Traceback" not in result.stderr
    assert "pip install 'dynamokv[node]'" in result.stderr
    result = _blocked(
        """
        from dynamo_node import cli
        sys.exit(cli.main(["local", "--nodes", "1", "--data-dir", "/nonexistent/x"]))
        """
    )
    assert result.returncode == extras.EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install 'dynamokv[node]'" in result.stderr


def test_a_missing_operator_extra_is_one_line_with_the_install_command() -> None:
    result = _blocked(
        """
        from dynamo_operator.entry import main
        main()
        """
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "pip install 'dynamokv[operator]'" in result.stderr


@pytest.mark.parametrize("present", [True, False])
def test_missing_names_what_cannot_be_imported(present: bool) -> None:
    name = "json" if present else "no_such_module_for_dynamokv"
    assert extras.missing([name]) == ([] if present else [name])
