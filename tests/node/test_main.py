"""main: the process around the node (settings from flags, runtime tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dynamo_node.main import GC_GEN0_THRESHOLD, build_config, parse_args, tune_gc


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
    assert build_config(parse_args(args)).row_cache_bytes == 32 * 1024 * 1024
    assert build_config(parse_args([*args, "--row-cache-bytes", "0"])).row_cache_bytes == 0
