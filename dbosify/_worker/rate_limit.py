"""A worker's own activity rate: the Worker option ``max_activities_per_second``.

As Core does, a worker given it starts at most that many activities per second, whatever the
other workers of its task queue do (the queue-wide rate is the engine's: `_engine.rates`). A
token bucket in the worker's activity claim loop: with no token, the loop claims nothing and
sleeps until the next token comes.
"""

from __future__ import annotations

from typing import Any


class LocalRate:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)  # a second's worth, at least one (it starts with one)
        self.tokens = 1.0
        self.at: float | None = None

    def _refill(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now if self.at is None else max(self.at, now)

    def next_at(self, now: float) -> float | None:
        """None if a start is allowed now, else when the next one is."""
        self._refill(now)
        return None if self.tokens >= 1.0 else now + (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


def rates_of(config: Any) -> tuple[LocalRate | None, float | None]:
    """A worker's own limiter (max_activities_per_second) and its task queue's rate
    (max_task_queue_activities_per_second), from Core's worker config; None where unset."""
    mine, queue = config.max_activities_per_second, config.max_task_queue_activities_per_second
    return (LocalRate(float(mine)) if mine and mine > 0 else None), (float(queue) if queue and queue > 0 else None)
