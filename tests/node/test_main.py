"""main: the process around the node (settings from flags, runtime tuning)."""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_node.main import (
    GC_GEN0_THRESHOLD,
    build_config,
    parse_args,
    row_cache_bytes,
    tune_gc,
)
from tests.harness import free_port, http, wait_for

GIB = 1024**3


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tune_gc_freezes_startup_objects_and_widens_the_young_generation(
    restore_gc: None,
) -> None:
    tune_gc()
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    assert gc.get_freeze_count() > 0


def test_row_cache_flag() -> None:
    args = ["--data-dir", "/tmp/x", "--port", "7070"]
    auto = build_config(parse_args(args))
    assert auto.row_cache_bytes is None
    assert row_cache_bytes(auto, 8 * GIB) == GIB  # 1/8 of the memory limit
    assert build_config(parse_args([*args, "--row-cache-bytes", "auto"])).row_cache_bytes is None
    off = build_config(parse_args([*args, "--row-cache-bytes", "0"]))
    assert row_cache_bytes(off, 8 * GIB) == 0
    sized = build_config(parse_args([*args, "--row-cache-bytes", "1000000"]))
    assert row_cache_bytes(sized, 8 * GIB) == 1_000_000


@pytest.mark.parametrize("bad", ["-1", "lots", "1.5"])
def test_row_cache_flag_rejects_bad_sizes(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", "/tmp/x", "--port", "7070", "--row-cache-bytes", bad])
    assert "--row-cache-bytes" in capsys.readouterr().err


def test_on_corruption_flag_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    args = ["--data-dir", "/tmp/x", "--port", "7070"]
    monkeypatch.delenv("DYNAMO_ON_CORRUPTION", raising=False)
    assert build_config(parse_args(args)).on_corruption == "refuse"
    flag = [*args, "--on-corruption", "replace"]
    assert build_config(parse_args(flag)).on_corruption == "replace"
    monkeypatch.setenv("DYNAMO_ON_CORRUPTION", "replace")
    assert build_config(parse_args(args)).on_corruption == "replace"
    with pytest.raises(SystemExit):
        parse_args([*args, "--on-corruption", "delete"])


def test_move_aside_renames_beside_and_keeps_everything(tmp_path: object) -> None:
    from pathlib import Path

    from dynamo_node.main import move_aside

    root = Path(str(tmp_path))
    data = root / "data"
    data.mkdir()
    (data / "000004.log").write_bytes(b"wal")
    link = root / "link"
    link.symlink_to(data)  # a data dir that is a symlink: the target moves
    aside = Path(move_aside(str(link)))
    assert aside.parent == root and aside.name.startswith("data.corrupt-")
    assert (aside / "000004.log").read_bytes() == b"wal"
    assert data.is_dir() and not list(data.iterdir())


# --- every setting has a flag; bad input is one line and exit 2 ------------------------------
ARGS = ["--data-dir", "/tmp/x", "--port", "7070"]


def _parser_dests() -> dict[str, list[str]]:
    from dynamo_node.main import build_parser

    return {a.dest: list(a.option_strings) for a in build_parser()._actions}


def test_every_config_field_has_a_flag() -> None:
    import dataclasses

    from dynamo_node.core.config import NodeConfig
    from dynamo_node.main import field_dest

    dests = _parser_dests()
    missing = [f.name for f in dataclasses.fields(NodeConfig) if field_dest(f.name) not in dests]
    assert missing == [], "every NodeConfig field needs a dynamo-node flag"
    # the generated name works for every field but the tokens (read from files)
    for f in dataclasses.fields(NodeConfig):
        if f.name not in ("client_token", "cluster_token"):
            assert "--" + f.name.replace("_", "-") in dests[field_dest(f.name)], f.name


@pytest.mark.parametrize(
    ("flags", "field", "value"),
    [
        (["--transfer-batch-keys", "7"], "transfer_batch_keys", 7),
        (["--transfer-batch", "7"], "transfer_batch_keys", 7),  # the old name still works
        (["--gossip-interval", "0.5"], "gossip_interval_s", 0.5),
        (["--gossip-interval-s", "0.5"], "gossip_interval_s", 0.5),
        (["--fsync-interval-s", "0.2"], "fsync_interval_s", 0.2),
        (["--no-read-repair"], "read_repair", False),
        (["--no-hinted-handoff"], "hinted_handoff", False),
        (["--lww"], "lww", True),
        (["--siblings-max", "50"], "siblings_max", 50),
        (["--object-max-bytes", "1000"], "object_max_bytes", 1000),
        (["--max-connections", "100"], "max_connections", 100),
        (["--peer-max-unauthenticated", "8"], "peer_max_unauthenticated", 8),
        (["--http-body-timeout-s", "5"], "http_body_timeout_s", 5.0),
        (["--tls-cert-file", "c", "--tls-key", "k", "--tls-ca", "a"], "tls_cert_file", "c"),
        (["--seeds", "h:1", "--seed", "h:2"], "seeds", ("h:1", "h:2")),
    ],
)
def test_field_flags(flags: list[str], field: str, value: object) -> None:
    assert getattr(build_config(parse_args([*ARGS, *flags])), field) == value


def test_a_flag_overrides_the_config_file_even_back_to_auto(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "node.json"
    path.write_text('{"max_connections": 10, "row_cache_bytes": 5, "read_repair": false}')
    config = build_config(parse_args([*ARGS, "--config", str(path)]))
    assert (config.max_connections, config.row_cache_bytes, config.read_repair) == (10, 5, False)
    flags = ["--max-connections", "auto", "--row-cache-bytes", "auto", "--read-repair"]
    config = build_config(parse_args([*ARGS, "--config", str(path), *flags]))
    assert (config.max_connections, config.row_cache_bytes, config.read_repair) == (
        None,
        None,
        True,
    )


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('{"transfer_batch_keys": "5"}', "transfer_batch_keys"),
        ('{"transfer_batch_keys": 5.5}', "transfer_batch_keys"),
        ('{"lww": 1}', "lww"),
        ('{"read_repair": "yes"}', "read_repair"),
        ('{"seeds": "h:1"}', "seeds"),
        ('{"gossip_interval_s": 0}', "gossip_interval_s"),
        ('{"no_such_setting": 1}', "no_such_setting"),
    ],
)
def test_config_file_is_type_checked(tmp_path: object, content: str, field: str) -> None:
    from pathlib import Path

    from dynamo_node.core.errors import DynamoError

    path = Path(str(tmp_path)) / "node.json"
    path.write_text(content)
    with pytest.raises(DynamoError) as err:
        build_config(parse_args([*ARGS, "--config", str(path)]))
    assert str(path) in str(err.value) and field in str(err.value)


