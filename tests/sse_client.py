"""A server-sent events reader over a real aiohttp response, parsing the stream as a browser's
EventSource does (fields `id`, `event`, `data`; comment lines; blank line dispatches)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Event:
    data: str
    id: str | None = None
    event: str = "message"

    def frame(self) -> dict[str, Any]:
        parsed = json.loads(self.data)
        assert isinstance(parsed, dict), self.data
        return parsed


@dataclass
class SseReader:
    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    ended: bool = False

    async def next_event(self, timeout: float = 5.0) -> Event:
        """The next dispatched event; raises EOFError at the end of the stream."""
        data: list[str] = []
        event_id: str | None = None
        name = "message"
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    self.ended = True
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if data:
                        return Event("\n".join(data), event_id, name)
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "data":
                    data.append(value)
                elif key == "id":
                    event_id = value
                elif key == "event":
                    name = value

    async def frames_until(self, kind: str, timeout: float = 5.0) -> list[Event]:
        """Events up to and including the first whose frame has `type` == kind."""
        got: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next_event(timeout)
                got.append(event)
                if event.frame().get("type") == kind:
                    return got

    async def notifications(self, count: int, timeout: float = 5.0) -> list[Event]:
        """The next `count` notification events (control frames are skipped)."""
        got: list[Event] = []
        async with asyncio.timeout(timeout):
            while len(got) < count:
                event = await self.next_event(timeout)
                frame = event.frame()
                if "seq" in frame and frame.get("type") not in {"retracted", "updated"}:
                    got.append(event)
        return got

    async def until_end(self, timeout: float = 5.0) -> list[Event]:
        """Every event left, until the server ends the stream."""
        got: list[Event] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    got.append(await self.next_event(timeout))
        except EOFError:
            return got
