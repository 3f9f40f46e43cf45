"""Presence across processes: each process's share in Redis, and the sum of every process's.

Keys, under the broker prefix `<p>`:

    <p>:presence          a set: the ids of the processes that wrote a share
    <p>:presence:<id>     a hash, one process's share: user id -> "connections since" for each
                          user with a connection there, and "" -> "1" (the heartbeat); it
                          expires PRESENCE_TTL_SECONDS after the process's last heartbeat

A process writes its share through the link (`redis_link.RedisLink`) as connections open and
close, with the counts as they are when the pipeline is built, never stale ones; after Redis
lost commands (an outage, a restart) it writes its whole share again. A process that dies
(kill -9, a lost host) leaves a share that expires by itself: its connections stop counting
within PRESENCE_TTL_SECONDS. A process that stops cleanly removes its share at once.

Answers count this process's connections from its hub (exact, at once) and the other processes'
from Redis. While Redis is down they count this process's connections only. `online` (who of
these users is connected: delivery states, the push router's check) asks Redis once per
question, and only about users with no connection here; it waits at most ONLINE_WAIT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from diagnoxix.delivery.hub import Hub
from diagnoxix.delivery.presence import OnlineUser, merge_online
from diagnoxix.delivery.redis_link import Command, RedisLink
from diagnoxix.redis_client import REPLY_TIMEOUT_SECONDS

log = logging.getLogger("diagnoxix.presence")

HEARTBEAT_SECONDS = 2.0
PRESENCE_TTL_SECONDS = 6
# Every this many heartbeats the whole share is written again: a share that expired while this
# process could not beat (its event loop stalled longer than the TTL) heals by itself.
REWRITE_EVERY_BEATS = 30
# Totals (the dashboard's overview) are read from Redis at most once a second.
TOTALS_REUSE_SECONDS = 1.0
# Users per HSET when a whole share is written.
HSET_CHUNK = 1000
# The longest `online` waits for Redis, round trips and a new connection included; then it
# answers with this process's connections (a push goes out: the safe side).
ONLINE_WAIT_SECONDS = REPLY_TIMEOUT_SECONDS
_ALIVE = ""


def _entry(count: int, since: float | None) -> str:
    return f"{count} {since if since is not None else time.time():.3f}"


def _parse_entry(value: bytes) -> tuple[int, float] | None:
    count, _, since = value.partition(b" ")
    try:
        return int(count), float(since)
    except ValueError:
        return None


def _parse(share: dict[bytes, bytes]) -> dict[str, tuple[int, float]]:
    users: dict[str, tuple[int, float]] = {}
    for field, value in share.items():
        if field and (entry := _parse_entry(value)) is not None:
            users[field.decode()] = entry
    return users


class RedisPresence:
    def __init__(self, link: RedisLink, prefix: str, hub: Hub, process_id: str) -> None:
        self._link = link
        self._hub = hub
        self._processes = f"{prefix}:presence"
        self._share_prefix = f"{prefix}:presence:"
        self._share = self._share_prefix + process_id
        self._process_id = process_id.encode()
        # Users whose count changed since the last pipeline.
        self._dirty: set[str] = set()
        # Write the whole share with the next pipeline (the first one, and after a resync).
        self._whole = True
        self._beat = True
        self._leaving = False
        self._task: asyncio.Task[None] | None = None
        self._totals: tuple[float, tuple[int, int]] | None = None
        # The other processes' ids as `online` last read them: their shares are read in the same
        # round trip as the list of processes, which a second one completes only when it grew.
        self._known: list[bytes] = []
        hub.add_connection_listener(self._changed)
        link.add_source(self._commands)

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat_forever(), name="diagnoxix-presence-heartbeat")

    async def close(self) -> None:
        """Remove this process's share (sent by the link's close, which follows)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._leaving = True
        self._link.send("DEL", self._share)
        self._link.send("SREM", self._processes, self._process_id)

    def rewrite(self) -> None:
        """Write the whole share again with the next pipeline."""
        self._whole = True
        self._link.wake()

    def _changed(self, user_id: str) -> None:
        self._dirty.add(user_id)
        self._link.wake()

    async def _beat_forever(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            beats += 1
            if beats % REWRITE_EVERY_BEATS == 0:
                self._whole = True
            self._beat = True
            self._link.wake()

    def _commands(self, lost: bool) -> list[Command]:
        """This process's share as it is now: built as each pipeline is (`RedisLink.add_source`)."""
        if self._leaving:
            return []
        share, hub = self._share, self._hub
        if lost or self._whole:
            self._whole = self._beat = False
            self._dirty.clear()
            fields: list[str] = []
            for user, count, since in hub.online_users():
                fields += (user, _entry(count, since))
            fresh = f"{share}:new"
            commands: list[Command] = [("DEL", fresh), ("HSET", fresh, _ALIVE, "1")]
            for at in range(0, len(fields), 2 * HSET_CHUNK):
                commands.append(("HSET", fresh, *fields[at : at + 2 * HSET_CHUNK]))
            # Swapped in at once: a reader never sees half a share.
            commands += [("RENAME", fresh, share), ("EXPIRE", share, PRESENCE_TTL_SECONDS)]
            return [*commands, ("SADD", self._processes, self._process_id)]
        commands = []
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            for user in dirty:
                count, online_since = hub.presence(user)
                if count:
                    commands.append(("HSET", share, user, _entry(count, online_since)))
                else:
                    commands.append(("HDEL", share, user))
        if self._beat:
            self._beat = False
            commands += [("HSET", share, _ALIVE, "1"), ("SADD", self._processes, self._process_id)]
        if commands:
            # A share never outlives its process by more than the TTL, whatever was written last.
            commands.append(("EXPIRE", share, PRESENCE_TTL_SECONDS))
        return commands

    # -- answers ---------------------------------------------------------------------------

    async def _others(self) -> list[bytes]:
        # Bytes: the client does not decode replies (redis-py types them bytes or str).
        members = await self._link.client.smembers(self._processes)
        return [pid for pid in members if isinstance(pid, bytes) and pid != self._process_id]

    async def user(self, user_id: str) -> tuple[int, float | None]:
        count, since = self._hub.presence(user_id)
        if not self._link.up:
            return count, since
        try:
            others = await self._others()
            pipe = self._link.client.pipeline(transaction=False)
            for pid in others:
                pipe.hget(self._share_prefix + pid.decode(), user_id)
            values = await pipe.execute() if others else []
        except (RedisError, OSError) as exc:
            log.debug("presence.read_failed", extra={"error": type(exc).__name__})
            return count, since
        for value in values:
            if value and (entry := _parse_entry(value)) is not None:
                count += entry[0]
                since = entry[1] if since is None else min(since, entry[1])
        return count, since

    async def online_users(self) -> list[OnlineUser]:
        local = {user: (count, since) for user, count, since in self._hub.online_users()}
        if not self._link.up:
            return merge_online([local])
        try:
            others = await self._others()
            pipe = self._link.client.pipeline(transaction=False)
            for pid in others:
                pipe.hgetall(self._share_prefix + pid.decode())
            shares = await pipe.execute() if others else []
        except (RedisError, OSError) as exc:
            log.debug("presence.read_failed", extra={"error": type(exc).__name__})
            return merge_online([local])
        for pid, found in zip(others, shares, strict=True):
            if not found:
                # Expired: that process died more than PRESENCE_TTL_SECONDS ago.
                self._link.send("SREM", self._processes, pid)
        return merge_online([local, *(_parse(found) for found in shares)])

    async def totals(self) -> tuple[int, int]:
        cached, now = self._totals, time.monotonic()
        if cached is not None and now - cached[0] < TOTALS_REUSE_SECONDS:
            return cached[1]
        online = await self.online_users()
        totals = (sum(count for _, count, _ in online), len(online))
        self._totals = (now, totals)
        return totals

    async def online(self, user_ids: Iterable[str]) -> set[str]:
        hub = self._hub
        found: set[str] = set()
        asked: list[str] = []
        for user in dict.fromkeys(user_ids):
            if hub.connections_of(user):
                found.add(user)
            else:
                asked.append(user)
        if not asked or not self._link.up:
            return found
        try:
            async with asyncio.timeout(ONLINE_WAIT_SECONDS):
                return found | await self._online_elsewhere(asked)
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("presence.read_failed", extra={"error": type(exc).__name__})
            return found

    async def _online_elsewhere(self, users: list[str]) -> set[str]:
        """Which of `users` the other processes' shares hold."""
        known = self._known
        pipe = self._link.client.pipeline(transaction=False)
        pipe.smembers(self._processes)
        for pid in known:
            pipe.hmget(self._share_prefix + pid.decode(), users)
        members, *replies = await pipe.execute()
        others = sorted(pid for pid in members if isinstance(pid, bytes) and pid != self._process_id)
        # A process that left since is not counted; one that joined is read now.
        shares: list[list[Any]] = [r for pid, r in zip(known, replies, strict=True) if pid in members]
        if joined := [pid for pid in others if pid not in known]:
            pipe = self._link.client.pipeline(transaction=False)
            for pid in joined:
                pipe.hmget(self._share_prefix + pid.decode(), users)
            shares += await pipe.execute()
        self._known = others
        online: set[str] = set()
        for values in shares:
            for user, value in zip(users, values, strict=True):
                if value and (entry := _parse_entry(value)) is not None and entry[0] > 0:
                    online.add(user)
        return online
