"""main: the process around the node (settings from flags, runtime tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dynamo_node.main import (
    GC_GEN0_THRESHOLD,
    build_config,
    parse_args,
    row_cache_bytes,
    tune_gc,
)

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
