"""The fan-out's one promise: it never writes a frame that could make aiohttp wait for a client.

One task writes every ready connection, so a write that waited would hold up every patient's live
notifications behind one stalled phone. `Connection._has_room` decides which frames it may write;
these tests hold it to the rule that makes the write non-blocking in aiohttp (the transport must
stay at or below its high-water mark with the frame's bytes added), for any text, emoji included.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from diagnoxix.hub import Connection, Hub

HIGH_WATER = 64 * 1024
# The largest WebSocket header a server frame can have.
HEADER = 14


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
    return Connection("c1", "u1", ws or _Socket(), v1=False, queue_limit=8, hub=Hub(), write_side=side)


texts = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x7F),  # 1 byte in UTF-8
        st.characters(min_codepoint=0x800, max_codepoint=0xFFFF, blacklist_categories=("Cs",)),  # 3
        st.characters(min_codepoint=0x10000),  # 4: emoji and the rest beyond the BMP
    ),
    max_size=20_000,
)


@settings(max_examples=300, deadline=None)
@given(text=texts, buffered=st.integers(min_value=0, max_value=HIGH_WATER))
def test_a_frame_the_fan_out_writes_always_fits_below_the_high_water_mark(text: str, buffered: int) -> None:
    conn = _connection(_Side(_Transport(buffered)))
    if conn._has_room(text):
        assert buffered + len(text.encode()) + HEADER <= HIGH_WATER


def test_emoji_count_four_bytes() -> None:
    # 14,000 emoji: 56,000 bytes. With 10 KiB already buffered they do not fit (a 3-bytes-per-
    # character estimate said they did, and the fan-out then waited on a stalled client).
    conn = _connection(_Side(_Transport(10 * 1024)))
    assert not conn._has_room("\U0001fa7a" * 14_000)
    assert conn._has_room("x" * 10_000)


def test_paused_or_compressing_sockets_always_get_their_own_sender() -> None:
    assert not _connection(_Side(_Transport(0), paused=True))._has_room("x")

    class _Compressing:
        compress = 15

    assert not _connection(_Side(_Transport(0)), _Compressing())._has_room("x")


def test_no_write_side_means_no_shared_writes() -> None:
    async def check() -> bool:
        conn = Connection("c1", "u1", _Socket(), v1=False, queue_limit=8, hub=Hub())  # type: ignore[arg-type]
        return conn._has_room("x")

    assert not asyncio.run(check())
