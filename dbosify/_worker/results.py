"""Activity results, group-committed: what finishes together is recorded in one transaction.

A worker's activities tend to finish in bursts. Recording each in its own transaction makes the
last of a burst wait behind the others, and an attempt whose result is not yet durable when the
worker dies is run again. Here each result joins a queue; up to one drainer per thread of the
store's results lane (`FACT`) takes everything queued and records it in one transaction, so a
result is durable within a few milliseconds of its return even under load.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from dbosify import _activity_tasks as acts
from dbosify._store import Store
from dbosify._store.store import FACT, LANES


@dataclass
class _Pending:
    outcome: acts.Outcome
    done: asyncio.Future[bool]


class ResultRecorder:
    def __init__(self, store: Store, namespace: str, identity: str) -> None:
        self.store = store
        self.ns = namespace
        self.identity = identity
        self._queue: list[_Pending] = []
        self._drainers = 0

    async def record(self, outcome: acts.Outcome) -> bool:
        """Record one attempt's outcome; False if the attempt is no longer current."""
        pending = _Pending(outcome, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if self._drainers < LANES[FACT]:
            self._drainers += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await pending.done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                record = functools.partial(
                    acts.finish_batch, outcomes=[p.outcome for p in batch], identity=self.identity
                )
                try:
                    current = await self.store.transact(self.ns, record, lane=FACT)
                except Exception as err:
                    for p in batch:
                        if not p.done.done():
                            p.done.set_exception(err)  # each caller retries on its own
                    continue
                for p, ok in zip(batch, current, strict=True):
                    if not p.done.done():
                        p.done.set_result(ok)
        finally:
            self._drainers -= 1
