"""A virtual clock for time-skipping test environments (`WorkflowEnvironment.start_time_skipping`).

Virtual time starts at the wall clock's time and runs at the wall clock's speed, except that it
**jumps** to the next due moment when all of these hold:

- time skipping is unlocked: the lock count (1 at start; the test service's
  ``lock_time_skipping`` adds one, ``unlock_time_skipping`` takes one away; temporalio unlocks
  while a client waits on a workflow's result) is zero or less;
- the engine is idle: no participant loop is working (each run's driver, each worker's claim
  loop and activity poll, each attempt's watchdog; see `Clock.participant`), no transaction is
  in flight, no wake-up is on its way to a waiter, no woken or due waiter has resumed yet, and no
  activity attempt is running (`Clock.hold`) unless it is itself sleeping on this clock;
- something waits for a later moment (`wait` with a deadline: a timer, a timeout, a retry's
  backoff, a delayed start, a test-service sleep).

The next due moment is the earliest deadline among the waiters, so the clock needs no timer
queue of its own: the engine's waits are the queue. The check runs whenever one of the
conditions may have become true (a waiter parks, work ends, a wake-up is delivered, skipping is
unlocked), never on a poll.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token

from dbosify._store.clock import Clock, Participant


class _Parked:
    """One `VirtualClock.wait` in progress."""

    __slots__ = ("loop", "futs", "when", "wake", "participant")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        futs: tuple[asyncio.Future[None], ...],
        when: float | None,
        participant: _Member | None,
    ) -> None:
        self.loop = loop
        self.futs = futs
        self.when = when
        self.wake: asyncio.Future[None] | None = None
        self.participant = participant


class _Member(Participant):
    """A participant of one virtual clock: busy unless parked in its `wait`."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.active = True
        self.parked = False
        self._tokens: list[Token[_Member | None]] = []
        with clock._lock:
            clock._busy += 1

    def __enter__(self) -> _Member:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())
        self.close()

    def close(self) -> None:
        clock = self.clock
        with clock._lock:
            if not self.active:
                return
            self.active = False
            if not self.parked:
                clock._busy -= 1
            clock._settle()


_current: ContextVar[_Member | None] = ContextVar("dbosify_clock_participant", default=None)


class VirtualClock(Clock):
    """Time that skips ahead while nothing is in progress; see the module docstring."""

    virtual = True
    timer_floor = 0.0  # timers fire at their virtual moment, as on the Java test server

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._base = time.time() if start is None else start  # virtual time at `_base_mono`
        self._base_mono = time.monotonic()
        self._locks = 1  # locked by default, as the Java test server starts
        self._busy = 0  # participants not parked
        self._held: dict[object, int] = {}  # key -> holds (activity attempts, transactions)
        self._excused: set[object] = set()  # held keys sleeping on this clock themselves
        self._in_flight = 0  # wake-ups fired but not yet delivered (see `Hub`)
        self._parked: set[_Parked] = set()
        self.skips = 0  # how many times time jumped (tests and diagnostics)

    # -- time ----------------------------------------------------------------------------------

    def now(self) -> float:
        with self._lock:
            return self._base + (time.monotonic() - self._base_mono)

    def _now_locked(self) -> float:
        return self._base + (time.monotonic() - self._base_mono)

    # -- locking ---------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        with self._lock:
            return self._locks > 0

    def lock(self) -> None:
        with self._lock:
            self._locks += 1

    def unlock(self) -> None:
        with self._lock:
            self._locks -= 1
            self._settle()

    # -- what is in progress --------------------------------------------------------------------

    def participant(self) -> Participant:
        return _Member(self)

    def hold(self, key: object) -> None:
        with self._lock:
            self._held[key] = self._held.get(key, 0) + 1

    def release(self, key: object) -> None:
        with self._lock:
            n = self._held.pop(key, 0) - 1
            if n > 0:
                self._held[key] = n
            self._settle()

    @contextmanager
    def excused(self, key: object) -> Iterator[None]:
        """Work held under ``key`` is not in progress meanwhile (it sleeps on this clock). No
        look at skipping here: the sleep's own wait looks once it counts among the deadlines."""
        with self._lock:
            self._excused.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._excused.discard(key)

    def delivering(self, n: int) -> None:
        """``n`` wake-ups were fired and are on their way to their waiters' loops."""
        with self._lock:
            self._in_flight += n

    def delivered(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._settle()

    def poke(self) -> None:
        """Look whether time can skip now."""
        with self._lock:
            self._settle()

    # -- waiting -----------------------------------------------------------------------------------

    async def wait(
        self, fut: asyncio.Future[None], when: float | None, also: Sequence[asyncio.Future[None]] = ()
    ) -> None:
        await self._wait((fut, *also), when, unlock=False)

    async def sleep_until(self, when: float, *, unlocked: bool = False) -> None:
        """Wait until ``when``; with ``unlocked``, time skipping is unlocked meanwhile (from the
        moment this wait counts among the deadlines, so time cannot skip past it)."""
        await self._wait((asyncio.get_running_loop().create_future(),), when, unlock=unlocked)

    async def _wait(
        self, futs: tuple[asyncio.Future[None], ...], when: float | None, *, unlock: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        member = _current.get()
        if member is not None and (member.clock is not self or not member.active):
            member = None
        entry = _Parked(loop, futs, when, member)
        with self._lock:
            self._parked.add(entry)
            if member is not None:
                member.parked = True
                self._busy -= 1
            if unlock:
                self._locks -= 1
            self._settle()
        try:
            while not any(f.done() for f in futs):
                now = self.now()
                if when is not None and now >= when:
                    return
                entry.wake = loop.create_future()
                await asyncio.wait(
                    [*futs, entry.wake],
                    timeout=None if when is None else when - now,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            with self._lock:
                if unlock:
                    self._locks += 1
                self._parked.discard(entry)
                if member is not None and member.parked:
                    member.parked = False
                    if member.active:
                        self._busy += 1
            if member is None:
                # Not a participant: let the caller start its work (a transaction counts as
                # busy from the call) before time may move on.
                loop.call_soon(self.poke)

    # -- skipping ---------------------------------------------------------------------------------

    def _idle_locked(self) -> bool:
        if self._locks > 0 or self._busy > 0 or self._in_flight > 0:
            return False
        return all(key in self._excused for key in self._held)

    def _settle(self) -> None:
        """With the lock held: if time may skip, jump to the earliest deadline and wake it."""
        if not self._idle_locked():
            return
        now = self._now_locked()
        nxt: float | None = None
        for e in self._parked:
            if any(f.done() for f in e.futs):
                return  # woken, not resumed yet: it is about to work
            if e.when is not None:
                if e.when <= now:
                    return  # due, not resumed yet
                if nxt is None or e.when < nxt:
                    nxt = e.when
        if nxt is not None:
            self._jump_locked(nxt)

    def _jump_locked(self, to: float) -> None:
        if to > self._now_locked():
            self._base, self._base_mono = to, time.monotonic()
            self.skips += 1
        for e in list(self._parked):
            if e.when is not None and e.when <= to:
                try:
                    e.loop.call_soon_threadsafe(_wake, e)
                except RuntimeError:
                    self._parked.discard(e)  # its loop is closed


def _wake(entry: _Parked) -> None:
    if entry.wake is not None and not entry.wake.done():
        entry.wake.set_result(None)
