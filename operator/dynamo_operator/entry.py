"""`dynamo-operator`: the operator's main, once the `operator` extra is known to be there
(one line naming the install command instead of an ImportError traceback)."""

from __future__ import annotations

import importlib.util
import sys

#: modules only the `operator` extra installs
OPERATOR_MODULES = ("kopf", "kubernetes", "aiohttp")
EXIT_USAGE = 2


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed installation
        return False


def main() -> None:
    absent = [m for m in OPERATOR_MODULES if not _findable(m)]
    if absent:
        print(
            f"dynamo-operator: needs the 'operator' extra ({', '.join(absent)} not "
            "installed): pip install 'dynamokv[operator]'",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
    from .main import main as run

    run()
