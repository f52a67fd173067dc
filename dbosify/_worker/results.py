"""Activity results, group-committed: what finishes together is recorded in one transaction.

(Completed attempts of workflows on Postgres go a shorter way first: `completed_results`.)

A worker's activities tend to finish in bursts. Recording each in its own transaction makes the
last of a burst wait behind the others, and an attempt whose result is not yet durable when the
worker dies is run again. Here each result joins a queue, and up to one drainer per thread of
the store's results lane (`FACT`) takes everything queued and records it in one transaction.
Drainers run on the lane's threads, started straight from the completion call: a busy event
loop does not delay the transaction, so a result is durable within milliseconds of its return.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dbosify._engine import activity_tasks as acts
from dbosify._engine import completed_results
from dbosify._store import Store
from dbosify._store.loop_pool import LoopPool
from dbosify._store.store import FACT, LANES

if TYPE_CHECKING:  # (at run time this module may load while _activity_tasks is importing)
    _Pending = tuple[acts.Outcome, int | None, asyncio.AbstractEventLoop, asyncio.Future[bool]]


class ResultRecorder:
    def __init__(self, store: Store, namespace: str, identity: str, pool: LoopPool) -> None:
        self.store = store
        self.ns = namespace
        self.identity = identity
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._drainers = 0
        self._direct = None if store.is_sqlite else completed_results.DirectWriter(store, namespace, pool)

    async def record(self, outcome: acts.Outcome, scheduled_event_id: int | None = None) -> bool:
        """Record one attempt's outcome; False if the attempt is no longer current.

        On Postgres a completed attempt of a workflow, whose scheduled event is known, is sent
        straight from this event loop (`completed_results`); the rest, and what that path
        cannot settle, are group-committed on the results lane's threads.
        """
        run_id, seq, attempt, kind, payload = outcome
        if (
            self._direct is not None and kind == "completed" and seq != acts.STANDALONE_SEQ
            and scheduled_event_id is not None
        ):
            item = completed_results.build(
                run_id, seq, attempt, scheduled_event_id, payload,  # type: ignore[arg-type]
                self.identity, int(self.store.clock.now() * 1e9),
            )
            verdict = await self._direct.record(item)
            if verdict is not None:
                return verdict
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            self._queue.append((outcome, scheduled_event_id, loop, done))
            start = self._drainers < LANES[FACT]
            if start:
                self._drainers += 1
        if start:
            self.store.submit(FACT, self._drain)
        return await done

    def _drain(self) -> None:
        """On a results-lane thread: record batches until the queue is empty."""
        while True:
            with self._lock:
                if not self._queue:
                    self._drainers -= 1
                    return
                batch, self._queue = self._queue, []
            record = functools.partial(
                acts.finish_batch, outcomes=[p[0] for p in batch], identity=self.identity,
                scheduled=[p[1] for p in batch],
            )
            try:
                current = self.store.transact_sync(self.ns, record, lane=FACT, coalesced=True)
            except BaseException as err:
                _resolve(batch, [err] * len(batch))  # each caller retries on its own
                if not isinstance(err, Exception):
                    with self._lock:
                        self._drainers -= 1
                    raise
                continue
            _resolve(batch, current)



def _resolve(batch: list[_Pending], values: Sequence[object]) -> None:
    """Settle the callers' futures: one wake-up per event loop, not one per result (each wake-up
    writes to the loop's socket, which lets the busy loop take the interpreter lock back before
    this thread can go on to the next batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[bool], object]]] = {}
    for (_, _, loop, done), value in zip(batch, values, strict=True):
        by_loop.setdefault(loop, []).append((done, value))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:
            pass  # that loop has closed: nobody waits for these results any more


def _settle(settled: list[tuple[asyncio.Future[bool], object]]) -> None:
    for done, value in settled:
        if done.done():
            continue
        if isinstance(value, BaseException):
            done.set_exception(value)
        else:
            done.set_result(bool(value))
