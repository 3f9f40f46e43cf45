"""One process's link to Redis: the commands it sends, in order, and whether Redis is there.

Broker calls and presence changes never await Redis: they append a command to one queue
(`send`), and a sender task writes whatever is queued as one pipeline, in order. `drain()`
returns once every command queued before it was accepted by Redis, or dropped because Redis is
down: a store writer awaits it between a commit and releasing its seq lock, so live events
reach every process in commit order.

When Redis is down, queued commands are dropped at once (nobody waits on a dead link), the
sender retries with a capped backoff, and the outage is logged once (`outages.Outage`), and once
when it is over. Sources (`add_source`) add commands built as each pipeline is: presence writes
the counts as they are then; after commands were lost, the broker asks every process to resync
(events went missing) and presence writes this process's whole share again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from diagnoxix.config_broker import broker_target
from diagnoxix.outages import Outage
from diagnoxix.redis_client import redis_client

log = logging.getLogger("diagnoxix.broker")

# A command as redis-py's `execute_command` takes it: ("PUBLISH", channel, payload).
Command = tuple[Any, ...]
# Commands built as a pipeline is, sent first in it; its argument says whether commands were
# lost since the last pipeline got through.
Source = Callable[[bool], list[Command]]
# Payloads published one after the other on one channel, as one message.
Merge = Callable[[list[bytes]], bytes]

# Retries while Redis is down: from the first, doubling up to the cap.
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0
# Commands per pipeline: a burst goes in a few round trips, none of them huge.
PIPELINE_COMMANDS = 1000
# Publishes merged into one message (`merge_publishes`) stop at about this size.
MERGED_MESSAGE_BYTES = 256 * 1024
# Commands queued while Redis answers slowly, before they are dropped (and a resync requested).
MAX_QUEUED = 200_000
# At shutdown, how long what is still queued (this process's presence leaving) may take.
CLOSE_FLUSH_SECONDS = 1.0


class RedisLink:
    def __init__(self, url: str, *, name: str) -> None:
        self.target = broker_target(url)
        self.client: Redis = redis_client(url, name=name)
        self.outage = Outage(log, "broker", {"broker": self.target})
        self._queue: deque[Command] = deque()
        # Commands ever queued, and ever sent or dropped: `drain` waits for the second to reach
        # the first as it was when it was called.
        self._queued = 0
        self._finished = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sources: list[Source] = []
        self._merges: dict[str, Merge] = {}
        self.backlog = Outage(log, "broker.backlog", {"broker": self.target})
        # Commands were dropped since the last pipeline got through.
        self._lost = False
        # The last pipeline failed: drop what comes until a retry gets through.
        self._failing = False
        # The broker's subscription is live (set by its listener).
        self._listening = False
        # Cut the sender's backoff short: Redis is back.
        self._retry_now = False
        self.closed = False

    @property
    def up(self) -> bool:
        """Subscribed, and the last pipeline got through."""
        return self._listening and not self._failing

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def merge_publishes(self, channel: str, merge: Merge) -> None:
        """Publishes on `channel` that follow each other in a pipeline go as one message,
        `merge(payloads)`: a burst costs Redis and every subscriber one message, not hundreds."""
        self._merges[channel] = merge

    def wake(self) -> None:
        """A source has something to send: build a pipeline soon."""
        if not self.closed:
            self._wake.set()

    def listening(self, live: bool, error: BaseException | None = None) -> None:
        """The broker's listener says whether its subscription is live."""
        self._listening = live
        if not live:
            self.outage.failed(error, what="subscription")
        elif self.up:
            self.outage.recovered()
        else:
            # Redis answers the listener: the sender need not wait out its backoff to try again.
            self._retry_now = True
            self._wake.set()

    def send(self, *command: Any) -> None:
        """Queue one command (never awaits); the sender writes it after everything queued before."""
        if self.closed:
            return
        self._queue.append(command)
        self._queued += 1
        if len(self._queue) > MAX_QUEUED:
            # Redis takes less than we send: better a resync than a process out of memory.
            self.backlog.failed(what="dropped")
            self._drop_queued()
        self._wake.set()

    async def drain(self) -> None:
        """Return once everything queued before this call was accepted by Redis or dropped."""
        target = self._queued
        if self._finished >= target or self.closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_forever(), name="diagnoxix-broker-sender")

    async def close(self) -> None:
        """Send what is queued (briefly), stop the sender, close the connections."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), CLOSE_FLUSH_SECONDS)
            self.closed = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.closed = True
        self._drop_queued()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    def _finish(self, count: int) -> None:
        self._finished += count
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._finished:
            _, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _drop_queued(self) -> None:
        if self._queue:
            dropped = len(self._queue)
            self._queue.clear()
            self._lost = True
            self._finish(dropped)

    async def _wait_dropping(self, seconds: float) -> None:
        """Wait out a backoff; what is queued meanwhile is dropped at once (so `drain` returns)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._retry_now:
            self._drop_queued()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        self._retry_now = False
        self._drop_queued()

    async def _send_forever(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while True:
            if self._failing:
                await self._wait_dropping(backoff)
            elif not self._queue:
                await self._wake.wait()
            self._wake.clear()
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), PIPELINE_COMMANDS))]
            # Set again if this pipeline fails, or if more is dropped while it is under way.
            lost, self._lost = self._lost, False
            try:
                await self._send(batch, lost)
            except Exception as exc:  # Redis is gone, or a surprise: either way the batch is lost
                if not isinstance(exc, (RedisError, OSError)):
                    log.exception("broker.send_failed")
                self._lost = True
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS) if self._failing else BACKOFF_FIRST_SECONDS
                self._failing = True
                self.outage.failed(exc, what="commands")
            else:
                self.backlog.recovered()
                if self._failing:
                    self._failing = False
                    if self.up:
                        self.outage.recovered()
            finally:
                self._finish(len(batch))

    async def _send(self, batch: list[Command], lost: bool) -> None:
        """One pipeline: what the sources add (built now), then the batch, publishes merged."""
        first = [command for source in self._sources for command in source(lost)]
        if self._failing and not (first or batch):
            first = [("PING",)]  # nothing to send: a probe, to learn that Redis is back
        if not (first or batch):
            return
        pipe = self.client.pipeline(transaction=False)
        for command in self._merged([*first, *batch]):
            pipe.execute_command(*command)
        await pipe.execute()

    def _merged(self, commands: list[Command]) -> list[Command]:
        """`commands`, with each run of publishes on a merged channel as one publish."""
        merged: list[Command] = []
        channel: str | None = None
        run: list[bytes] = []
        size = 0

        def close_run() -> None:
            if run and channel is not None:
                merged.append(("PUBLISH", channel, run[0] if len(run) == 1 else self._merges[channel](run)))
            run.clear()

        for command in commands:
            if command[0] == "PUBLISH" and command[1] in self._merges:
                if command[1] != channel or size + len(command[2]) > MERGED_MESSAGE_BYTES:
                    close_run()
                    channel, size = command[1], 0
                run.append(command[2])
                size += len(command[2])
            else:
                close_run()
                channel = None
                merged.append(command)
        close_run()
        return merged
