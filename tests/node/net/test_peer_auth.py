"""The node-to-node (peer) port against real nodes: which token configurations a node
starts with, what a raw connection can do with no, an empty, a wrong or the right
token, and what an unauthenticated connection may cost the node (frame size, hello
deadline, how many may wait for their hello)."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from dynamo_node.core.errors import DynamoError
from dynamo_node.main import build_config, parse_args
from dynamo_node.store.storage import storage_key
from tests.harness import Cluster, NodeProc, cluster, free_port, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

CLIENT, ADMIN = "client-secret-1", "cluster-secret-2"
MIB = 1024 * 1024
SINGLE = ("--n", "1", "--r", "1", "--w", "1")
#: a refused connection must be closed within this (it is closed at once)
CLOSE_WITHIN_S = 5.0


def _frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def _hello(token: str) -> bytes:
    return _frame([0, "hello", [token, "intruder"]])


def _get(key: str) -> bytes:
    return _frame([1, "get", [storage_key(key)]])


def _put(key: str, value: bytes) -> bytes:
    return _frame([2, "put", [storage_key(key), [], False, value, "text/plain", None]])


def _connect(node: NodeProc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port + 10000), timeout=5)


def _exchange(node: NodeProc, payload: bytes, replies: int) -> tuple[list[Any], bool]:
    """Send `payload` in one write on a new peer connection; read until `replies` frames
    came back or the connection closed: (the frames, whether it was closed)."""
    frames: list[Any] = []
    buf = b""
    deadline = time.monotonic() + CLOSE_WITHIN_S
    with _connect(node) as s:
        s.sendall(payload)
        while len(frames) < replies:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                return frames, True
            except TimeoutError:
                return frames, False
            if not data:
                return frames, True
            buf += data
            while len(buf) >= 4:
                (size,) = struct.unpack_from(">I", buf)
                if len(buf) < 4 + size:
                    break
                frames.append(msgpack.unpackb(buf[4 : 4 + size], raw=False))
                buf = buf[4 + size :]
    return frames, False


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closes `s` within `seconds` (what it sends first is ignored)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not s.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def _refused_total(node: NodeProc) -> float:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^dynamo_peer_connections_refused_total ([0-9.e+]+)$", text, re.M)
    assert match, "the metric is exposed"
    return float(match.group(1))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DYNAMO_")}


@pytest.fixture(autouse=True)
def _no_inherited_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DYNAMO_CLIENT_TOKEN", "DYNAMO_CLUSTER_TOKEN"):
        monkeypatch.delenv(name, raising=False)


# --- which token configurations start -----------------------------------------------
def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run dynamo-node expecting it to refuse to start: (exit status, stderr)."""
    cmd = [sys.executable, "-m", "dynamo_node", "--data-dir", str(tmp_path / "data")]
    cmd += ["--port", str(free_port()), *args]
    try:
        done = subprocess.run(
            cmd, check=False, env={**_clean_env(), **(env or {})}, capture_output=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the node started (it should have refused to)") from None
    return done.returncode, done.stderr.decode(errors="replace")


def test_a_client_token_without_a_cluster_token_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "client.token").write_text(CLIENT)
    for args, env in (
        ((), {"DYNAMO_CLIENT_TOKEN": CLIENT}),
        (("--client-token-file", str(tmp_path / "client.token")), {}),
    ):
        code, err = _start(tmp_path, *args, env=env)
        assert code == 2, err
        assert "no cluster token" in err
        assert "--cluster-token-file" in err and "DYNAMO_CLUSTER_TOKEN" in err


def test_empty_or_blank_tokens_refuse_to_start(tmp_path: Path) -> None:
    empty, blank = tmp_path / "empty", tmp_path / "blank"
    empty.write_text("")
    blank.write_text("  \n\t\n")
    cases: list[tuple[tuple[str, ...], dict[str, str], str]] = [
        (("--client-token-file", str(empty), "--cluster-token-file", str(empty)), {}, "empty"),
        (("--cluster-token-file", str(blank)), {}, "empty"),
        (("--cluster-token-file", str(empty)), {"DYNAMO_CLUSTER_TOKEN": ADMIN}, "empty"),
        ((), {"DYNAMO_CLUSTER_TOKEN": "   "}, "whitespace"),
        ((), {"DYNAMO_CLIENT_TOKEN": " \t", "DYNAMO_CLUSTER_TOKEN": ADMIN}, "whitespace"),
    ]
    for args, env, word in cases:
        code, err = _start(tmp_path, *args, env=env)
        assert code == 2, (args, env, err)
        assert word in err, (args, env, err)


