"""The activity half of a worker's core: polling activity tasks, their timeouts and results.

`ActivitySide` is mixed into `core.WorkerCore`: it claims activity attempts of the task queue
(woken by notifications), tracks each running attempt with a watchdog for its timeouts, delivers
cancellations, records results (group-committed, see `results`) and heartbeats, and runs local
activities through temporalio's activity worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.bridge.proto import core_interface_pb2 as ci
from temporalio.bridge.proto.activity_result import activity_result_pb2 as ar
from temporalio.bridge.proto.activity_task import activity_task_pb2 as at
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify._engine import activity_tasks as acts
from dbosify._engine import history as h
from dbosify._engine import limits
from dbosify._metrics import engine as engine_metrics
from dbosify._metrics.core import WorkerMetrics
from dbosify._store import Store, Tx
from dbosify._store.clock import busy_task
from dbosify._worker.rate_limit import LocalRate
from dbosify._worker.results import ResultRecorder

logger = logging.getLogger("dbosify")

CANCEL_REASON_CANCELLED = 1
CANCEL_REASON_TIMED_OUT = 2
CANCEL_REASON_WORKER_SHUTDOWN = 3
CANCEL_REASON_PAUSED = 4
CANCEL_REASON_RESET = 5


class PollShutdownError(Exception):
    """Raised by polls once the worker is shutting down (temporalio expects this type)."""


class _RunningActivity:
    def __init__(self, claimed: acts.Claimed, now: float) -> None:
        self.claimed = claimed
        self.started = now
        self.last_heartbeat = self.started
        self.cancel_sent = False
        self.cancel_reason = 0
        self.watchdog: asyncio.Task[None] | None = None
        self.local_future: asyncio.Future[ar.ActivityExecutionResult] | None = None
        # The latest heartbeat's write: the attempt's outcome is recorded after it, so that a
        # retry sees the details the attempt reported last.
        self.heartbeat_write: asyncio.Task[None] | None = None
        self.heartbeats_in_transit = 0  # reported from another thread, not yet on the worker's loop



class ActivitySide:
    """What `WorkerCore` does for activities (its state is set up by `WorkerCore.__init__`)."""

    store: Store
    loop: asyncio.AbstractEventLoop
    ns: str
    tq: str
    id: str
    identity: str
    shutting_down: bool
    enable_activities: bool
    metrics: WorkerMetrics | None  # Core's metrics, when the runtime has a meter
    _eager_limit: int
    _recheck_owned: bool
    _reserved: int
    max_activities: int
    graceful_shutdown: float
    _activity_queue: asyncio.Queue[at.ActivityTask] | None
    _claim_waiter: asyncio.Future[None] | None
    _cancel_waiter: asyncio.Future[None] | None
    _queue_idle: bool
    _queue_next_at: float | None
    _running: dict[bytes, _RunningActivity]
    _finishing: set[tuple[str, int]]
    _results: ResultRecorder
    _local_rate: LocalRate | None  # max_activities_per_second
    _queue_rate: float | None  # max_task_queue_activities_per_second

    def _ensure_started(self) -> None:
        raise NotImplementedError

    def _poller_running(self, part: str) -> None:
        raise NotImplementedError

    async def _registered(self) -> None:
        raise NotImplementedError

    async def _cancel_after_grace(self) -> None:
        await asyncio.sleep(self.graceful_shutdown)
        for token in list(self._running):
            self._send_cancel(token, CANCEL_REASON_WORKER_SHUTDOWN)

    async def poll_activity_task(self) -> bytes:
        # Busy for a virtual clock except while waiting for a wake-up or a retry's due time.
        with self.store.clock.participant():
            self._poller_running("activities")
            return await self._poll_activity_task()

    async def _poll_activity_task(self) -> bytes:
        self._ensure_started()
        assert self._activity_queue is not None
        t0 = time.perf_counter()
        while True:
            if not self._activity_queue.empty():
                task = self._activity_queue.get_nowait()
                if self.metrics:
                    self.metrics.activity_task(task, t0)
                return bytes(task.SerializeToString())
            if self.shutting_down:
                if not self._running:
                    for waiter in (self._claim_waiter, self._cancel_waiter):
                        if waiter is not None:
                            waiter.cancel()
                    raise PollShutdownError()
                # Keep delivering cancels until the running attempts have finished.
                done_fut = self.store.hub.waiter(
                    [f"{self.ns}\x00local:{self.id}", f"{self.ns}\x00slot:{self.id}"]
                )
                try:
                    if self._activity_queue.empty() and self._running:
                        await asyncio.wait_for(asyncio.shield(done_fut), 1.0)
                except asyncio.TimeoutError:
                    pass
                finally:
                    done_fut.cancel()
                continue
            try:
                if self._cancel_waiter is None or self._cancel_waiter.done():
                    # Registered before the check, so no cancel request can fall in between.
                    self._cancel_waiter = self.store.waiter(self.ns, [f"actcancel:{self.id}"])
                    await self._check_cancels()
                    if not self._activity_queue.empty():
                        continue
                fut = self._claim_waiter
                if fut is None or fut.done() or not self._queue_idle:
                    # Something may be ready: register for wake-ups first, then look.
                    if fut is not None:
                        fut.cancel()
                    keys = [f"act:{self.tq}", f"shutdown:{self.id}", f"local:{self.id}"]
                    # Slots reserved by claims and workflow tasks in flight count as taken.
                    has_slot = self._remote_running() + self._reserved < self.max_activities
                    if not has_slot:
                        keys.append(f"slot:{self.id}")  # look again when an attempt finishes
                    fut = self._claim_waiter = self.store.waiter(self.ns, keys)
                    self._queue_idle, self._queue_next_at = True, None
                    # This worker's own rate (max_activities_per_second): none left, sleep
                    # until the next start it allows.
                    held = self._local_rate.next_at(self.store.clock.now()) if self._local_rate else None
                    if held is not None:
                        self._queue_next_at = held
                    elif self.enable_activities and has_slot:
                        await self._registered()
                        recheck, self._recheck_owned = self._recheck_owned, False
                        self._reserved += 1
                        try:
                            got = await engine_metrics.timed_claim("activity", self.store.transact(self.ns, functools.partial(
                                acts.claim, task_queue=self.tq, owner=self.id, namespace=self.ns,
                                tracked=self._tracked, recheck=recheck, rate=self._queue_rate,
                            )))
                        finally:
                            self._reserved -= 1
                        if isinstance(got, acts.Claimed):
                            if self._local_rate is not None:
                                self._local_rate.take(self.store.clock.now())
                            self._track(got)
                            # The same transaction saw whether more is ready: if not, the next
                            # poll waits on this waiter without another round trip.
                            nxt = got.next_ready
                            self._queue_idle = nxt is None or nxt > self.store.clock.now()
                            self._queue_next_at = nxt
                            if self.metrics:
                                self.metrics.activity_task(got.task, t0)
                            return bytes(got.task.SerializeToString())
                        self._queue_next_at = got
                cancel_waiter = self._cancel_waiter
                assert fut is not None and cancel_waiter is not None
                await self.store.wait_until(fut, self._queue_next_at, also=(cancel_waiter,))
                if not fut.done() and not cancel_waiter.done():
                    self._queue_idle = False  # a delayed task is due now
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # A database outage must not end temporalio's activity worker: wait and retry.
                logger.warning("dbosify: polling activities on %r failed (%s); retrying", self.tq, err)
                self._queue_idle = False
                self._cancel_waiter = None
                await asyncio.sleep(1.0)

    async def _standalone_timeouts_loop(self) -> None:
        """Time out standalone activities that no worker watches (see `_activity_executions`):
        sleeps until the earliest check is due or an earlier one is recorded; no polling."""
        from dbosify._engine import activity_executions as standalone

        await self._registered()
        while not self.shutting_down:
            fut = self.store.waiter(self.ns, [standalone.DUE_KEY, f"shutdown:{self.id}"])
            try:
                looked, next_due = await self.store.transact(self.ns, standalone.expire_due)
                if looked < standalone.SWEEP_BATCH:
                    await self.store.wait_until(fut, next_due)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning("dbosify: timing out standalone activities failed (%s); retrying", err)
                await asyncio.sleep(0.5)
            finally:
                fut.cancel()

    def _tracked(self) -> set[tuple[str, int]]:
        """The (run id, seq) of every remote attempt this worker is running or recording."""
        return {
            (r.claimed.run_id, r.claimed.seq)
            for r in list(self._running.values())
            if r.local_future is None
        } | set(self._finishing)

    def _remote_running(self) -> int:
        return sum(1 for r in self._running.values() if r.local_future is None)

    # -- eager dispatch -----------------------------------------------------------------------

    def eager_activity_budget(self) -> int:
        """Reserve the slots that the next workflow task may hand straight to this worker (give
        them back with `release_slots` once its transaction is over)."""
        if not self.enable_activities or self.shutting_down or self._activity_queue is None:
            return 0
        n = max(0, min(self._eager_limit, self.max_activities - self._remote_running() - self._reserved))
        self._reserved += n
        return n

    def release_slots(self, n: int) -> None:
        self._reserved -= n

    def adopt_eager(self, claimed: list[acts.Claimed]) -> None:
        """Attempts that a committed workflow task handed to this worker: run them."""
        assert self._activity_queue is not None
        for c in claimed:
            self._track(c)
            self._activity_queue.put_nowait(c.task)
        self.store.hub.fire(f"{self.ns}\x00local:{self.id}")  # the poller takes them

    def recheck_owned_attempts(self) -> None:
        """The next claim hands back attempts this worker owns but does not run."""
        self._recheck_owned = True

    def _track(self, claimed: acts.Claimed) -> None:
        ra = _RunningActivity(claimed, self.store.clock.now())
        self._running[claimed.task.task_token] = ra
        self.store.clock.hold(claimed.task.task_token)  # in progress until its outcome is recorded
        ra.watchdog = busy_task(self.store.clock, lambda: self._watchdog(ra))

    async def _watchdog(self, ra: _RunningActivity) -> None:
        c = ra.claimed
        clock = self.store.clock
        while True:
            deadlines: list[tuple[float, int]] = []
            if c.start_to_close:
                deadlines.append((ra.started + c.start_to_close, acts.TIMEOUT_START_TO_CLOSE))
            if c.heartbeat_timeout:
                deadlines.append((ra.last_heartbeat + c.heartbeat_timeout, acts.TIMEOUT_HEARTBEAT))
            if c.deadline:
                deadlines.append((c.deadline, acts.TIMEOUT_SCHEDULE_TO_CLOSE))
            if not deadlines:
                return
            at_, kind = min(deadlines)
            if at_ > clock.now():
                await clock.sleep_until(at_)
                continue
            if ra.local_future is None:
                from temporalio.api.failure.v1 import message_pb2 as failure_pb

                def record_timeout(tx: Tx, kind: int = kind) -> bool:
                    return acts.finish(
                        tx, c.run_id, c.seq, c.attempt, "failed", failure_pb.Failure(),
                        self.identity, timeout_kind=kind,
                    )

                await self.store.transact(self.ns, record_timeout)
            self._send_cancel(c.task.task_token, CANCEL_REASON_TIMED_OUT)
            clock.release(c.task.task_token)  # over for the engine (its code may still run)
            return

    def _send_cancel(
        self, token: bytes, reason: int, answer: acts.HeartbeatAnswer | None = None
    ) -> None:
        ra = self._running.get(token)
        if ra is None or ra.cancel_sent or self._activity_queue is None:
            return
        ra.cancel_sent = True
        ra.cancel_reason = reason
        cancel = at.Cancel(reason=reason)  # type: ignore[arg-type]
        cancel.details.is_cancelled = reason == CANCEL_REASON_CANCELLED
        cancel.details.is_timed_out = reason == CANCEL_REASON_TIMED_OUT
        cancel.details.is_worker_shutdown = reason == CANCEL_REASON_WORKER_SHUTDOWN
        if answer is not None:
            # A heartbeat's answer: every flag it carried, as Core reports them.
            cancel.details.is_cancelled = answer.cancel_requested
            cancel.details.is_paused = answer.paused
            cancel.details.is_reset = answer.reset
        self._activity_queue.put_nowait(at.ActivityTask(task_token=token, cancel=cancel))
        self.store.hub.fire(f"{self.ns}\x00local:{self.id}")

    async def _check_cancels(self) -> None:
        if not any(r.local_future is None and not r.cancel_sent for r in self._running.values()):
            return
        rows = await self.store.transact(
            self.ns,
            lambda tx: tx.all(
                "SELECT run_id, seq, attempt FROM activity_tasks WHERE owner = %s AND cancel_requested = 1",
                (self.id,),
            ),
        )
        for run_id, seq, attempt in rows:
            self._send_cancel(acts.make_token(run_id, seq, attempt), CANCEL_REASON_CANCELLED)

    async def complete_activity_task(self, proto: bytes) -> None:
        comp = ci.ActivityTaskCompletion.FromString(proto)
        if self.metrics:
            self.metrics.activity_done(comp)
        ra = self._running.pop(comp.task_token, None)
        if ra is not None and ra.watchdog is not None and not ra.watchdog.done():
            try:
                ra.watchdog.cancel()
            except RuntimeError:
                pass  # its event loop is already closed (a thread finished after shutdown)
        if ra is not None and ra.local_future is not None:
            if not ra.local_future.done():
                ra.local_future.set_result(comp.result)
            return
        result = comp.result
        kind = result.WhichOneof("status")
        if kind == "will_complete_async":
            # The attempt stays running until a client completes it by token; this worker has
            # nothing in progress for it any more.
            self.store.clock.release(comp.task_token)
            return
        run_id, seq, attempt = acts.parse_token(comp.task_token)
        payload: Any
        if kind == "completed":
            payload = common.Payloads()
            if result.completed.HasField("result"):
                payload.payloads.add().CopyFrom(result.completed.result)
            k = "completed"
        elif kind == "failed":
            payload, k = result.failed.failure, "failed"
        elif ra is not None and ra.cancel_reason == CANCEL_REASON_WORKER_SHUTDOWN:
            # Nobody asked for this cancel: like Core, report the attempt as failed (and retryable).
            from temporalio.api.failure.v1 import message_pb2 as failure_pb

            payload = failure_pb.Failure(
                message="Worker is shutting down and activity did not complete in time",
                source="dbosify",
            )
            payload.application_failure_info.type = "WorkerShutdown"
            k = "failed"
        else:
            payload = common.Payloads()
            k = "canceled"
        # Over the namespace's blob limit: the attempt fails (as Core, then Temporal, do).
        k, payload = limits.activity_outcome(self.store.limits_for(self.ns), k, payload, worker=True)
        self._finishing.add((run_id, seq))  # still this worker's while its result is recorded
        for _ in range(100):  # a heartbeat from another thread is queued on this loop: let it in
            if ra is None or ra.heartbeats_in_transit <= 0:
                break
            await asyncio.sleep(0)
        if ra is not None and ra.heartbeat_write is not None:
            await asyncio.wait([ra.heartbeat_write])  # its details first (errors are its own)
        try:
            delay = 0.5
            while True:
                try:
                    current = await self._results.record(
                        (run_id, seq, attempt, k, payload),
                        ra.claimed.scheduled_event_id if ra is not None else None,
                    )
                    if not current:
                        # Like a stale task token on Temporal: the attempt timed out, was
                        # cancelled, or was taken over (this worker was presumed dead).
                        logger.info(
                            "dbosify: result of activity attempt %s of run %s (seq %s) refused:"
                            " the attempt is no longer current", attempt, run_id, seq,
                        )
                    break
                except Exception as err:
                    # Keep the result until the database is back, unless this worker is going away
                    # (then the attempt is re-run by whoever takes it over).
                    if self.shutting_down:
                        raise
                    logger.warning("dbosify: recording an activity result failed (%s); retrying", err)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._finishing.discard((run_id, seq))
            self.store.clock.release(comp.task_token)
            self.store.hub.fire(f"{self.ns}\x00slot:{self.id}")  # a slot is free

    def record_activity_heartbeat(self, proto: bytes) -> None:
        hb = ci.ActivityHeartbeat.FromString(proto)
        ra = self._running.get(hb.task_token)
        if ra is None:
            return
        ra.last_heartbeat = self.store.clock.now()
        if ra.local_future is not None:
            return
        details = common.Payloads()
        details.payloads.extend(hb.details)
        token = hb.task_token

        async def write(previous: asyncio.Task[None] | None) -> None:
            if previous is not None:  # in the order they were reported
                await asyncio.wait([previous])
            try:
                answer = await acts.heartbeat_by_token(self.store, self.ns, token, details)
            except Exception:
                return
            if answer.stop:
                reason = (
                    CANCEL_REASON_CANCELLED if answer.cancel_requested
                    else CANCEL_REASON_PAUSED if answer.paused
                    else CANCEL_REASON_RESET
                )
                self._send_cancel(token, reason, answer)

        def chain() -> None:
            ra.heartbeat_write = self.loop.create_task(write(ra.heartbeat_write))
            ra.heartbeats_in_transit -= 1

        # The write runs on the worker's loop even when an activity heartbeats from a thread of
        # its own (with a loop that may end at once); its outcome waits for it there.
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        ra.heartbeats_in_transit += 1
        if here is self.loop:
            chain()
        else:
            self.loop.call_soon_threadsafe(chain)

    async def run_local_activity(
        self, run: h.Run, la: wc.ScheduleLocalActivity, attempt: int, scheduled: float
    ) -> ar.ActivityExecutionResult:
        """Run one attempt of a local activity through temporalio's activity worker."""
        assert self._activity_queue is not None
        token = f"local\x00{run.run_id}\x00{la.seq}\x00{attempt}".encode()
        task = at.ActivityTask(task_token=token)
        s = task.start
        s.workflow_namespace = self.ns
        s.workflow_type = run.workflow_type
        s.workflow_execution.workflow_id = run.workflow_id
        s.workflow_execution.run_id = run.run_id
        s.activity_id = la.activity_id
        s.activity_type = la.activity_type
        for k, v in la.headers.items():
            s.header_fields[k].CopyFrom(v)
        s.input.extend(la.arguments)
        s.scheduled_time.FromNanoseconds(int(scheduled * 1e9))
        now = self.store.clock.now()
        s.current_attempt_scheduled_time.FromNanoseconds(int(now * 1e9))
        s.started_time.FromNanoseconds(int(now * 1e9))
        s.attempt = attempt
        s.is_local = True
        for f in ("schedule_to_close_timeout", "start_to_close_timeout", "retry_policy"):
            if la.HasField(f):
                getattr(s, f).CopyFrom(getattr(la, f))
        claimed = acts.Claimed(
            run.run_id, la.seq, attempt, task,
            la.start_to_close_timeout.ToNanoseconds() / 1e9 if la.HasField("start_to_close_timeout") else None,
            None,
            scheduled + la.schedule_to_close_timeout.ToNanoseconds() / 1e9
            if la.HasField("schedule_to_close_timeout") else None,
        )
        ra = _RunningActivity(claimed, now)
        ra.local_future = asyncio.get_running_loop().create_future()
        self._running[token] = ra
        self.store.clock.hold(token)
        ra.watchdog = busy_task(self.store.clock, lambda: self._watchdog(ra))
        self._activity_queue.put_nowait(task)
        self.store.hub.fire(f"{self.ns}\x00local:{self.id}")
        try:
            return await ra.local_future
        except asyncio.CancelledError:
            self._send_cancel(token, CANCEL_REASON_CANCELLED)
            raise
        finally:
            self.store.clock.release(token)
