"""The live loop: after replay, a driver waits for its run's wake-ups (new events, updates, queries,
due timers and timeouts, eviction) and turns each batch of new input into one activation, whose
completion is applied as one workflow task (`WorkflowTask._apply`).

It never polls: it sleeps on the store's wake-ups and the next due time (timers, activity
timeouts, the run's deadline), and fires what is due in one transaction (`_fire_due`).
"""

from __future__ import annotations

import asyncio

from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.update.v1 import message_pb2 as upd_pb

from dbosify._engine import activity_tasks as acts
from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._store import Tx
from dbosify._worker import activations as A
from dbosify._worker import (
    dormancy,
    history_limits,
    nexus_jobs,
    payload_limits,
    tracking,
    versioning,
)
from dbosify._worker.applying import BadCommand
from dbosify._worker.driver_base import (
    _UNHANDLED,
    Dormant,
    E,
    Fenced,
    RunClosed,
    WorkflowTaskFailed,
)
from dbosify._worker.interfaces import Snapshot
from dbosify._worker.local_activities import LocalActivities
from dbosify._worker.workflow_task import WorkflowTask


class LiveLoop(WorkflowTask, LocalActivities):
    """Waiting for the run's new input and turning each batch into an activation."""

    async def _live(self) -> None:
        st = self.state
        self._start_pending_local_activities()
        fut: asyncio.Future[None] | None = None
        fresh: Snapshot | None = None  # read at the end of our own last transaction (or the replay's)
        if self._first_look is not None:
            fut, fresh = self._first_look
            self._first_look = None
        try:
            while True:
                if self.core.shutting_down:
                    return
                if self.fenced:
                    raise Fenced()
                if self.evict_requested:
                    self.evict_requested = False
                    raise WorkflowTaskFailed("eviction requested")
                if fut is None or fut.done():
                    # Something happened since the last look (or there was none): register, then look.
                    if fut is not None:
                        fut.cancel()
                    fut = self.store.waiter(self.ns, self._live_keys())
                    fresh = None
                    if self.sleep_requested and not self.local_tasks and self.run is not None:
                        # Asked to make room while parked: the sleep's transaction is the look.
                        now = self.store.clock.now()
                        wake = dormancy.wake_at(st, self.run.run_deadline, now)
                        if wake is None or wake > now:
                            fresh = await self._sleep(self.run.run_deadline, now)
                last_seen = self.events[-1][0].event_id if self.events else 0
                snap = fresh if fresh is not None else await self._load(last_seen)
                fresh = None
                self.run = snap.run
                self.events.extend(snap.events)
                if not snap.run.running:
                    raise RunClosed()  # pending queries go to the closed-run replay
                inputs = [
                    (e, s) for e, s in self.events if e.event_id > st.consumed and A.is_input(e)
                ]
                if all(nexus_jobs.quiet(st.nexus, e, s) for e, s in inputs):
                    inputs = []  # none makes a job: they go with the next workflow task
                if inputs or snap.updates:
                    # A versioned worker first checks the run is still routed to it (versioning.py).
                    self.target_version_changed = await versioning.check(self)
                    # The waiter stays registered: the task's transaction ends with a fresh look, and
                    # only what others commit after the waiter was registered needs another.
                    fresh = await self._live_activation(inputs, snap.updates, last_seen=self.events[-1][0].event_id)
                    self.worked = True
                    continue
                if snap.queries:
                    fut.cancel()
                    await self._answer_queries(snap.queries)
                    self.worked = True
                    continue
                now = self.store.clock.now()
                if self.worked and not self.core.cache.capacity and not self.local_tasks:
                    # No cache: evicted after every workflow task or query, even with a timer due.
                    fresh = await self._sleep(snap.run.run_deadline, now)
                    continue
                deadline = min(st.timers.values(), default=None)
                run_deadline = snap.run.run_deadline
                if run_deadline is not None and (deadline is None or run_deadline < deadline):
                    deadline = run_deadline
                queued = min(st.queued_checks.values(), default=None)
                if queued is not None and queued <= now:
                    await self._expire_queued(now)
                    continue
                if queued is not None and (deadline is None or queued < deadline):
                    deadline = queued
                if deadline is not None and deadline <= now:
                    # The waiter stays registered (as for a workflow task): the firing
                    # transaction ends with a fresh look.
                    fresh = await self._fire_due(now, last_seen=self.events[-1][0].event_id if self.events else 0)
                    if fresh is None:
                        fut.cancel()
                    continue
                self.idle = not self.local_tasks
                try:
                    self.core._driver_idle(self)
                    if self.sleep_requested and self.idle:
                        self.idle = False
                        fresh = await self._sleep(snap.run.run_deadline, now)
                        continue  # something arrived meanwhile: handle it, then try again
                    await self.store.wait_until(fut, deadline)
                finally:
                    self.idle = False
                if not fut.done():
                    # A deadline passed, and nothing was committed for this run meanwhile (its
                    # waiter is still registered): what the last look saw still holds.
                    fresh = Snapshot(snap.run, [], [], [])
        finally:
            if fut is not None:
                fut.cancel()

    async def _sleep(self, run_deadline: float | None, now: float) -> Snapshot:
        """Give up the claim (the run becomes dormant) and raise `Dormant`; or, if something
        arrived since the last look, return the fresh snapshot instead."""
        last_seen = self.events[-1][0].event_id if self.events else 0
        wake = dormancy.wake_at(self.state, run_deadline, now)
        snap = await self.store.transact(
            self.ns, lambda tx: dormancy.put_to_sleep(tx, self, last_seen, wake)
        )
        if snap is not None:
            return snap  # type: ignore[no-any-return]
        self.core._run_sleeps(wake)
        raise Dormant()

    async def _expire_queued(self, now: float) -> None:
        """Time out activities still waiting in their queue past schedule-to-start/-close.

        An outcome appended here wakes this driver like any other.
        """
        st = self.state
        due = [seq for seq, at in st.queued_checks.items() if at <= now]

        def fn(tx: Tx) -> dict[int, float | None]:
            if self._owned(tx) is None:
                return {}
            return {seq: acts.expire_if_queued(tx, self.run_id, seq, now) for seq in due}

        for seq, later in (await self.store.transact(self.ns, fn)).items():
            if later is None:
                st.queued_checks.pop(seq, None)
            else:
                st.queued_checks[seq] = later

    async def _fire_due(self, now: float, last_seen: int) -> Snapshot | None:
        """Append the due timers' TimerFired events (or time the run out); returns the run as
        read at the end of that transaction, so the workflow task that follows needs no look of
        its own (None: the run is not this driver's to write)."""
        st = self.state
        due = sorted(seq for seq, at in st.timers.items() if at <= now)
        run_deadline = self.run.run_deadline if self.run else None

        def fn(tx: Tx) -> Snapshot | None:
            run = self._owned(tx)
            if run is None:
                return None
            if run_deadline is not None and run_deadline <= now:
                _runs.close_run(
                    tx, run, h.TIMED_OUT, E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
                    hist.WorkflowExecutionTimedOutEventAttributes(retry_state=3),  # type: ignore
                )
                return None
            for seq in due:
                h.append(
                    tx, self.run_id, E.EVENT_TYPE_TIMER_FIRED,
                    hist.TimerFiredEventAttributes(timer_id=str(seq)),
                    seq=seq, dedup=f"timer:{seq}",
                )
            # This driver reads what it wrote right here; waking itself would cost another look.
            tx.keys_to_fire.discard(f"run:{self.run_id}")
            return self._snapshot(tx, last_seen)

        snap = await self.store.transact(self.ns, fn)
        for seq in due:
            st.timers.pop(seq, None)
        return snap

    async def _live_activation(
        self, inputs: list[tuple[hist.HistoryEvent, int | None]], updates: list[upd_pb.Request],
        last_seen: int,
    ) -> Snapshot:
        """Run one workflow task; returns the run as read at the end of its transaction."""
        st = self.state
        consumed = max([e.event_id for e, _ in inputs] + [st.consumed])
        tracking.inputs(self.state, inputs)
        jobs = A.jobs_for(
            self.run_id, inputs, [(u, True) for u in updates],
            st.patches if any(e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED for e, _ in inputs) else [],
            st.scheduled, st.activity_cancelled, st.nexus,
        )
        ts = self.task_time = self.store.clock.now()
        self.task_build_id = self.core.build_id
        completion = await self._activate_task(jobs, ts, replaying=False, history_length=consumed)
        if completion.HasField("failed"):
            await self._record_task_failure(
                completion.failed.failure, completion.failed.force_cause or _UNHANDLED
            )
            raise WorkflowTaskFailed(completion.failed.failure.message)
        commands = list(completion.successful.commands)
        over = history_limits.over(self, consumed)
        if over is not None:  # past limit.historySize/historyCount.error: terminated, as on Temporal
            await self.store.transact(self.ns, lambda tx: history_limits.terminate(tx, self, over, ts))
            raise RunClosed()
        try:
            payload_limits.check(
                commands, warn_at=self.core.payloads_warn_size, error_at=self.store.limits_for(self.ns).blob_error,
                error_enabled=self.core.payload_error_limit, runtime=self.core.runtime, run_id=self.run_id,
            )
        except payload_limits.TooLarge as big:
            reason = big.message
            if big.terminate:  # what the server does with such a command
                await self.store.transact(self.ns, lambda tx: self._terminate(tx, reason))
                raise RunClosed() from None
            await self._record_task_failure(failure_pb.Failure(message=big.message), cause=big.cause)
            raise WorkflowTaskFailed(big.message) from None
        try:
            snap = await self._apply(completion, ts, consumed, updates, last_seen)
        except BadCommand as bad:
            await self._record_task_failure(failure_pb.Failure(message=bad.message), cause=bad.cause)
            raise WorkflowTaskFailed(bad.message) from None
        st.consumed = consumed
        if any(c.HasField(f) for c in completion.successful.commands for f in A.CLOSING_COMMANDS):  # type: ignore
            raise RunClosed()
        self._start_pending_local_activities()
        return snap
