"""The engine's time: what "now" is, and waiting until a moment.

A `Store` has one clock. It is the wall clock, except in a time-skipping test environment,
which gives its store a `VirtualClock` (see `virtual_clock`). Code that stamps times or waits
for a due time (timers, timeouts, retries, delayed starts, schedules) asks the store's clock
rather than `time.time()`, and waits with `Store.wait_until` rather than a timeout in seconds.

A virtual clock skips ahead only while the engine is idle, so it must know when work is in
progress. Two hooks tell it, and cost nothing on the wall clock:

- `participant()`: a loop that waits for due times (a run's driver, a worker's claim loop, an
  activity poll, an attempt's watchdog) runs inside ``with clock.participant():``. It counts as
  busy except while it waits in `wait` (a woken wait counts as busy again at once).
- `hold(key)` / `release(key)`: work that is not a loop, such as a running activity attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class Participant:
    """A loop that takes part in the clock's view of "busy". The wall clock's does nothing."""

    def __enter__(self) -> Participant:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Done: no longer busy (idempotent)."""


_NO_PARTICIPANT = Participant()


class Clock:
    """Wall-clock time."""

    virtual = False
    # A workflow timer fires no sooner than this after the workflow task that started it took
    # effect, as on a Temporal server: its history service gives no timer task a fire time
    # before its timer queue's read level, which runs `history.timerProcessorMaxTimeShift`
    # (default 1 s) ahead of the clock. Measured on the dev server: 0.97-1.0 s from TimerStarted
    # to TimerFired for timers of 0 to 0.7 s. (The read level is set when the shard's queues
    # last read, so on a quiet server it can lag and a timer fire up to that much sooner; this is
    # the busy server's case.) The time-skipping test server has no such floor.
    timer_floor = 1.0

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def wait(
        self, fut: asyncio.Future[None], when: float | None, also: Sequence[asyncio.Future[None]] = ()
    ) -> None:
        """Wait until ``fut`` (or one of ``also``) is resolved or the clock reaches ``when``
        (None: no deadline)."""
        timeout = None if when is None else max(0.0, when - self.now())
        if also:
            await asyncio.wait([fut, *also], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            pass

    async def sleep_until(self, when: float) -> None:
        """Wait until the clock reaches ``when``."""
        await asyncio.sleep(max(0.0, when - self.now()))

    def participant(self) -> Participant:
        """A loop that waits for due times runs inside ``with clock.participant():``."""
        return _NO_PARTICIPANT

    def hold(self, key: object) -> None:
        """Work in progress (e.g. an activity attempt) until `release` with the same key."""

    def release(self, key: object) -> None:
        """The work held under ``key`` is over (idempotent)."""


def busy_task(clock: Clock, fn: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
    """A task running ``fn()`` as a participant of ``clock``, busy from this call on (not only
    from the task's first step: the caller may wait on the clock before that step runs)."""
    if not clock.virtual:
        return asyncio.create_task(fn())  # type: ignore[arg-type]
    busy = clock.participant()

    async def run() -> T:
        with busy:
            return await fn()

    task = asyncio.create_task(run())
    task.add_done_callback(lambda _t: busy.close())  # also if cancelled before its first step
    return task
