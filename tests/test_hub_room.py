"""The fan-out's one promise: it never writes a frame that could make aiohttp wait for a client.

One pass writes every ready connection, so a write that waited would hold up every patient's live
notifications behind one stalled phone. `Connection._take_fitting` decides which queued frames go
into a connection's one write; these tests hold it to the rule that makes the write non-blocking
(the transport must stay at or below its high-water mark with the write added), for any texts,
emoji included, and to taking frames in order and as many as fit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from diagnoxix.delivery.connection import Connection
from diagnoxix.delivery.hub import Hub
from diagnoxix.delivery.wire import text_frame

HIGH_WATER = 64 * 1024


class _Transport:
    """The two numbers asyncio's transports report, at a chosen fill."""

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return HIGH_WATER // 4, HIGH_WATER


class _Side:
    def __init__(self, transport: _Transport, paused: bool = False) -> None:
        self.transport: Any = transport
        self.writing_paused = paused


class _Socket:
    compress = 0


def _connection(side: _Side, ws: Any = None) -> Connection:
    socket: Any = ws or _Socket()  # the fan-out reads only `compress` and `closed` of it here
    return Connection("c1", "u1", socket, v1=False, queue_limit=8, hub=Hub(), write_side=side)


texts = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x7F),  # 1 byte in UTF-8
        st.characters(min_codepoint=0x800, max_codepoint=0xFFFF, exclude_categories=["Cs"]),  # 3
        st.characters(min_codepoint=0x10000),  # 4: emoji and the rest beyond the BMP
    ),
    max_size=20_000,
)


def _frames(texts: list[str]) -> deque[tuple[bytes, str | None, bool]]:
    return deque((text_frame(text), f"n{i}", False) for i, text in enumerate(texts))


@settings(max_examples=300, deadline=None)
@given(
    batch=st.lists(texts, min_size=1, max_size=12),
    buffered=st.integers(min_value=0, max_value=HIGH_WATER),
)
def test_the_fan_out_writes_a_prefix_of_the_queue_that_fits_below_the_high_water_mark(
    batch: list[str], buffered: int
) -> None:
    conn = _connection(_Side(_Transport(buffered)))
    pending = _frames(batch)
    taken, wire = conn._take_fitting(pending)
    assert [frame[0] for frame in taken] == [text_frame(text) for text in batch[: len(taken)]]
    assert list(pending) == list(_frames(batch))[len(taken) :]
    assert wire == b"".join(frame[0] for frame in taken)
    assert buffered + len(wire) <= HIGH_WATER
    if pending:  # and no more than that: the next frame would not have fit
        assert buffered + len(wire) + len(pending[0][0]) > HIGH_WATER


def test_emoji_count_four_bytes() -> None:
    # 14,000 emoji: 56,000 bytes. With 10 KiB already buffered they do not fit (a 3-bytes-per-
    # character estimate said they did, and the fan-out then waited on a stalled client).
    conn = _connection(_Side(_Transport(10 * 1024)))
    taken, _ = conn._take_fitting(_frames(["x" * 10_000, "\U0001fa7a" * 14_000]))
    assert [frame[0] for frame in taken] == [text_frame("x" * 10_000)]


def test_paused_or_compressing_sockets_always_get_their_own_sender() -> None:
    assert _connection(_Side(_Transport(0), paused=True))._take_fitting(_frames(["x"])) == ([], b"")

    class _Compressing:
        compress = 15

    assert _connection(_Side(_Transport(0)), _Compressing())._take_fitting(_frames(["x"])) == ([], b"")


def test_no_write_side_means_no_shared_writes() -> None:
    async def check() -> tuple[list[tuple[bytes, str | None, bool]], bytes]:
        conn = Connection("c1", "u1", _Socket(), v1=False, queue_limit=8, hub=Hub())  # type: ignore[arg-type]
        return conn._take_fitting(_frames(["x"]))

    assert asyncio.run(check()) == ([], b"")