def test_build_config_token_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["--data-dir", str(tmp_path / "d"), "--port", "7070"]
    (tmp_path / "cluster.token").write_text(f"{ADMIN}\n")
    config = build_config(
        parse_args([*base, "--cluster-token-file", str(tmp_path / "cluster.token")])
    )
    assert config.cluster_token == ADMIN and config.client_token == ""
    monkeypatch.setenv("DYNAMO_CLIENT_TOKEN", CLIENT)
    with pytest.raises(DynamoError, match="no cluster token"):
        build_config(parse_args(base))
    monkeypatch.setenv("DYNAMO_CLUSTER_TOKEN", ADMIN)
    config = build_config(parse_args(base))
    assert (config.client_token, config.cluster_token) == (CLIENT, ADMIN)
    monkeypatch.delenv("DYNAMO_CLIENT_TOKEN")
    monkeypatch.delenv("DYNAMO_CLUSTER_TOKEN")
    monkeypatch.setenv("DYNAMO_CLUSTER_TOKEN", "")  # empty: not set, auth off
    assert build_config(parse_args(base)).cluster_token == ""
    settings = tmp_path / "settings.json"
    for content, word in (
        ({"client_token": CLIENT}, "no cluster token"),
        ({"cluster_token": " "}, "whitespace"),
    ):
        settings.write_text(json.dumps(content))
        with pytest.raises(DynamoError, match=word):
            build_config(parse_args([*base, "--config", str(settings)]))


# --- what a raw peer connection can do, per token configuration ---------------------
@pytest.fixture(params=["none", "cluster", "both"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cluster, NodeProc, str]]:
    mode = str(request.param)
    env: dict[str, str] = {}
    args: list[str] = list(SINGLE)
    if mode == "cluster":  # from a file
        (tmp_path / "cluster.token").write_text(f"{ADMIN}\n")
        args += ["--cluster-token-file", str(tmp_path / "cluster.token")]
    elif mode == "both":  # from the environment
        env = {"DYNAMO_CLIENT_TOKEN": CLIENT, "DYNAMO_CLUSTER_TOKEN": ADMIN}
    client = {"none": "", "cluster": ADMIN, "both": CLIENT}[mode]
    with cluster(tmp_path, token=client, env=env) as c:
        n0 = c.add_node(*args)
        assert c.put(n0, "stored", b"stored-value")[0] == 204
        yield c, n0, mode


def _served(c: Cluster, n0: NodeProc, payload: bytes, planted: str) -> bool:
    """Send hello(s) + a get of a stored key + a put of `planted` in one write: whether
    the node answered them; asserts it is all or nothing (the reply, the planted value)."""
    frames, closed = _exchange(n0, payload, replies=3)
    visible = c.get(n0, planted)
    if not frames:
        assert closed, "a refused connection is closed"
        assert visible[0] == 404, f"{planted} was planted without a valid hello"
        return False
    assert not closed
    (hello, got, put) = frames
    assert hello[1:] == [0, ["ok", ["batch"]]]
    assert got[1] == 0 and b"stored-value" in got[2]
    assert put[1] == 0
    assert visible[0] == 200 and visible[2] == b"planted", visible
    return True


def test_what_a_raw_peer_connection_can_do(node: tuple[Cluster, NodeProc, str]) -> None:
    c, n0, mode = node
    calls = _get("stored")
    before = _refused_total(n0)
    # no hello at all: the first frame must be the hello, tokens or not
    assert not _served(c, n0, calls + _put("p-none", b"planted"), "p-none")
    # a bad hello and then a good one in the same write: nothing after the bad one runs
    assert not _served(
        c,
        n0,
        _frame([0, "hello", [1, 2]]) + _hello(ADMIN) + calls + _put("p-bad", b"planted"),
        "p-bad",
    )
    if mode == "none":  # auth off: any token says hello
        for i, token in enumerate(["", "wrong", ADMIN]):
            assert _served(c, n0, _hello(token) + calls + _put(f"p{i}", b"planted"), f"p{i}")
        assert _refused_total(n0) == before + 2
        return
    for i, token in enumerate(["", "wrong", CLIENT, " " + ADMIN]):
        payload = _hello(token) + _hello(ADMIN) + calls + _put(f"p{i}", b"planted")
        assert not _served(c, n0, payload, f"p{i}"), f"hello with {token!r} was accepted"
    assert _refused_total(n0) == before + 6
    assert _served(c, n0, _hello(ADMIN) + calls + _put("p-ok", b"planted"), "p-ok")