def _node(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynamo_node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_usage_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def test_unusable_data_dir_is_a_usage_error() -> None:
    done = _node("--data-dir", "/dev/null/x", "--port", str(free_port()))
    _assert_usage_error(done, "/dev/null/x", "Not a directory")


def test_busy_port_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        done = _node("--data-dir", str(tmp_path / "d"), "--port", str(port))
    _assert_usage_error(done, str(port), "in use")


def test_busy_peer_port_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port + 10000))
        busy.listen()
        done = _node("--data-dir", str(tmp_path / "d"), "--port", str(port))
    _assert_usage_error(done, str(port + 10000), "peer port")


def test_a_data_dir_in_use_is_a_usage_error(tmp_path: Path) -> None:
    from dynamo_node.store.storage_rocks import RocksStorage

    data = tmp_path / "d"
    held = RocksStorage(str(data))  # holds the RocksDB lock, as a running node does
    try:
        done = _node("--data-dir", str(data), "--port", str(free_port()))
    finally:
        held.close()
    _assert_usage_error(done, f"another dynamo-node is using {data}")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"transfer_batch_keys": "5"}', "transfer_batch_keys"),
        ('{"lww": 1}', "lww"),
        ('{"bogus": 1}', "bogus"),
        ('{"n": ', "not valid JSON"),
        ('{"fsync_interval_s": 0}', "fsync_interval_s"),  # would spin
    ],
)
def test_bad_config_file_is_a_usage_error(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "node.json"
    path.write_text(content)
    port = str(free_port())
    done = _node("--data-dir", str(tmp_path / "d"), "--port", port, "--config", str(path))
    _assert_usage_error(done, str(path), needle)


@pytest.mark.parametrize(
    "flags",
    [
        ["--transfer-batch-keys", "0"],
        ["--transfer-batch", "0"],  # froze the event loop
        ["--fsync-interval-s", "0"],
        ["--gossip-interval", "0"],
        ["--partitions", "100"],
        ["--port", "70000"],
        ["--log-level", "bogus"],
    ],
)
def test_bad_setting_is_a_usage_error_naming_it(tmp_path: Path, flags: list[str]) -> None:
    done = _node("--data-dir", str(tmp_path / "d"), "--port", str(free_port()), *flags)
    field = flags[0].removeprefix("--").replace("-", "_")
    _assert_usage_error(done, field.split("_", maxsplit=1)[0])
    assert "error: unrecognized" not in done.stderr


def test_dynamo_node_stops_cleanly_on_sighup(tmp_path: Path) -> None:
    """Closing the terminal a node runs in stops it as SIGTERM does (RocksDB flushed)."""
    port = free_port()
    log = tmp_path / "node.log"
    command = [sys.executable, "-m", "dynamo_node", "--data-dir", str(tmp_path / "d")]
    with open(log, "wb") as out:
        node = subprocess.Popen(
            [*command, "--port", str(port), "--partitions", "8"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200, 30)
        node.send_signal(signal.SIGHUP)
        assert node.wait(30) == 0
        assert "stopped cleanly" in log.read_text()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
