"""A throwaway CA and a node certificate for 127.0.0.1 (openssl), for TLS tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_certs(root: Path) -> tuple[Path, Path, Path]:
    """(node.pem, node.key, ca.pem) under `root`; the node certificate is valid for
    IP 127.0.0.1 and DNS localhost, signed by the CA."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=root)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dynamokv-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
    )
    (root / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "node.pem",
    )
    return root / "node.pem", root / "node.key", root / "ca.pem"
