"""A disk that fills up, with real processes: one node's data directory lives on a small
loop-mounted filesystem, filled to ENOSPC during a burst of writes. The node's storage
fails visibly (readyz 503, a gauge, the status), the cluster keeps serving through the
other replicas (the failed node still coordinates), nothing acknowledged is lost, and
the node recovers on its own once space is freed (node.py, storage_rocks.py). If the
first thing to fail is a WAL fsync, the node exits instead (never retried,
durability.py) and recovers on restart.

Mounting needs root and loop devices (CI runs as root); where it is impossible the test
is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_node.store.durability import EXIT_FSYNC_FAILED
from tests.harness import Cluster, NodeProc, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

VALUE = b"x" * 1024


@contextlib.contextmanager
def small_filesystem(root: Path, size_mb: int = 48) -> Iterator[Path]:
    image, mount = root / "disk.img", root / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.skip("SKIPPED LOUDLY: needs root and mkfs.ext4 to loop-mount a small filesystem")
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount)], check=False, capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot loop-mount here: {mounted.stderr.decode()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def fill(path: Path) -> None:
    """Write a file until the filesystem is full."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(chunk)
            f.flush()
            os.fsync(f.fileno())


def gauge(c: Cluster, node: NodeProc, name: str) -> float:
    text = c.request(node, "GET", "/metrics")[2].decode()
    (line,) = [x for x in text.splitlines() if x.startswith(f"dynamo_{name} ")]
    return float(line.split()[1])


def test_a_full_disk_fails_one_node_visibly_and_loses_nothing(
    procs: Cluster, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path) as mount:
        (mount / "data").mkdir()
        (procs.root / "node2").symlink_to(mount / "data")
        nodes = procs.form(3, "--anti-entropy-interval", "0")
        n0, n1, n2 = nodes
        acked: list[str] = []
        for i in range(100):
            assert procs.put(n0, f"before-{i}", VALUE, query="?w=all")[0] == 204
            acked.append(f"before-{i}")
        filler = mount / "filler"
        fill(filler)
        # a burst through every node until n2's storage fails (its WAL and flushes
        # need space it no longer has)
        i = 0

        def burst_until_failed() -> bool:
            nonlocal i
            for _ in range(200):
                if not n2.alive():
                    return True
                key = f"burst-{i}"
                node = nodes[i % 3]
                i += 1
                try:
                    code = procs.put(node, key, VALUE, query="?timeout_ms=2000")[0]
                except OSError:  # n2 just exited: not acknowledged
                    continue
                if code == 204:
                    acked.append(key)
            try:
                return procs.request(n2, "GET", "/readyz")[0] == 503
            except OSError:
                return not n2.alive()

        wait_for(burst_until_failed, 120, interval=0, what="n2's storage to fail")
        if n2.alive():
            # a write RocksDB refused: the node stays up, visibly failed, and still
            # coordinates: writes through it succeed (W=2 from n0 and n1) and reads
            # through it find every acknowledged key
            assert procs.status(n2)["storage_failure"], procs.status(n2)
            assert gauge(procs, n2, "storage_failed") == 1
            coordinators = nodes
        else:
            # the WAL fsync failed: never retried, the process ended (Kubernetes would
            # restart it); nothing it had not fsynced was acknowledged in its name
            assert n2.proc is not None and n2.proc.returncode == EXIT_FSYNC_FAILED, n2.log()[-2000:]
            assert "WAL fsync failed" in n2.log()
            coordinators = [n0, n1]
        for j in range(60):
            key = f"during-{j}"
            code = procs.put(
                coordinators[j % len(coordinators)], key, VALUE, query="?timeout_ms=3000"
            )[0]
            assert code == 204, (key, code)
            acked.append(key)
        for j, key in enumerate(acked[::10]):
            code, _, body = procs.get(coordinators[j % len(coordinators)], key, "?timeout_ms=3000")
            assert (code, body) == (200, VALUE), (key, code)
        # space freed: the node reopens its storage by itself (or, if it had exited, its
        # restart replays the WAL) and is ready again
        filler.unlink()
        if not n2.alive():
            procs.start(n2)
        wait_for(
            lambda: procs.request(n2, "GET", "/readyz")[0] == 200,
            60,
            interval=0.5,
            what="n2 to recover after space was freed",
        )
        assert gauge(procs, n2, "storage_failed") == 0
        procs.wait_converged(nodes)
        job = procs.anti_entropy(n2)
        assert job["state"] == "done", job
        lost = [k for k in acked if procs.get(n1, k, "?r=all")[:3:2] != (200, VALUE)]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
        procs.shutdown()


def test_a_restart_on_a_full_disk_needs_no_free_space(procs: Cluster, tmp_path: Path) -> None:
    """A node stopped with a large un-flushed WAL on a full disk starts again without
    any space freed and serves its data (storage_rocks.py: the WAL is replayed into the
    memtable, not written out as a table; a ballast covers the open's small files)."""
    with small_filesystem(tmp_path) as mount:
        (mount / "data").mkdir()
        (procs.root / "node0").symlink_to(mount / "data")
        node = procs.add_node("--n", "1", "--r", "1", "--w", "1", "--durability", "sync")
        # leave ~12 MiB, then fill it with writes (the WAL; the 64 MiB memtable never
        # flushes) until one fails or the process exits on a failed WAL fsync
        pad = mount / "pad"
        with open(pad, "wb") as f:
            f.truncate(0)
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        with open(pad, "wb") as f:
            f.write(b"\0" * max(0, free - 12 * 1024 * 1024))
            os.fsync(f.fileno())
        value = os.urandom(64 * 1024)
        acked: list[str] = []
        for i in range(1000):
            try:
                code = procs.put(node, f"big-{i}", value, query="?timeout_ms=2000")[0]
            except OSError:
                break
            if code != 204:
                break
            acked.append(f"big-{i}")
        else:
            raise AssertionError("the disk never filled")
        assert len(acked) > 50, len(acked)
        fill(mount / "filler")  # whatever is left, too: nothing free
        procs.kill(node)
        wals = sum(p.stat().st_size for p in (mount / "data").glob("*.log"))
        assert wals > 8 * 1024 * 1024, wals
        procs.start(node)  # no space freed
        assert "released the 1024 KiB ballast" in node.log()
        for key in acked:
            code, _, body = procs.get(node, key)
            assert (code, body) == (200, value), (key, code)
        assert not list((mount / "data").glob("*.sst"))
        procs.shutdown()