# --- what an unauthenticated connection may cost ------------------------------------
@pytest.mark.parametrize("mode", ["none", "cluster"])
def test_an_oversize_first_frame_is_refused_before_it_is_buffered(
    tmp_path: Path, mode: str
) -> None:
    env = {"DYNAMO_CLUSTER_TOKEN": ADMIN} if mode == "cluster" else {}
    with cluster(tmp_path, token=env.get("DYNAMO_CLUSTER_TOKEN", ""), env=env) as c:
        n0 = c.add_node(*SINGLE)
        before = _refused_total(n0)
        rss = _rss_kib(n0.pid)
        chunk = b"\0" * MIB
        socks = [_connect(n0) for _ in range(4)]
        try:
            for s in socks:
                s.settimeout(10)
                try:
                    s.sendall(struct.pack(">I", 60 * MIB))
                    for _ in range(8):
                        s.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed already: what should happen
            grown = (_rss_kib(n0.pid) - rss) // 1024
            assert grown <= 6, f"the node's RSS grew by {grown} MiB"
            assert all(_closed_within(s, CLOSE_WITHIN_S) for s in socks)
        finally:
            for s in socks:
                s.close()
        assert _refused_total(n0) == before + 4
        # a well-formed hello still gets in
        assert _exchange(n0, _hello(ADMIN), replies=1) == ([[0, 0, ["ok", ["batch"]]]], False)


def _config(tmp_path: Path, **settings: Any) -> tuple[str, str]:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    return "--config", str(path)


def test_the_hello_must_come_within_the_deadline(tmp_path: Path) -> None:
    env = {"DYNAMO_CLUSTER_TOKEN": ADMIN}
    with cluster(tmp_path, token=ADMIN, env=env) as c:
        n0 = c.add_node(*SINGLE, *_config(tmp_path, peer_hello_timeout_s=1.0))
        before = _refused_total(n0)
        silent = _connect(n0)
        partial = _connect(n0)  # a slow hello: its first bytes, then nothing
        try:
            partial.sendall(_hello(ADMIN)[:6])
            assert _closed_within(silent, 1.0 + CLOSE_WITHIN_S)
            assert _closed_within(partial, CLOSE_WITHIN_S)
        finally:
            silent.close()
            partial.close()
        wait_for(lambda: _refused_total(n0) == before + 2, 10, what="refusals counted")
        # a hello in time is served, and stays connected past the deadline
        with _connect(n0) as s:
            s.sendall(_hello(ADMIN))
            assert not _closed_within(s, 2.0)
            s.sendall(_get("absent"))
            s.settimeout(5)
            assert s.recv(65536)  # the get's answer: still served


def test_at_most_so_many_connections_wait_for_their_hello(tmp_path: Path) -> None:
    env = {"DYNAMO_CLUSTER_TOKEN": ADMIN}
    settings = _config(tmp_path, peer_max_unauthenticated=4, peer_hello_timeout_s=60.0)
    with cluster(tmp_path, token=ADMIN, env=env) as c:
        n0, n1 = c.form(2, *settings)
        before = _refused_total(n0)
        waiting = [_connect(n0) for _ in range(4)]
        extra: list[socket.socket] = []
        try:
            for s in waiting:
                assert not _closed_within(s, 0.3), "within the limit: kept"
            extra = [_connect(n0) for _ in range(3)]
            for s in extra:
                assert _closed_within(s, CLOSE_WITHIN_S), "beyond the limit: closed at once"
            assert _refused_total(n0) == before + 3
        finally:
            for s in waiting + extra:
                s.close()

        # once they are gone a real peer connects again: n1, restarted, writes through n0
        c.restart(n1)

        def written() -> bool:
            return c.put(n1, "after", b"v", query="?w=2")[0] == 204

        wait_for(written, 30, what="a write acknowledged by both nodes")
        assert c.get(n0, "after", query="?r=1")[2] == b"v"
        assert _refused_total(n0) == before + 3
