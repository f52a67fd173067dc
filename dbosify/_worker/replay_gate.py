"""Which claimed runs replay first: a worker replays a few runs at a time, waiting work first.

When a worker takes over hundreds of runs, replaying is CPU-bound. Runs whose last event is an
input (an activity result, a fired timer, a signal: work that waits for a workflow task) go
before runs that only wait, so the runs that matter move on first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.api.enums.v1 import event_type_pb2 as et

from dbosify._store import Tx
from dbosify._worker import activations as A

URGENT = 0
IDLE = 1


class ReplayGate:
    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), fut))
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release()  # it had been handed the slot
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


def rank(urgency: int, task_priority: int = 3) -> int:
    """The order of a run in the gate: runs with waiting work first, then by the run's priority
    key (Temporal's Priority: 1 first), then first come."""
    return urgency * 100 + task_priority


def priorities(tx: Tx, run_ids: list[str]) -> dict[str, int]:
    """For freshly claimed runs, their `rank`: URGENT if the last event is one a workflow task
    would consume, and their priority key.

    One statement for the whole claim, whatever its size.
    """
    marks = ", ".join(["%s"] * len(run_ids))
    rows = tx.all(
        "SELECT e.run_id, (SELECT h.event_type FROM history h WHERE h.run_id = e.run_id"
        f" ORDER BY h.event_id DESC LIMIT 1), e.task_priority FROM executions e WHERE e.run_id IN ({marks})",
        run_ids,
    )
    urgent_kinds = A.INPUT_EVENT_TYPES | {
        et.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, et.EVENT_TYPE_MARKER_RECORDED
    }
    return {
        str(run_id): rank(URGENT if (kind is not None and int(kind) in urgent_kinds) else IDLE, int(prio))
        for run_id, kind, prio in rows
    }
