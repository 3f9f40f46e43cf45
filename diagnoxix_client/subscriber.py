"""`Subscriber`: one user's live notifications over a v1 WebSocket (resume, ack, token refresh,
reconnect), exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from diagnoxix_client.service import NotifyError

SUBPROTOCOL_V1 = "diagnoxix.v1"
TokenProvider = Callable[[], Awaitable[str]]
# Told of a correction (the `retracted` or `updated` frame); may be a coroutine function.
CorrectionCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
# Ids remembered to drop redelivered duplicates: far more than one connection's backlog page.
SEEN_IDS = 10_000
# Acks are grouped: one frame per this many ids or this many seconds, whichever comes first.
ACK_BATCH = 100
ACK_DELAY_SECONDS = 0.05
# Close codes after which reconnecting cannot help (policy violations need a fix, not a retry).
# 4001 (token expired) is not among them: the token provider gives a fresh one on reconnect.
FATAL_CLOSE_CODES = frozenset({1008, 1009})


class Subscriber:
    """One user's notifications over a v1 WebSocket, exactly once, surviving disconnects.

    Keeps the last seq and epoch it saw and resumes from them; acknowledges each notification once
    the application has taken it; drops redelivered duplicates by id; answers token refresh
    requests from `token_provider`; reconnects with exponential backoff and full jitter.

    A notification retracted before the application took it is never handed over; one updated is
    handed over with its new words. `on_retracted` and `on_updated` hear of every correction (the
    frame: `id`, `seq`, and an update's `title` and `message`), so the application can take a
    notification it already showed back, or redraw it.
    """

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        since: int | None = None,
        epoch: str | None = None,
        session: aiohttp.ClientSession | None = None,
        max_backoff: float = 10.0,
        queue_size: int = 1000,
        on_retracted: CorrectionCallback | None = None,
        on_updated: CorrectionCallback | None = None,
        on_acknowledged: CorrectionCallback | None = None,
    ) -> None:
        self._url = base_url.rstrip("/").replace("http", "ws", 1) + "/v1/ws/notifications"
        self._tokens = token_provider
        self.last_seq = since
        self.epoch = epoch
        self.unread: int | None = None
        self.welcomes: list[dict[str, Any]] = []
        self.connections = 0
        self._session = session
        self._own_session = session is None
        self._max_backoff = max_backoff
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._on_retracted = on_retracted
        self._on_updated = on_updated
        # A critical item was acknowledged (by this user or another recipient): the frame.
        self._on_acknowledged = on_acknowledged
        # Ids in the inbox (not handed over yet), and corrections of those: retracted ones, and
        # new words by id. Bounded by the inbox.
        self._queued: set[str] = set()
        self._retracted: set[str] = set()
        self._rewords: dict[str, tuple[str, str]] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._acks: list[str] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.error: BaseException | None = None

    async def __aenter__(self) -> Subscriber:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="diagnoxix-subscriber")

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_session and self._session is not None:
            await self._session.close()

    async def answer(self, notification_id: str, action: str) -> dict[str, Any]:
        """Answer one of a notification's actions (`{"label", "action"}`) as this user: recorded
        once and passed on to its sender. Raises NotifyError (404: no such action; 409: answered
        already, with another action)."""
        assert self._session is not None, "start the subscriber first"
        base = self._url.replace("ws", "http", 1).removesuffix("/v1/ws/notifications")
        path = f"/v1/notifications/{quote(notification_id, safe='')}/actions/{quote(action, safe='')}"
        headers = {"Authorization": f"Bearer {await self._tokens()}"}
        async with self._session.post(base + path, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            if resp.status >= 400:
                error = (payload or {}).get("error", {})
                raise NotifyError(
                    resp.status, error.get("code", "error"), error.get("message", ""), error.get("details")
                )
            return dict(payload)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            note = await self.next()
            yield note

    async def next(self, wait_seconds: float | None = None) -> dict[str, Any]:
        """The next new notification; it is acknowledged once handed over."""
        get = asyncio.ensure_future(self._inbox.get())
        try:
            async with asyncio.timeout(wait_seconds):
                watch = [get] if self._task is None else [get, self._task]
                done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                raise self.error or ConnectionError("the subscriber stopped")
        finally:
            if not get.done():
                get.cancel()
        note = get.result()
        nid = note["id"]
        self._acks.append(nid)
        self._queued.discard(nid)
        if nid in self._retracted:
            self._retracted.discard(nid)
            return await self.next(wait_seconds)
        if (words := self._rewords.pop(nid, None)) is not None:
            note["title"], note["message"] = words
        return note

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await self._connect_once()
                attempt = 0
            except NotifyError as exc:
                self.error = exc
                return
            except (aiohttp.ClientError, ConnectionError, TimeoutError, OSError):
                pass
            if self._closed:
                return
            attempt += 1
            # Full jitter: a restarted server is not met by every client at the same instant.
            await asyncio.sleep(random.uniform(0, min(self._max_backoff, 0.05 * 2**attempt)))  # noqa: S311

    async def _connect_once(self) -> None:
        assert self._session is not None
        token = await self._tokens()
        query = f"?since={self.last_seq}" + (f"&epoch={self.epoch}" if self.epoch else "")
        try:
            ws = await self._session.ws_connect(
                self._url + (query if self.last_seq is not None else ""),
                protocols=(SUBPROTOCOL_V1, f"bearer.{token}"),
                heartbeat=30.0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise NotifyError(exc.status, "handshake_refused", exc.message) from None
            raise
        self._ws = ws
        self.connections += 1
        flusher = asyncio.create_task(self._flush_acks(ws))
        try:
            if self.last_seq is None:
                await ws.send_json({"type": "hello"})
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._on_frame(ws, json.loads(msg.data))
            if ws.close_code in FATAL_CLOSE_CODES:
                raise NotifyError(ws.close_code or 0, "closed", str(ws.close_code))
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            self._ws = None

    async def _on_frame(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in {"retracted", "updated", "acknowledged"}:
            await self._correct(frame)
        elif "seq" in frame and "id" in frame and kind not in {"welcome", "history"}:
            if frame["id"] in self._seen:
                self._acks.append(frame["id"])  # seen before: ack again so it stops coming
                return
            self._seen[frame["id"]] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
            if self.last_seq is None or frame["seq"] > self.last_seq:
                self.last_seq = frame["seq"]
            self._queued.add(frame["id"])
            await self._inbox.put(frame)
        elif kind == "welcome":
            self.epoch = frame["epoch"]
            self.unread = frame.get("unread")
            self.welcomes.append(frame)
            if frame.get("recovered") is False and frame.get("reason") != "expired":
                # Our cursor means nothing on this server (database replaced or restored): adopt
                # its newest seq, or later notifications below our old cursor would be skipped.
                self.last_seq = frame["last_seq"]
            elif self.last_seq is None or frame["last_seq"] > self.last_seq:
                # Nothing older is owed to us: resume after the newest seq from now on.
                self.last_seq = frame["last_seq"]
        elif kind == "unread":
            self.unread = frame["count"]
        elif kind == "refresh":
            await ws.send_json({"type": "token", "token": await self._tokens()})

    def _remember(self, key: str) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        return True

    async def _correct(self, frame: dict[str, Any]) -> None:
        """A correction: an event with its own seq in the stream (docs/protocol.md)."""
        kind, nid, seq = frame["type"], frame["id"], frame["seq"]
        if not self._remember(f"{kind}:{seq}"):
            return
        if self.last_seq is None or seq > self.last_seq:
            self.last_seq = seq
        if kind == "acknowledged":
            callback = self._on_acknowledged
        elif kind == "retracted":
            self._remember(nid)  # a late copy of it is not handed over either
            if nid in self._queued:
                self._retracted.add(nid)
                self._rewords.pop(nid, None)
            callback = self._on_retracted
        else:
            if nid in self._queued:
                self._rewords[nid] = (frame["title"], frame["message"])
            callback = self._on_updated
        if callback is not None:
            result = callback(frame)
            if result is not None:
                await result

    async def acknowledge(self, notification_id: str) -> None:
        """This person acknowledges the critical item `notification_id` is a copy of: it closes for
        every recipient (each gets an `acknowledged` frame; `on_acknowledged` hears of it)."""
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send_json({"type": "acknowledge", "id": notification_id})

    async def _flush_acks(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await asyncio.sleep(ACK_DELAY_SECONDS)
            while self._acks:
                batch, self._acks = self._acks[:ACK_BATCH], self._acks[ACK_BATCH:]
                await ws.send_json({"type": "ack", "ids": batch})
