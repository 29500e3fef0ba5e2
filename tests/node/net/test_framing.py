"""The wire format: the frame decoder reassembles frames however the stream is cut and
raises only value errors on garbage, and the frames of one loop iteration leave in one
write."""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_node.net.framing import Framer, Output


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_the_framer_raises_only_value_errors_on_garbage(data: bytes) -> None:
    framer = Framer()
    try:
        frames = framer.feed(data)
    except Exception as exc:
        assert isinstance(exc, ValueError) or type(exc).__module__.startswith("msgpack"), exc
    else:
        assert isinstance(frames, list)


def _frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.binary(max_size=300) | st.integers(0, 2**32), max_size=4), max_size=8),
    st.lists(st.integers(0, 4000), max_size=12),
)
def test_the_framer_reassembles_frames_however_the_stream_is_cut(
    messages: list[list[Any]], cuts: list[int]
) -> None:
    stream = b"".join(_frame(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    framer = Framer()
    got: list[Any] = []
    for a, b in itertools.pairwise(points):
        got += framer.feed(stream[a:b])
    assert got == messages
    assert framer.feed(b"") == []


def test_a_large_frame_arriving_in_small_chunks() -> None:
    big = [b"x" * 1_000_000, 7]
    stream = _frame(big) + _frame("next")
    framer = Framer()
    got: list[Any] = []
    for i in range(0, len(stream), 1000):
        got += framer.feed(stream[i : i + 1000])
    assert got == [big, "next"]


class _Recorder:
    def __init__(self, events: list[object]) -> None:
        self.events = events

    def write(self, data: bytes) -> None:
        self.events.append(data)

    def is_closing(self) -> bool:
        return False


async def test_frames_of_one_loop_iteration_leave_in_one_write_after_the_hook() -> None:
    events: list[object] = []
    out = Output(asyncio.get_running_loop(), before=lambda: events.append("before"))
    out.transport = _Recorder(events)  # type: ignore[assignment]
    for frame in (b"a", b"b", b"c"):
        out.add(frame)
    assert events == []  # nothing written while the iteration runs
    await asyncio.sleep(0)
    # the node applies its grouped writes in `before`: replies never precede them
    assert events == ["before", b"abc"]
    out.add(b"d")
    await asyncio.sleep(0)
    assert events == ["before", b"abc", "before", b"d"]
