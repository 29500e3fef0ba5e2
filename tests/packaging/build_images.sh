#!/usr/bin/env bash
# Build node/Dockerfile and operator/Dockerfile without a Docker engine (buildah,
# --isolation chroot, vfs storage) and smoke-test the images.
#
# Where no container registry is reachable (as in this project's CI), the base image
# cannot be pulled, so a stand-in is made from a local root filesystem: Debian bookworm
# (minbase) with its python3.11 and venv, built by debootstrap from the Debian archive.
# The Dockerfiles take it through their PYTHON_IMAGE build argument; with a registry,
# set PYTHON_IMAGE=python:3.11.14-slim-trixie (their default) to build the real thing.
#
#   bash tests/packaging/build_images.sh          # as root: installs buildah, debootstrap
#
# Everything it stores lives under .tools/ (gitignored): the rootfs, buildah's storage.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
TOOLS="$PWD/.tools"
ROOTFS="$TOOLS/rootfs-bookworm-python3.11"
BASE_CONTEXT="$TOOLS/base-image"
BASE_IMAGE="localhost/dynamokv-build/python:3.11-bookworm"
STORAGE=(--storage-driver vfs --root "$TOOLS/containers/storage" --runroot "$TOOLS/containers/run")
PYTHON_IMAGE="${PYTHON_IMAGE:-$BASE_IMAGE}"

need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

need buildah
if [ "$PYTHON_IMAGE" = "$BASE_IMAGE" ]; then
    need debootstrap
    if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
        echo "== debootstrap bookworm with python3.11 into $ROOTFS"
        rm -rf "$ROOTFS.partial"
        debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
            bookworm "$ROOTFS.partial" >"$TOOLS/debootstrap.log" 2>&1 \
            || { tail -20 "$TOOLS/debootstrap.log"; exit 1; }
        mv "$ROOTFS.partial" "$ROOTFS"
    fi
    # Trust what this machine trusts (pip in the build reaches the package index through
    # the same network, TLS-intercepting proxy included).
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    fi
    echo "== base image $BASE_IMAGE"
    mkdir -p "$BASE_CONTEXT"
    tar -C "$ROOTFS" --numeric-owner -cf "$BASE_CONTEXT/rootfs.tar" .
    cat >"$BASE_CONTEXT/Containerfile" <<'CONTAINERFILE'
FROM scratch
ADD rootfs.tar /
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
CONTAINERFILE
    buildah "${STORAGE[@]}" bud --quiet --isolation chroot -t "$BASE_IMAGE" \
        -f "$BASE_CONTEXT/Containerfile" "$BASE_CONTEXT" >/dev/null
fi

for component in node operator; do
    image="localhost/dynamokv/$component:$VERSION"
    echo "== build $image (FROM $PYTHON_IMAGE)"
    buildah "${STORAGE[@]}" bud --quiet --isolation chroot --layers=false \
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "VERSION=$VERSION" \
        --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "$image" -f "$component/Dockerfile" . >/dev/null
    container="$(buildah "${STORAGE[@]}" from "$image")"
    trap 'buildah "${STORAGE[@]}" rm "$container" >/dev/null 2>&1 || true' EXIT
    user="$(buildah "${STORAGE[@]}" run --isolation chroot "$container" -- id -u)"
    [ "$user" = 10001 ] || { echo "$image runs as uid $user, not 10001" >&2; exit 1; }
    buildah "${STORAGE[@]}" run --isolation chroot "$container" -- "dynamo-$component" --help \
        >/dev/null
    buildah "${STORAGE[@]}" inspect --format \
        'user {{.OCIv1.Config.User}}, stop signal {{.OCIv1.Config.StopSignal}}, entrypoint {{.OCIv1.Config.Entrypoint}}{{"\n"}}' "$image"
    buildah "${STORAGE[@]}" rm "$container" >/dev/null
    trap - EXIT
done
buildah "${STORAGE[@]}" rmi --prune >/dev/null 2>&1 || true  # images of earlier runs
buildah "${STORAGE[@]}" images
