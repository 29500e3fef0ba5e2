"""Which optional parts of the distribution are installed.

`pip install dynamokv` is the client library and `dynamoctl` (standard library only);
running a node (`dynamo-node`, `dynamoctl local`) needs the `node` extra. The
`dynamo-node` entry point comes here first, so a missing extra is one line naming the
command that installs it, not an ImportError traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

#: modules the node imports that only the `node` extra installs
NODE_MODULES = ("aiohttp", "rocksdict", "msgpack", "prometheus_client")
#: exit code of a usage error (as `dynamo-node` and `dynamoctl` document)
EXIT_USAGE = 2


def missing(modules: Sequence[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here."""
    return [m for m in modules if not _findable(m)]


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed installation
        return False


def node_missing_message() -> str | None:
    """Why a node cannot run in this environment, or None when it can."""
    absent = missing(NODE_MODULES)
    if not absent:
        return None
    return (
        f"running a node needs the 'node' extra ({', '.join(absent)} not installed): "
        "pip install 'dynamokv[node]'"
    )


def node_main() -> None:
    """`dynamo-node`: the node's main, once its dependencies are known to be there."""
    problem = node_missing_message()
    if problem:
        print(f"dynamo-node: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    from dynamo_node.main import main

    main()
