"""The run driver: one per run a worker owns; the part of Temporal's core that runs workflows.

It replays the run's history into activations for temporalio's own workflow
worker, then lives on: each batch of new input events (and admitted updates)
becomes one activation, and the commands that come back are applied in one
transaction together with a WorkflowTaskCompleted event that records exactly
which inputs that activation consumed. Replaying those boundaries gives the
workflow the same activations after a crash, on any worker.

`RunDriver` is built from one module per seam:

- `driver_base`: its state, the snapshot it loads, the claim it checks, activations and queries;
- `driver_replay`: replaying the history, one recorded activation at a time;
- `live_loop`: waiting for new input and turning each batch into one activation;
- `workflow_task`: the workflow task's transaction that applies the activation's commands;
- `local_activities`: running local activities and recording their markers.

This module drives a run through them (`drive`) and answers queries on closed runs.
"""

from __future__ import annotations

import asyncio

from temporalio.api.history.v1 import message_pb2 as hist

from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._store import Tx
from dbosify._worker import dormancy
from dbosify._worker.activations import ACTIVITY_CANCEL_TRY, ACTIVITY_CANCEL_WAIT
from dbosify._worker.driver_base import (
    Dormant,
    E,
    Fenced,
    RunClosed,
    WorkflowTaskFailed,
    logger,
    set_suggest_continue_as_new_after,
    suggest_continue_as_new_after,
)
from dbosify._worker.driver_replay import Replaying
from dbosify._worker.interfaces import Snapshot
from dbosify._worker.live_loop import LiveLoop

__all__ = [
    "ACTIVITY_CANCEL_TRY", "ACTIVITY_CANCEL_WAIT", "Dormant", "Fenced", "RunClosed", "RunDriver",
    "Snapshot", "WorkflowTaskFailed", "set_suggest_continue_as_new_after",
    "suggest_continue_as_new_after",
]

class RunDriver(LiveLoop, Replaying):
    async def drive(self) -> None:
        """Drive the run until it closes, is taken over, or the worker shuts down (run it as a
        participant of the store's clock: busy except while waiting for a wake-up or due time)."""
        backoff = 0.0
        while not self.core.shutting_down:
            try:
                if self.fenced:
                    raise Fenced()
                if backoff:
                    # A failing workflow task is retried with backoff, but the run's timeout still
                    # applies, and shutdown or new events end the wait early.
                    if await self._close_if_timed_out(backoff):
                        return
                await self._replay()
                await self._live()
                return
            except RunClosed:
                await self._evict("workflow closed")
                return
            except Dormant:
                await self._evict(
                    "evicted to make room in the workflow cache (max_cached_workflows)",
                    reason=dormancy.CACHE_FULL,
                )
                return
            except Fenced:
                logger.info(
                    "dbosify: run %s is driven by another worker now (this one was presumed dead);"
                    " evicting it here", self.run_id,
                )
                await self._evict("run taken over by another worker")
                return
            except WorkflowTaskFailed:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                await self._evict("workflow task failed")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("dbosify: driver for run %s failed; retrying", self.run_id)
                backoff = min(max(backoff * 2, 0.5), 10.0)
                await self._evict("driver error")
        await self._evict("worker shutting down")

    async def _close_if_timed_out(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds; True if the run timed out (and is now closed as such).

        The backoff is real time, and the driver stays busy meanwhile: a virtual clock does not
        skip while a workflow task keeps failing (the run's timeout still ends it).
        """
        run = self.run
        deadline = run.run_deadline if run is not None else None
        clock = self.store.clock
        fut = self.store.waiter(self.ns, [f"shutdown:{self.core.id}", f"closed:{self.run_id}"])
        try:
            await self.store.wait_future(
                fut, wait if deadline is None else max(0.0, min(wait, deadline - clock.now()))
            )
        finally:
            fut.cancel()
        if deadline is None or clock.now() < deadline:
            return False

        def fn(tx: Tx) -> bool:
            cur = self._owned(tx)
            if cur is None:
                return True
            _runs.close_run(
                tx, cur, h.TIMED_OUT, E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
                hist.WorkflowExecutionTimedOutEventAttributes(retry_state=3),  # type: ignore[arg-type]
            )
            return True

        return await self.store.transact(self.ns, fn)

    async def answer_closed_queries(self) -> None:
        """Replay a closed run in full, answer its pending queries, then evict it."""
        try:
            await self._replay(closed_ok=True)
            snap = await self._load(self.events[-1][0].event_id if self.events else 0)
            if snap.queries:
                await self._answer_queries(snap.queries)
        except WorkflowTaskFailed as err:
            snap = await self._load(0)
            await self._fail_queries_with([q for q, _ in snap.queries], str(err))
        finally:
            await self._evict("query on a closed run answered")
