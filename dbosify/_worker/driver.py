"""The run driver: one per run a worker owns; the part of Temporal's core that runs workflows.

It replays the run's history into activations for temporalio's own workflow
worker, then lives on: each batch of new input events (and admitted updates)
becomes one activation, and the commands that come back are applied in one
transaction together with a WorkflowTaskCompleted event that records exactly
which inputs that activation consumed. Replaying those boundaries gives the
workflow the same activations after a crash, on any worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import failed_cause_pb2 as WFT_CAUSE
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.query.v1 import message_pb2 as query_pb
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify import _activity_tasks as acts
from dbosify import _history as h
from dbosify import _runs
from dbosify._metrics import engine as engine_metrics
from dbosify._native import _core_logs as core_logs
from dbosify._store import Tx
from dbosify._store.clock import busy_task
from dbosify._worker import activations as A
from dbosify._worker import commands as commands_
from dbosify._worker import dormancy, history_limits, payload_limits, queries, tracking
from dbosify._worker.tracking import DriverState

if TYPE_CHECKING:
    from dbosify._worker.core import WorkerCore

_UNHANDLED = WFT_CAUSE.WORKFLOW_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE
logger = logging.getLogger("dbosify")
E = et

ACTIVITY_CANCEL_TRY = commands_.ACTIVITY_CANCEL_TRY
ACTIVITY_CANCEL_WAIT = commands_.ACTIVITY_CANCEL_WAIT


class RunClosed(Exception):
    pass


class Fenced(Exception):
    """This driver's claim is no longer the run's current one: another worker drives it now."""


class Dormant(Exception):
    """The run was evicted to make room in the cache, and gave up its claim (see dormancy.py)."""


@dataclass
class Snapshot:
    run: h.Run
    events: list[tuple[hist.HistoryEvent, int | None]]
    updates: list[upd_pb.Request]
    queries: list[tuple[str, query_pb.WorkflowQuery]]


class RunDriver:
    def __init__(self, core: WorkerCore, run_id: str, gen: int | None = None) -> None:
        self.core = core
        self.run_id = run_id
        # The claim this driver holds: (owner, generation). None for a closed run's query replay.
        self.owner = core.id
        self.gen = gen
        self.fenced = False
        self.ns = core.ns
        self.store = core.store
        self.state = DriverState(timer_floor=self.store.clock.timer_floor)
        self.events: list[tuple[hist.HistoryEvent, int | None]] = []
        self.history_seen = (0, 0)  # the last activation's history length and size
        self.in_cache = False
        self.evict_requested = False
        self.idle = False  # parked with nothing to do and no local activity: may be evicted
        self.sleep_requested = False  # the worker's cache asks this run to go dormant
        self.wake_written: float | None = None  # the run's `wake_at` as last read or written
        self.worked = False  # ran a workflow task or answered a query since it was claimed
        self.run: h.Run | None = None
        self.local_tasks: dict[int, asyncio.Task[None]] = {}
        # The replay's waiter and what it read, handed to the live loop.
        self._first_look: tuple[asyncio.Future[None], Snapshot] | None = None
        # The last workflow task's time: a query sees it as workflow.now(), as on Temporal.
        self.task_time: float | None = None
        self.task_build_id = ""  # the build id of the worker that completed the current task

    # -- entry ------------------------------------------------------------------------------

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

    def fence(self) -> None:
        """Another worker took this run over: stop at the next step, writing nothing more."""
        self.fenced = True
        self.store.hub.fire(f"{self.ns}\x00evict:{self.run_id}")

    def _owned(self, tx: Tx) -> h.Run | None:
        """The run, locked, if it is running; raises `Fenced` if this driver's claim is stale.

        Every transaction that writes for a run checks this first, under the run's row lock
        (SQLite: the database's write lock), so a worker that was presumed dead and resumed
        cannot write into a run that another worker now drives.
        """
        run = h.get_run(tx, self.run_id, lock=True)
        if run is None or not run.running:
            return None
        if self.gen is not None and (run.owner != self.owner or run.claim_gen != self.gen):
            raise engine_metrics.fenced(Fenced())
        return run

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

    async def _fail_queries_with(self, query_ids: list[str], message: str) -> None:
        await self.store.transact(self.ns, lambda tx: queries.record(tx, query_ids, {
            qid: queries.failed(message) for qid in query_ids
        }))

    # -- replay -------------------------------------------------------------------------------

    def _snapshot(self, tx: Tx, after: int) -> Snapshot:
        """The run, its events after ``after``, and its pending updates and queries."""
        run = h.get_run(tx, self.run_id)
        if run is None:
            raise RunClosed()
        if run.running and self.gen is not None and (
            run.owner != self.owner or run.claim_gen != self.gen
        ):
            # Taken over (this worker was presumed dead): stop before feeding the workflow
            # another owner's events; `_owned` refuses the writes, this saves the work.
            raise Fenced()
        # Queries and updates before events: each statement sees what committed before it
        # started, so every signal sent before a query or update was requested is among the
        # events read after it, and is applied before the query is answered or the update run.
        pending = [
            (r[0], query_pb.WorkflowQuery.FromString(bytes(r[1])))
            for r in tx.all(
                "SELECT query_id, request FROM queries WHERE run_id = %s AND state = 'pending'",
                (self.run_id,),
            )
        ]
        updates = [
            upd_pb.Request.FromString(bytes(r[0]))
            for r in tx.all(
                "SELECT request FROM updates WHERE run_id = %s AND state = 'requested'"
                " ORDER BY update_id",
                (self.run_id,),
            )
        ] if run.running else []
        events = h.load_events(tx, self.run_id, after)
        return Snapshot(run, events, updates, pending)

    async def _load(self, after: int) -> Snapshot:
        return await self.store.transact(self.ns, lambda tx: self._snapshot(tx, after))

    def _live_keys(self) -> list[str]:
        rid = self.run_id
        return [
            f"run:{rid}", f"u:{rid}", f"q:{rid}", f"closed:{rid}", f"evict:{rid}",
            f"shutdown:{self.core.id}",
        ]

    async def _replay(self, closed_ok: bool = False) -> None:
        """Rebuild the workflow from history, one recorded activation at a time.

        A worker replays a few runs at once, runs with waiting work first (`ReplayGate`): when it
        takes over hundreds of runs, those move on first instead of all finishing together.
        """
        priority = self.core._replay_priority.pop(self.run_id, 1)
        async with self.core.replay_gate.slot(priority):
            await self._replay_now(closed_ok)

    async def _replay_now(self, closed_ok: bool) -> None:
        self.state = DriverState(timer_floor=self.store.clock.timer_floor)
        if self._first_look is not None:
            self._first_look[0].cancel()
            self._first_look = None
        # Registered before the load, so `_live` can start from this snapshot without another look.
        fut = None if closed_ok else self.store.waiter(self.ns, self._live_keys())
        try:
            snap = await self._load(0)
        except BaseException:
            if fut is not None:
                fut.cancel()
            raise
        if fut is not None:
            self._first_look = (fut, Snapshot(snap.run, [], snap.updates, snap.queries))
        self.run = snap.run
        self.wake_written = snap.run.wake_at
        self.events = list(snap.events)
        st = self.state
        # Patches recorded anywhere in history are announced with the first activation.
        for ev, _ in self.events:
            if ev.event_type == E.EVENT_TYPE_MARKER_RECORDED:
                m = ev.marker_recorded_event_attributes
                if m.marker_name == A.PATCH_MARKER and "patch_data" in m.details:
                    pid = m.details["patch_data"].payloads[0].data.decode().strip('"')
                    if pid not in st.patches:
                        st.patches.append(pid)
        started_times = {
            e.event_id: e.event_time.ToNanoseconds() / 1e9
            for e, _ in self.events
            if e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_STARTED
        }
        for ev, seq in self.events:
            if ev.event_type != E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                continue
            consumed = seq or 0
            inputs = [
                (e, s)
                for e, s in self.events
                if st.consumed < e.event_id <= consumed and A.is_input(e)
            ]
            updates = []
            for e, s in self.events:
                if (
                    e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
                    and s == ev.event_id
                ):
                    updates.append(
                        (e.workflow_execution_update_accepted_event_attributes.accepted_request, False)
                    )
            flags = list(ev.workflow_task_completed_event_attributes.sdk_metadata.lang_used_flags)
            tracking.inputs(self.state, inputs)
            jobs = A.jobs_for(
                self.run_id, inputs, updates, st.patches, st.scheduled, st.activity_cancelled,
                st.nexus_started,
            )
            # workflow.now() is the task's started time; its commands took effect at its completion
            # (the same moment in histories written before the two were told apart).
            done = ev.event_time.ToNanoseconds() / 1e9
            wft = ev.workflow_task_completed_event_attributes
            ts = self.task_time = started_times.get(wft.scheduled_event_id + 1, done)
            self.task_build_id = _build_id_of(wft)
            st.flags.update(flags)
            completion = await self._activate_task(jobs, ts, replaying=True, history_length=consumed)
            self._check_completion(completion)
            tracking.commands(st, completion, done)
            st.consumed = consumed
        # Timers and activities recorded in history but started after the last boundary
        # (i.e. by this run's last live activation) are tracked from their events.
        tracking.history_outputs(st, self.events)

    # -- live ----------------------------------------------------------------------------------

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
                if inputs or snap.updates:
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
            st.scheduled, st.activity_cancelled, st.nexus_started,
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
        except commands_.BadCommand as bad:
            await self._record_task_failure(failure_pb.Failure(message=bad.message), cause=bad.cause)
            raise WorkflowTaskFailed(bad.message) from None
        st.consumed = consumed
        if any(c.HasField(f) for c in completion.successful.commands for f in A.CLOSING_COMMANDS):  # type: ignore
            raise RunClosed()
        self._start_pending_local_activities()
        return snap

    # -- activations ---------------------------------------------------------------------------

    async def _activate_task(
        self, jobs: list[wa.WorkflowActivationJob], ts: float, *, replaying: bool, history_length: int
    ) -> wcomp.WorkflowActivationCompletion:
        """One workflow task: activations until Core would have nothing left to resolve locally.

        Returns one completion whose commands are everything the task sends to the server.
        """
        kept: list[wc.WorkflowCommand] = []
        flags: set[int] = set()
        while True:
            completion = await self._activate(jobs, ts, replaying=replaying, history_length=history_length)
            if completion.HasField("failed"):
                return completion
            flags.update(completion.successful.used_internal_flags)
            jobs = A.elide_unsent(completion.successful.commands, kept)
            if not jobs:
                break
        out = wcomp.WorkflowActivationCompletion(run_id=self.run_id)
        out.successful.commands.extend(kept)
        out.successful.used_internal_flags.extend(sorted(flags))
        return out

    async def _activate(
        self, jobs: list[wa.WorkflowActivationJob], ts: float, *, replaying: bool, history_length: int
    ) -> wcomp.WorkflowActivationCompletion:
        # Temporal counts the workflow task's own scheduled and started events too.
        length = history_length + 2
        size = sum(e.ByteSize() for e, _ in self.events if e.event_id <= history_length)
        act = wa.WorkflowActivation(
            run_id=self.run_id,
            is_replaying=replaying,
            history_length=length,
            history_size_bytes=size,
            available_internal_flags=sorted(self.state.flags),
        )
        self.history_seen = (length, size)  # for the history limits (history_limits.over)
        limit = suggest_continue_as_new_after()
        if limit and length >= limit:
            act.continue_as_new_suggested = True
            act.suggest_continue_as_new_reasons.append(1)  # type: ignore[arg-type]  # TOO_MANY_HISTORY_EVENTS
        act.timestamp.FromNanoseconds(int(ts * 1e9))
        # workflow.info().get_current_build_id(): the worker's for a new task; on replay and for
        # queries, that of the worker that completed the last task, as Core reports it.
        act.deployment_version_for_current_task.build_id = self.task_build_id
        act.jobs.extend(jobs)
        self.in_cache = True
        if self.gen is not None:
            self.core.cache.touch(self.run_id)
        return await self.core.activate(act)

    def _check_completion(self, completion: wcomp.WorkflowActivationCompletion) -> None:
        if completion.HasField("failed"):
            raise WorkflowTaskFailed(completion.failed.failure.message)

    async def _evict(self, message: str, reason: int = 0) -> None:
        if not self.in_cache:
            return
        self.in_cache = False
        act = wa.WorkflowActivation(run_id=self.run_id)
        act.timestamp.FromNanoseconds(int(self.store.clock.now() * 1e9))
        act.jobs.add(remove_from_cache=wa.RemoveFromCache(message=message, reason=reason))  # type: ignore[arg-type]
        for task in self.local_tasks.values():
            task.cancel()
        self.local_tasks.clear()
        try:
            await self.core.activate(act)
        except Exception:
            logger.exception("dbosify: eviction of run %s failed", self.run_id)

    def _terminate(self, tx: Tx, reason: str) -> None:
        run = self._owned(tx)
        if run is not None:
            _runs.terminate(tx, run, reason, "")

    async def _record_task_failure(self, failure: failure_pb.Failure, cause: int = _UNHANDLED) -> None:
        core_logs.emit(
            self.core.runtime, logging.WARNING, core_logs.WORKFLOW_TARGET, "Failing workflow task",
            run_id=self.run_id, failure=failure.message, cause=cause,
        )
        def fn(tx: Tx) -> None:
            run = self._owned(tx)
            if run is None:
                return
            if run.wft_attempt == 0:
                h.append(
                    tx, self.run_id, E.EVENT_TYPE_WORKFLOW_TASK_FAILED,
                    hist.WorkflowTaskFailedEventAttributes(
                        failure=failure, identity=self.core.identity, cause=cause  # type: ignore
                    ),
                )
            tx.execute(
                "UPDATE executions SET wft_failure = %s, wft_attempt = wft_attempt + 1 WHERE run_id = %s",
                (failure.SerializeToString(), self.run_id),
            )

        await self.store.transact(self.ns, fn)

    # -- queries ---------------------------------------------------------------------------------

    async def _answer_queries(self, pending: queries.Pending) -> None:
        completion = await self._activate(
            queries.jobs(pending),
            self.task_time if self.task_time is not None else self.store.clock.now(),
            replaying=False, history_length=self.state.consumed,
        )
        results = queries.answers(pending, completion)
        ids = [qid for qid, _ in pending]
        pool = self.core.loop_pool
        if pool.usable():  # one statement from this loop: the caller waits on it
            fence = (self.owner, self.gen) if self.gen is not None else None
            if not await queries.record_direct(pool, self.store, self.ns, self.run_id, fence, ids, results):
                raise Fenced()  # a stale driver's state may be behind: it answers nothing
            return

        def fn(tx: Tx) -> None:
            if self.gen is not None:
                self._owned(tx)  # a stale driver's state may be behind: it answers nothing
            queries.record(tx, ids, results)

        await self.store.transact(self.ns, fn)

    # -- commands ----------------------------------------------------------------------------------

    async def _apply(
        self,
        completion: wcomp.WorkflowActivationCompletion,
        ts: float,
        consumed: int,
        updates: list[upd_pb.Request],
        last_seen: int,
    ) -> Snapshot:
        st = self.state
        commands = A.closing_last(completion.successful.commands)
        delivered = {u.meta.update_id: u for u in updates}
        scheduled_now: dict[int, Any] = {}
        closing = any(c.HasField(f) for c in commands for f in A.CLOSING_COMMANDS)  # type: ignore
        wrote: list[float | None] = []
        took_effect: list[float] = []
        eager_budget = 0 if closing else self.core.eager_activity_budget()
        eager: list[acts.Claimed] = []

        def fn(tx: Tx) -> Snapshot:
            eager.clear()  # (a retried attempt of this transaction starts over)
            run = self._owned(tx)
            if run is None:
                raise RunClosed()
            # As on Temporal, the task's completion and the events of its commands are stamped
            # when they take effect, and its timers count from then; workflow.now() stays the
            # task's start (its scheduled and started events).
            done = self.store.clock.now()
            took_effect[:] = [done]
            if tx.commit_may_have_landed and tx.one(
                "SELECT 1 FROM history WHERE run_id = %s AND event_id > %s AND event_type = %s",
                (self.run_id, last_seen, E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
            ):
                # This task's first attempt committed before its connection was lost: replay.
                raise WorkflowTaskFailed("workflow task already recorded")
            # The task's scheduled/started events, stamped with the activation's time (workflow.now()).
            sched = hist.WorkflowTaskScheduledEventAttributes(attempt=max(run.wft_attempt, 0) + 1)
            sched.task_queue.name = run.task_queue
            sched.start_to_close_timeout.FromSeconds(10)
            sched_id = h.append(tx, self.run_id, E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, sched, at=ts) or 0
            h.append(
                tx, self.run_id, E.EVENT_TYPE_WORKFLOW_TASK_STARTED,
                hist.WorkflowTaskStartedEventAttributes(scheduled_event_id=sched_id, identity=self.core.identity),
                at=ts,
            )
            # started_event_id: the last event this workflow task consumed (replay cuts history there);
            # it differs from the started event's id only when events arrived during the task.
            wft = hist.WorkflowTaskCompletedEventAttributes(
                identity=self.core.identity, started_event_id=consumed, scheduled_event_id=sched_id
            )
            if self.core.build_id:
                wft.worker_version.build_id = self.core.build_id
            wft.sdk_metadata.lang_used_flags.extend(sorted(st.flags | set(completion.successful.used_internal_flags)))
            wft_id = h.append(tx, self.run_id, E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, wft, seq=consumed, at=done)
            assert wft_id is not None
            if run.wft_attempt:
                tx.execute(
                    "UPDATE executions SET wft_failure = NULL, wft_attempt = 0 WHERE run_id = %s",
                    (self.run_id,),
                )
            for uid in delivered:
                tx.execute(
                    "UPDATE updates SET state = 'delivered' WHERE run_id = %s AND update_id = %s AND state = 'requested'",
                    (self.run_id, uid),
                )
            applying = commands_.Applying(
                self, tx, run, wft_id, done, delivered, scheduled_now, eager_budget=eager_budget, eager=eager
            )
            for cmd in commands:
                commands_.apply(applying, cmd)
            # The run's next due time, kept for a takeover (see dormancy.py); written when it moves.
            wake = None if closing else dormancy.wake_after_commands(st, commands, done, run.run_deadline)
            if wake != self.wake_written and not closing:
                tx.execute("UPDATE executions SET wake_at = %s WHERE run_id = %s", (wake, self.run_id))
            wrote[:] = [wake]
            # This driver reads what it wrote right here; waking itself would cost another look.
            tx.keys_to_fire.discard(f"run:{self.run_id}")
            return self._snapshot(tx, last_seen)

        try:
            snap = await self.store.transact(self.ns, fn)
        except BaseException:
            if eager:  # an attempt whose commit went unseen may have handed them to this worker
                self.core.recheck_owned_attempts()
            raise
        finally:
            self.core.release_slots(eager_budget)
        if eager:
            self.core.adopt_eager(eager)
        if wrote and not closing:
            self.wake_written = wrote[0]
        st.scheduled.update(scheduled_now)
        tracking.commands(st, completion, took_effect[0])
        return snap

    # -- local activities ------------------------------------------------------------------------

    def _start_pending_local_activities(self) -> None:
        for seq, la in list(self.state.local_pending.items()):
            if seq not in self.local_tasks and seq not in self.state.local_done:
                self.local_tasks[seq] = busy_task(self.store.clock, functools.partial(self._run_local, la))

    async def _run_local(self, la: wc.ScheduleLocalActivity) -> None:
        assert self.run is not None
        clock = self.store.clock
        attempt = la.attempt or 1
        scheduled = clock.now()
        while True:
            outcome = await self.core.run_local_activity(self.run, la, attempt, scheduled)
            kind = outcome.WhichOneof("status")
            if kind == "failed":
                policy = la.retry_policy
                delay = acts._retry_delay(policy, attempt, outcome.failed.failure)
                s2c = la.schedule_to_close_timeout.ToNanoseconds() / 1e9 if la.HasField("schedule_to_close_timeout") else 0
                if delay is not None and (not s2c or clock.now() + delay < scheduled + s2c):
                    await clock.sleep_until(clock.now() + delay)
                    attempt += 1
                    continue
            break
        m = hist.MarkerRecordedEventAttributes(marker_name=A.LOCAL_ACTIVITY_MARKER)
        if kind == "completed":
            m.details["data"].payloads.add().CopyFrom(outcome.completed.result)
        elif kind == "failed":
            wrapped = failure_pb.Failure(message="Local Activity task failed")
            wrapped.activity_failure_info.activity_id = la.activity_id
            wrapped.activity_failure_info.activity_type.name = la.activity_type
            wrapped.cause.CopyFrom(outcome.failed.failure)
            m.failure.CopyFrom(wrapped)
        else:
            m.failure.CopyFrom(outcome.cancelled.failure)
        seq = la.seq

        def fn(tx: Tx) -> None:
            if self._owned(tx) is None:
                return
            h.append(
                tx, self.run_id, E.EVENT_TYPE_MARKER_RECORDED, m, seq=seq, dedup=f"la:{seq}",
                metadata=self.state.local_meta.get(seq),
            )

        try:
            await self.store.transact(self.ns, fn)
        except Fenced:
            self.fence()  # the driver notices at its next step
        self.local_tasks.pop(seq, None)


def _build_id_of(wft: hist.WorkflowTaskCompletedEventAttributes) -> str:
    return wft.deployment_version.build_id or wft.worker_version.build_id


class WorkflowTaskFailed(Exception):
    pass


SUGGEST_CONTINUE_AS_NEW_ENV = "DBOSIFY_SUGGEST_CONTINUE_AS_NEW_EVENTS"
_suggest: list[int] = []


def suggest_continue_as_new_after() -> int:
    """History length from which activations suggest continue-as-new (Temporal's default: 4096)."""
    import os

    if _suggest:
        return _suggest[0]
    try:
        return int(os.environ.get(SUGGEST_CONTINUE_AS_NEW_ENV, "4096"))
    except ValueError:
        return 4096


def set_suggest_continue_as_new_after(n: int) -> None:
    _suggest[:] = [n]
