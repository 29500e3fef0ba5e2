"""Tests for dynamo_node.cli (dynamoctl): in-process through `main([...])`, and through
the installed executable, against real `dynamo-node` processes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_node import cli
from dynamo_node.client import MAYBE_APPLIED, DynamoClient
from tests.certs import make_certs
from tests.harness import Cluster, NodeProc, cluster, free_port, wait_for
from tests.node.test_client import Answer, FakeNode, Seen, dynamo_error, kv_node

JSON = "application/json"
RUN_TIMEOUT_S = 30


def run(node: NodeProc | str, *args: str) -> int:
    address = node if isinstance(node, str) else node.address
    return cli.main(["--node", address, *args])


def dynamoctl() -> list[str]:
    found = shutil.which("dynamoctl") or shutil.which(
        "dynamoctl", path=os.path.dirname(sys.executable)
    )
    return [found] if found else [sys.executable, "-m", "dynamo_node.cli"]


# --- pure ---------------------------------------------------------------------------------------
def test_progress_bar() -> None:
    assert cli.progress_bar(0, 4, width=4) == "[----]   0%"
    assert cli.progress_bar(1, 2, width=4) == "[##--]  50%"
    assert cli.progress_bar(9, 4, width=4) == "[####] 100%"
    assert cli.progress_bar(0, 0, width=4) == "[----]  --%"


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in range(cli.EXIT_OTHER + 1):
        assert re.search(rf"^\s+{code}\s+\w", out, re.MULTILINE), code
    assert "put" in out and "commit" in out and "local" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_USAGE
    assert cli.main(["get"]) == cli.EXIT_USAGE
    assert cli.main(["frobnicate"]) == cli.EXIT_USAGE
    assert cli.main(["--node", "not a node:x", "status"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "dynamoctl: node must be HOST:PORT" in err


def test_unreachable_node_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert run(address, "get", "k") == cli.EXIT_UNAVAILABLE
    assert run(address, "status") == cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("dynamoctl: cannot reach node")
    assert "Traceback" not in err


def test_render_plan_shows_moves() -> None:
    answer = {
        "ring_version": 1,
        "staged": True,
        "plan": {
            "joins": ["n1"],
            "leaves": [],
            "ring_version": 2,
            "ownership": {"n0": 2, "n1": 2},
            "transfers": [{"partition": 2, "from": "n0", "to": "n1"}] * 2,
            "partitions_received": {"n1": 2},
        },
    }
    text = cli.render_plan(answer, {"n0": 4})
    assert "ring version 1 -> 2" in text
    assert re.search(r"join\s+n1", text)
    assert re.search(r"n0\s+4\s+2", text) and re.search(r"n1\s+0\s+2", text)
    assert "transfers: 2" in text and "to n1: 2" in text


# --- key-value against a node ------------------------------------------------------------------
@pytest.mark.cluster
def test_put_get_round_trip(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    assert run(node, "put", "greeting", "hello world", "--content-type", "text/plain") == 0
    context = capsys.readouterr().out.strip()
    assert context
    assert run(node, "get", "greeting", "-v") == 0
    captured = capsys.readouterr()
    assert captured.out == "hello world"  # raw bytes, no newline added when piped
    assert captured.err.strip() == f"context: {context}"
    with DynamoClient(node.address) as client:
        assert client.get("greeting").content_type == "text/plain"

    assert run(node, "get", "greeting", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {
        "key": "greeting",
        "context": context,
        "siblings": [
            {"content_type": "text/plain", "value_b64": base64.b64encode(b"hello world").decode()}
        ],
    }


@pytest.mark.cluster
def test_binary_value_from_file(
    procs: Cluster, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    node = procs.add_node()
    payload = bytes(range(256))
    (tmp_path / "blob").write_bytes(payload)
    assert run(node, "put", "blob", "--file", str(tmp_path / "blob")) == 0
    capsysbinary.readouterr()
    assert run(node, "get", "blob") == 0
    assert capsysbinary.readouterr().out == payload
    assert run(node, "put", "blob", "--file", str(tmp_path / "missing")) == cli.EXIT_USAGE
    assert run(node, "put", "blob", "v", "--file", str(tmp_path / "blob")) == cli.EXIT_USAGE
    assert b"not both" in capsysbinary.readouterr().err


@pytest.mark.cluster
def test_awkward_keys(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    keys = ["a/b/c", "with space", "ünïcödé/ключ", "50%off"]
    for i, key in enumerate(keys):
        assert run(node, "put", key, f"v{i}") == 0
    capsys.readouterr()
    for i, key in enumerate(keys):
        assert run(node, "get", key) == 0
        assert capsys.readouterr().out == f"v{i}"


@pytest.mark.cluster
def test_siblings_exit_3_and_put_with_context_resolves(
    procs: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    node = procs.add_node()
    assert run(node, "put", "my cart", '["milk"]', "--content-type", JSON) == 0
    assert run(node, "put", "my cart", "\x00\x01") == 0
    capsys.readouterr()

    assert run(node, "get", "my cart") == cli.EXIT_SIBLINGS
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    match = re.fullmatch(
        r"my cart has 2 siblings \(resolve with: dynamoctl put 'my cart' VALUE --context (\S+)\)",
        header,
    )
    assert match, header
    context = match.group(1)
    assert f"[1] {JSON} (8 bytes, text)" in out and '    ["milk"]' in out
    assert "[2] application/octet-stream (2 bytes, base64)" in out and "    AAE=" in out
    assert out.rstrip().endswith(f"context: {context}")

    assert run(node, "get", "my cart", "--json") == cli.EXIT_SIBLINGS
    listing = json.loads(capsys.readouterr().out)
    assert listing["context"] == context and len(listing["siblings"]) == 2

    assert run(node, "put", "my cart", '["milk","tea"]', "--context", context) == 0
    capsys.readouterr()
    assert run(node, "get", "my cart") == 0
    assert capsys.readouterr().out == '["milk","tea"]'


@pytest.mark.cluster
def test_delete_then_get_exits_1(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    assert run(node, "put", "k", "a") == 0
    assert run(node, "put", "k", "b") == 0  # siblings: delete removes both
    assert run(node, "delete", "k") == 0
    capsys.readouterr()
    assert run(node, "get", "k") == cli.EXIT_NOT_FOUND
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == "dynamoctl: 'k' not found"
    assert run(node, "delete", "k") == cli.EXIT_NOT_FOUND
    assert run(node, "get", "never", "--json") == cli.EXIT_NOT_FOUND
    assert json.loads(capsys.readouterr().out)["siblings"] == []

    # with an explicit context, delete supersedes exactly those versions
    assert run(node, "put", "j", "x") == 0
    context = capsys.readouterr().out.strip()
    assert run(node, "delete", "j", "--context", context) == 0
    assert run(node, "get", "j") == cli.EXIT_NOT_FOUND


@pytest.mark.cluster
def test_bad_requests_and_quorums(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    assert run(node, "put", "k", "v", "--context", "garbage") == cli.EXIT_USAGE
    assert run(node, "get", "k", "--r", "seven") == cli.EXIT_USAGE
    assert run(node, "put", "k") == cli.EXIT_USAGE  # no value given
    err = capsys.readouterr().err
    assert "dynamoctl: context" in err and "r must be" in err and "Traceback" not in err
    # one node, N=3: every replica cannot answer
    assert run(node, "get", "k", "--r", "all") == cli.EXIT_UNAVAILABLE
    assert "quorum not met" in capsys.readouterr().err
    # nothing staged: a conflict
    assert run(node, "commit") == cli.EXIT_OTHER
    assert run(node, "leave", "ghost") == cli.EXIT_NOT_FOUND


@pytest.mark.cluster
def test_auth_exit_5_and_token_from_env(
    procs: Cluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "cluster.token").write_text("s3cret")
    node = procs.add_node("--cluster-token-file", str(tmp_path / "cluster.token"))
    assert run(node, "status") == cli.EXIT_AUTH
    assert run(node, "--token", "wrong", "status") == cli.EXIT_AUTH
    monkeypatch.setenv("DYNAMO_TOKEN", "s3cret")
    monkeypatch.setenv("DYNAMO_NODE", node.address)
    capsys.readouterr()
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["node"] == node.node_id


# --- admin ----------------------------------------------------------------------------------
@pytest.mark.cluster
def test_status_ring_plan_single_node(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    assert run(node, "status") == 0
    out = capsys.readouterr().out
    assert re.search(rf"^node\s+{node.node_id}$", out, re.MULTILINE)
    assert re.search(rf"^address\s+{node.address}$", out, re.MULTILINE)
    # one member: the cluster applies N=1, whatever it was configured with (issue 18)
    assert re.search(
        r"^replication\s+N=1 R=1 W=1 \(configured N=3 R=2 W=2: too few members\)$",
        out,
        re.MULTILINE,
    )
    assert re.search(r"^NODE\s+ADDRESS\s+STATE\s+PARTITIONS$", out, re.MULTILINE)
    assert re.search(rf"^{node.node_id}\s+{node.address}\s+up\s+256$", out, re.MULTILINE)
    assert "transfers: none" in out

    assert run(node, "ring") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ring version 1, 256 partitions"
    assert re.fullmatch(r"PARTITION\s+OWNER\s+PREFERENCE LIST", lines[2])
    assert re.fullmatch(rf"0\s+{node.node_id}\s+{node.node_id}", lines[3])
    assert len(lines) == 4 + 256 - 1

    assert run(node, "ring", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["partitions"]) == 256

    assert run(node, "plan") == 0
    assert capsys.readouterr().out.strip() == "nothing staged (ring version 1)"
    assert run(node, "plan", "--json") == 0
    assert json.loads(capsys.readouterr().out)["staged"] is False


@pytest.mark.cluster
def test_join_plan_and_commit_wait(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    a = procs.add_node()
    b = procs.add_node(seed=a)
    with DynamoClient(a.address) as client:
        for i in range(50):
            client.put(f"key-{i}", b"x")
        wait_for(
            lambda: any(m["node"] == b.node_id for m in client.status()["members"]),
            20,
            what="b known to a",
        )
    capsys.readouterr()

    assert run(a, "join", b.address) == 0
    assert f"staged: {b.node_id} ({b.address}) joins" in capsys.readouterr().out

    assert run(a, "plan") == 0
    plan = capsys.readouterr().out
    assert re.search(rf"^\s+join\s+{b.node_id}$", plan, re.MULTILINE)
    assert re.search(rf"^\s+{a.node_id}\s+256\s+\d+$", plan, re.MULTILINE)
    moved = re.search(rf"^\s+to {b.node_id}: (\d+)$", plan, re.MULTILINE)
    assert moved and int(moved.group(1)) > 0

    assert run(a, "plan", "--json") == 0
    staged = json.loads(capsys.readouterr().out)
    assert staged["staged"] and staged["plan"]["joins"] == [b.node_id]

    assert run(a, "commit", "--wait", "--wait-timeout", "30") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("committed: ring version")
    assert "transfers complete" in captured.err

    assert run(a, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["transfers"] == []
    owners = {m["node"]: m["partitions"] for m in status["members"]}
    assert owners[a.node_id] > 0 and owners[b.node_id] > 0
    assert owners[a.node_id] + owners[b.node_id] == 256

    # every key is still readable through the new member
    with DynamoClient(b.address) as client:
        assert all(client.get(f"key-{i}").value == b"x" for i in range(50))


@pytest.mark.cluster
def test_repair_wait(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    assert run(node, "put", "k", "v") == 0
    capsys.readouterr()
    assert run(node, "repair", "--wait", "--wait-timeout", "20") == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip()
    assert re.fullmatch(r"\S+", job_id)
    assert re.search(r"\] 100%  done, partitions (\d+)/\1, \d+ keys repaired$", captured.err)
    with DynamoClient(node.address) as client:
        assert client.job(job_id)["state"] == "done"
    assert run(node, "repair", "--json") == 0
    assert set(json.loads(capsys.readouterr().out)) == {"job"}


# --- the installed executable ----------------------------------------------------------------
@pytest.mark.cluster
def test_executable_end_to_end(procs: Cluster) -> None:
    node = procs.add_node()
    env = {**os.environ, "DYNAMO_NODE": node.address}
    env.pop("DYNAMO_TOKEN", None)

    def ctl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*dynamoctl(), *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )

    payload = b"line one\nline two\x00\xff"
    put = ctl("put", "piped/key", "-", stdin=payload)
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip()
    got = ctl("get", "piped/key")
    assert (got.returncode, got.stdout) == (0, payload)

    missing = ctl("get", "nope")
    assert missing.returncode == cli.EXIT_NOT_FOUND
    assert missing.stderr == b"dynamoctl: 'nope' not found\n"
    bad = ctl("put", "k", "v", "--context", "garbage")
    assert bad.returncode == cli.EXIT_USAGE and b"Traceback" not in bad.stderr
    down = ctl("--node", f"127.0.0.1:{free_port()}", "status")
    assert down.returncode == cli.EXIT_UNAVAILABLE and b"Traceback" not in down.stderr
    ctl("put", "two", "a")
    ctl("put", "two", "b")
    assert ctl("get", "two").returncode == cli.EXIT_SIBLINGS


# --- bad input: one usage line, exit 2, never a traceback ----------------------------------
BAD_COMMAND_LINES = [
    ["--timeout", "-1", "get", "k"],
    ["--timeout", "0", "status"],
    ["--timeout", "nan", "status"],
    ["--timeout", "soon", "status"],
    ["get", "k", "--timeout", "-5"],
    ["--token", "a\nb", "status"],
    ["--tls-ca", "/no/such/ca.pem", "status"],
    ["put", "", "v"],
    ["get", ""],
    ["delete", ""],
    ["delete", "k", "--w", "0"],
    ["delete", "k", "--r", "0"],
    ["delete", "k", "--w", "-1"],
    ["put", "k", "v", "--w", "0"],
    ["get", "k", "--r", "-2"],
    ["get", "k", "--timeout-ms", "0"],
    ["put", "k", "v", "--context", "c", "--overwrite"],
    ["repair", "--wait", "--wait-timeout", "-1"],
    ["job", ""],
    ["put", "k", "v", "--content-type", "text/plain\r\nX-Evil: 1"],
    ["put", "k", "v", "--context", "a\nb"],
]


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES, ids=" ".join)
def test_bad_input_is_a_one_line_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # nothing listens there: a command that got as far as the network would exit 4
    assert cli.main(["--node", f"127.0.0.1:{free_port()}", *argv]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dynamoctl"), captured.err
    assert "not found" not in captured.err


def test_bad_global_flags_through_the_executable() -> None:
    for argv in (["--timeout", "-1", "get", "k"], ["--tls-ca", "/no/such/ca.pem", "status"]):
        done = subprocess.run(
            [*dynamoctl(), "--node", f"127.0.0.1:{free_port()}", *argv],
            capture_output=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == cli.EXIT_USAGE, done.stderr
        assert b"Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


# --- against stand-in servers ------------------------------------------------------------
def test_failed_writes_say_they_may_have_been_applied(capsys: pytest.CaptureFixture[str]) -> None:
    def respond(request: Seen) -> Answer | None:
        if request.path.endswith("/dropped"):
            return None  # read the write, then drop the connection
        return dynamo_error(503, "quorum_not_met", "write quorum not met", required=2, answered=1)

    with FakeNode(kv_node(put=respond)) as fake:
        for argv in (
            ["put", "k", "v"],
            ["delete", "k", "--context", "ctx"],
            ["put", "dropped", "v"],
            ["put", "dropped", "v", "--overwrite"],
            ["delete", "dropped", "--context", "ctx"],
        ):
            assert run(fake.address, *argv) == cli.EXIT_UNAVAILABLE, argv
            err = capsys.readouterr().err
            assert err.count(MAYBE_APPLIED) == 1, (argv, err)
            assert "Traceback" not in err and len(err.splitlines()) == 1
        assert fake.methods().count("PUT") == 3  # each write was sent once
    # refused before anything was sent: nothing to warn about
    assert run(f"127.0.0.1:{free_port()}", "put", "k", "v") == cli.EXIT_UNAVAILABLE
    assert MAYBE_APPLIED not in capsys.readouterr().err


def test_leave_and_force_remove_force(capsys: pytest.CaptureFixture[str]) -> None:
    refusal = (
        "the leave of n2 would leave 2 ring member(s), fewer than N=3: every partition "
        "would have only 2 replica(s)"
    )

    def respond(request: Seen) -> Answer | None:
        if request.method == "POST" and not json.loads(request.body).get("force"):
            return dynamo_error(409, "too_few_members", refusal)
        return Answer(200, json.dumps({"node": "n2"}).encode(), {"Content-Type": JSON})

    with FakeNode(respond) as fake:
        for command in ("leave", "force-remove"):
            assert run(fake.address, command, "n2") == cli.EXIT_OTHER
            err = capsys.readouterr().err
            assert err.startswith(f"dynamoctl: {refusal}")
            assert "--force" in err and "fewer than N replicas" in err
            assert run(fake.address, command, "n2", "--force") == cli.EXIT_OK
            captured = capsys.readouterr()
            assert captured.out.startswith("staged: n2")
            assert "warning: --force" in captured.err and "fewer than N replicas" in captured.err
        bodies = [json.loads(s.body) for s in fake.seen]
        assert bodies == [{"node": "n2"}, {"node": "n2", "force": True}] * 2


@pytest.mark.parametrize("status", [200, 404])
def test_a_foreign_http_server_is_named_as_such(
    status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    page = Answer(status, b"<html><h1>Welcome to nginx!</h1></html>", {"Content-Type": "text/html"})
    with FakeNode(lambda _: page) as fake:
        for argv in (["get", "k"], ["put", "k", "v"], ["delete", "k"], ["status"], ["job", "j"]):
            assert run(fake.address, *argv) == cli.EXIT_OTHER, argv
            err = capsys.readouterr().err
            assert err.startswith(f"dynamoctl: {fake.address} does not look like a dynamokv node: ")
            assert "not found" not in err and len(err.splitlines()) == 1


# --- TLS -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, Path]]:
    root = tmp_path_factory.mktemp("tls")
    certs = root / "certs"
    certs.mkdir()
    cert, key, ca = make_certs(certs)
    with cluster(root) as c:
        c.scheme = "https"
        c.ssl_context = ssl.create_default_context(cafile=str(ca))
        node = c.add_node("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca))
        yield node, ca


@pytest.mark.cluster
def test_tls_errors_are_one_line_and_https_works(
    tls_node: tuple[NodeProc, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, ca = tls_node
    monkeypatch.delenv("DYNAMO_TLS_CA", raising=False)
    https = f"https://{node.address}"
    assert cli.main(["--node", https, "--timeout", "5", "get", "k"]) == cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "certificate" in err and "could not be verified" in err and "--tls-ca" in err
    assert len(err.splitlines()) == 1
    assert cli.main(["--node", node.address, "--timeout", "5", "status"]) == cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "https://" in err and len(err.splitlines()) == 1  # plain HTTP to a TLS port
    assert cli.main(["--node", https, "--tls-ca", str(ca), "put", "k", "v"]) == cli.EXIT_OK
    monkeypatch.setenv("DYNAMO_TLS_CA", str(ca))
    capsys.readouterr()
    assert cli.main(["--node", https, "get", "k"]) == cli.EXIT_OK
    assert capsys.readouterr().out == "v"
    assert cli.main(["--node", https, "--tls-ca", str(ca) + ".missing", "get", "k"]) == 2
    assert "CA file" in capsys.readouterr().err


# --- put --overwrite, get --json, job -------------------------------------------------------
@pytest.mark.cluster
def test_put_overwrite_replaces_instead_of_adding_a_sibling(
    procs: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    node = procs.add_node()
    assert run(node, "put", "new", "first", "--overwrite") == 0  # absent: a plain write
    assert run(node, "put", "new", "second", "--overwrite") == 0
    capsys.readouterr()
    assert run(node, "get", "new") == 0
    assert capsys.readouterr().out == "second"
    # siblings the read shows are resolved by the write
    assert run(node, "put", "two", "a") == 0
    assert run(node, "put", "two", "b") == 0
    assert run(node, "get", "two") == cli.EXIT_SIBLINGS
    assert run(node, "put", "two", "c", "--overwrite", "-v") == 0
    assert "replacing 2 siblings" in capsys.readouterr().err
    assert run(node, "get", "two") == 0
    assert capsys.readouterr().out == "c"


@pytest.mark.cluster
def test_get_json_parses_json_values(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    assert run(node, "put", "cart", '{"items": ["book"]}', "--content-type", JSON) == 0
    capsys.readouterr()
    assert run(node, "get", "cart", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["value"] for s in shown["siblings"]] == [{"items": ["book"]}]
    assert run(node, "put", "cart", '["milk"]', "--content-type", JSON) == 0  # a sibling
    capsys.readouterr()
    assert run(node, "get", "cart", "--json") == cli.EXIT_SIBLINGS
    out = capsys.readouterr().out
    assert "\n  " in out  # pretty-printed
    values = [s["value"] for s in json.loads(out)["siblings"]]
    assert sorted(values, key=json.dumps) == sorted([{"items": ["book"]}, ["milk"]], key=json.dumps)


@pytest.mark.cluster
def test_job_shows_an_admin_job(procs: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    node = procs.add_node()
    assert run(node, "repair") == 0
    job_id = capsys.readouterr().out.strip()
    assert run(node, "job", job_id, "--wait", "--wait-timeout", "20") == 0
    captured = capsys.readouterr()
    assert re.search(rf"^id\s+{re.escape(job_id)}$", captured.out, re.MULTILINE)
    assert re.search(r"^state\s+done$", captured.out, re.MULTILINE)
    assert re.search(r"^progress\s+\[#+\] 100%", captured.out, re.MULTILINE)
    assert run(node, "job", job_id, "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "done"
    assert run(node, "job", "no-such-job") == cli.EXIT_NOT_FOUND
    assert "Traceback" not in capsys.readouterr().err


def test_help_lists_the_new_commands_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert re.search(r"^\s+job\s", capsys.readouterr().out, re.MULTILINE)
    for command, flag in [
        ("put", "--overwrite"),
        ("leave", "--force"),
        ("force-remove", "--force"),
    ]:
        assert cli.main([command, "--help"]) == 0
        assert flag in capsys.readouterr().out
