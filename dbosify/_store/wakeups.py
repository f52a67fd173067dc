"""In-process wake-ups by key: a transaction's keys fire its waiters as soon as it commits.

A key may carry a small value (`with_value`): the waiter's process then has it without reading
the database (a query's answer travels this way, in the NOTIFY payload across processes).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

VALUE_SEP = "\x1f"  # between a key and its value; never in a key
MAX_VALUE_BYTES = 5000  # Postgres caps a NOTIFY payload at 8000 bytes; base64 takes 4 per 3


def with_value(key: str, data: bytes) -> str:
    """``key`` carrying ``data`` when it is small enough to travel with the wake-up."""
    if len(data) > MAX_VALUE_BYTES:
        return key  # the waiter reads it from the database
    return f"{key}{VALUE_SEP}{base64.b64encode(data).decode()}"


class Tracker(Protocol):
    """Told of wake-ups on their way to a waiter (a virtual clock must not skip meanwhile)."""

    def delivering(self, n: int) -> None: ...

    def delivered(self) -> None: ...


class Hub:
    """In-process wake-ups by key, safe to call from any thread or loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = (
            defaultdict(set)
        )
        self.tracker: Tracker | None = None  # set by a time-skipping environment only
        self._values: dict[str, str] = {}  # values of fired keys, until their waiter takes them
        self._wants_value: set[asyncio.Future[None]] = set()  # waiters that take a key's value

    def fire(self, key: str) -> None:
        key, sep, value = key.partition(VALUE_SEP)
        with self._lock:
            waiters = self._waiters.pop(key, None)
            if waiters and sep and any(fut in self._wants_value for _, fut in waiters):
                self._values[key] = value
        if not waiters:
            return
        tracker = self.tracker
        if tracker is not None:
            tracker.delivering(len(waiters))
        for loop, fut in waiters:
            try:
                if tracker is None:
                    loop.call_soon_threadsafe(_set_done, fut)
                else:
                    loop.call_soon_threadsafe(_set_done_tracked, fut, tracker)
            except RuntimeError:
                if tracker is not None:
                    tracker.delivered()  # loop closed

    def take_value(self, key: str) -> bytes | None:
        """The value that the last `fire` of ``key`` carried to its waiters, once."""
        with self._lock:
            value = self._values.pop(key, None)
        return None if value is None else base64.b64decode(value)

    def fire_all(self) -> None:
        """Wake every waiter, to re-check (e.g. notifications may have been missed)."""
        with self._lock:
            keys = list(self._waiters)
        for key in keys:
            self.fire(key)

    def waiter(self, keys: Sequence[str], *, value: bool = False) -> asyncio.Future[None]:
        """A future resolved by the next `fire` of any of the keys (``value``: its waiter takes
        the value the key carries, with `take_value`; otherwise it is not kept)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            for key in keys:
                self._waiters[key].add(entry)
            if value:
                self._wants_value.add(fut)

        def _cleanup(_: asyncio.Future[None]) -> None:
            with self._lock:
                self._wants_value.discard(fut)
                for key in keys:
                    s = self._waiters.get(key)
                    if s is not None:
                        s.discard(entry)
                        if not s:
                            del self._waiters[key]

        fut.add_done_callback(_cleanup)
        return fut


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)



def _set_done_tracked(fut: asyncio.Future[None], tracker: Tracker) -> None:
    _set_done(fut)
    tracker.delivered()
