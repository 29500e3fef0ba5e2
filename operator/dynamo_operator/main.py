"""`dynamo-operator`: run the DynamoCluster operator (Kopf) until SIGTERM/SIGINT.

    dynamo-operator [--namespace NS]... | --all-namespaces
                    [--liveness URL | --no-liveness] [--interval SECONDS]
                    [--standalone] [--log-level LEVEL]

Without `--namespace` or `--all-namespaces` it serves the namespace it runs in (the
service account's), else `default`. The handlers are imported only after the flags are
parsed: the default configuration is read when they import.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

import kopf

from .config import INTERVAL_ENV, SCANNING_ENV

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
HANDLERS_MODULE = "dynamo_operator.handlers"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="dynamo-operator", description="Run the dynamokv DynamoCluster operator."
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve DynamoClusters of this namespace (repeatable; globs allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    probe = p.add_mutually_exclusive_group()
    probe.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        metavar="URL",
        help=f"Kopf's liveness endpoint (default {DEFAULT_LIVENESS})",
    )
    probe.add_argument(
        "--no-liveness",
        dest="liveness",
        action="store_const",
        const=None,
        help="serve no liveness endpoint",
    )
    p.add_argument(
        "--interval",
        type=float,
        help=f"seconds between two observations of a cluster (default: ${INTERVAL_ENV} or 5)",
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        help="do not coordinate with other operator replicas (Kopf peering)",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("DYNAMO_OPERATOR_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR",
    )
    args = p.parse_args(argv)
    if args.interval is not None and args.interval <= 0:
        p.error("--interval must be positive")
    return args


def default_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.interval is not None:
        os.environ[INTERVAL_ENV] = str(args.interval)
    importlib.import_module(HANDLERS_MODULE)  # registers the handlers
    namespaces = [] if args.all_namespaces else (args.namespace or [default_namespace()])
    if not args.all_namespaces:
        # exact namespaces: Kopf need not scan namespaces or CRDs (and lacks the RBAC to)
        os.environ[SCANNING_ENV] = "off"
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        standalone=args.standalone or None,
    )
