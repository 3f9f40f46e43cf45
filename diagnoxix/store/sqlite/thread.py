"""The writer's thread: one thread, a queue of calls, each answered on the event loop.

What `ThreadPoolExecutor(max_workers=1)` and `run_in_executor` give, without what a pool needs
and a single writer does not: a C queue (`queue.SimpleQueue`) instead of a locked work queue and
a thread count to adjust, and the answer set on the asyncio future straight from the thread
(`call_soon_threadsafe`) instead of through a `concurrent.futures.Future` chained to it. Every
commit crosses it twice, so what it saves is per commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("diagnoxix.store")

T = TypeVar("T")

_Answer = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Job = tuple[Callable[..., Any], tuple[Any, ...], _Answer | None]


class CallThread:
    """Calls run in the order queued. `call` answers on the loop; `submit` answers nobody (the
    function keeps its own errors: see `batch.Transaction`). `stop` ends the thread once every call
    queued before it has run."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # A daemon: a store never closed (a crash on the way out) must not keep the process alive;
        # SQLite survives a thread ended mid-commit as it survives kill -9.
        # Started by the first call, as a pool starts its thread: a writer never opened holds none.
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((fn, args, (loop, future)))
        return future

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._put((fn, args, None))

    def _put(self, job: _Job) -> None:
        self._jobs.put(job)
        if self._thread.ident is None:
            self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, answer = job
            try:
                result = fn(*args)
            except BaseException as exc:  # answered to the caller, or the function's own to keep
                if answer is None:
                    log.debug("store.thread_call_failed", extra={"error": type(exc).__name__})
                else:
                    _reply(answer, _fail, exc)
                continue
            if answer is not None:
                _reply(answer, _answer, result)


def _reply(answer: _Answer, setter: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    loop, future = answer
    # A closed loop: nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(setter, future, value)


def _answer(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
