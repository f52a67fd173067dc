"""The engine's time: what "now" is, and waiting until a moment.

A `Store` has one clock. It is the wall clock, except in a time-skipping test environment,
which gives its store a clock of its own. Code that stamps times or waits for a due time (timers,
timeouts, retries, schedules) asks the store's clock rather than `time.time()`.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Wall-clock time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def wait(self, fut: asyncio.Future[None], when: float | None) -> None:
        """Wait until ``fut`` is resolved or the clock reaches ``when`` (None: no deadline)."""
        timeout = None if when is None else max(0.0, when - self.now())
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            pass
