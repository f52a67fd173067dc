"""A worker's core: what ``temporalio.bridge.worker.Worker`` polls instead of Temporal's Rust core.

It claims runs and activity tasks of its task queue from the database (woken by
notifications, never by a timer loop), hands activations and activity tasks to
temporalio's own workflow and activity workers, and records their completions.
A liveness row lets the other workers take over this one's runs and activity
attempts if it dies.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.bridge.proto import core_interface_pb2 as ci
from temporalio.bridge.proto.activity_result import activity_result_pb2 as ar
from temporalio.bridge.proto.activity_task import activity_task_pb2 as at
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify import _activity_tasks as acts
from dbosify import _history as h
from dbosify._dbos import commands as dbos_commands
from dbosify._dbos import records
from dbosify._store import Store, Tx
from dbosify._worker import liveness
from dbosify._worker.driver import RunDriver
from dbosify._worker.liveness import LOCAL_TOKEN, Member, owns_row
from dbosify._worker.replay_gate import ReplayGate, priorities
from dbosify._worker.results import ResultRecorder

if TYPE_CHECKING:
    from dbosify._native._client import ClientRef

logger = logging.getLogger("dbosify")

CANCEL_REASON_CANCELLED = 1
CANCEL_REASON_TIMED_OUT = 2
CANCEL_REASON_WORKER_SHUTDOWN = 3


class PollShutdownError(Exception):
    """Raised by polls once the worker is shutting down (temporalio expects this type)."""


class _RunningActivity:
    def __init__(self, claimed: acts.Claimed) -> None:
        self.claimed = claimed
        self.started = time.time()
        self.last_heartbeat = self.started
        self.cancel_sent = False
        self.cancel_reason = 0
        self.watchdog: asyncio.Task[None] | None = None
        self.local_future: asyncio.Future[ar.ActivityExecutionResult] | None = None


class WorkerCore:
    def __init__(self, client: ClientRef, config: Any) -> None:
        self.client = client
        self.store: Store = client.store
        self.ns: str = config.namespace
        self.tq: str = config.task_queue
        self.identity: str = config.identity_override or client.identity
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        if LOCAL_TOKEN:
            self.id += f"@{LOCAL_TOKEN}"
        types = config.task_types
        self.enable_workflows = bool(types.enable_workflows)
        self.enable_activities = bool(types.enable_remote_activities)
        slots = getattr(config.tuner.activity_slot_supplier, "num_slots", None)
        self.max_activities: int = int(slots) if slots else 1000
        self.max_cached: int = int(config.max_cached_workflows)
        self.graceful_shutdown = float(config.graceful_shutdown_period_millis) / 1000
        self.shutting_down = False
        self._started = False
        self._activations: asyncio.Queue[wa.WorkflowActivation] | None = None
        self._activity_queue: asyncio.Queue[at.ActivityTask] | None = None
        # Activity polling state: waiters registered before the last look at the database.
        self._claim_waiter: asyncio.Future[None] | None = None
        self._cancel_waiter: asyncio.Future[None] | None = None
        self._queue_idle = False  # the last look found nothing ready for this queue
        self._queue_next_at: float | None = None  # when the next delayed task becomes ready
        self._pending: dict[str, asyncio.Future[wcomp.WorkflowActivationCompletion]] = {}
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._queries_skipped: set[str] = set()  # closed runs whose driver was still evicting
        self._driver_objs: dict[str, RunDriver] = {}
        self._restart_after: dict[str, int] = {}  # run id -> claim to drive once its old driver ends
        self._running: dict[bytes, _RunningActivity] = {}
        self._finishing: set[tuple[str, int]] = set()  # attempts whose result is being recorded
        self._tasks: list[asyncio.Task[Any]] = []
        self._capacity = asyncio.Event()
        self._shutdown_event: asyncio.Event | None = None
        self._member: Member | None = None  # this worker's liveness; claims wait for its row
        self._reaped_count = 0
        self.replay_gate = ReplayGate(REPLAY_SLOTS)
        self._replay_priority: dict[str, int] = {}  # claimed runs not yet replayed
        self._results = ResultRecorder(self.store, self.ns, self.identity)

    # -- lifecycle ---------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        self._activations = asyncio.Queue()
        self._activity_queue = asyncio.Queue()
        self._shutdown_event = asyncio.Event()
        # Registered by the liveness thread, with retries: a busy or restarting database delays
        # this worker's first claim, never ends it.
        self._member = liveness.join(self.store, self.ns, self.id, self.tq, self._reaped)
        if self.enable_workflows:
            self._tasks.append(asyncio.create_task(self._claim_runs_loop()))
            self._tasks.append(asyncio.create_task(self._closed_query_loop()))
            if self.store.dbos_enabled:
                self._tasks.append(asyncio.create_task(self._dbos_commands_loop()))


    async def validate(self) -> bytes:
        await asyncio.get_running_loop().run_in_executor(None, self.store.check)
        from temporalio.bridge.proto import NamespaceInfo

        return bytes(NamespaceInfo().SerializeToString())

    def initiate_shutdown(self) -> None:
        self.shutting_down = True
        if self._shutdown_event is not None:
            self._shutdown_event.set()
        if self._running:
            # Like Core: running activities get the graceful period, then a worker-shutdown cancel.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._tasks.append(loop.create_task(self._cancel_after_grace()))
        self.store.hub.fire(f"{self.ns}\x00shutdown:{self.id}")
        if self._activations is not None and not self._drivers:
            self._activations.put_nowait(wa.WorkflowActivation(run_id=""))

    async def finalize_shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in list(self._drivers.values()):
            t.cancel()
        if self._started:
            liveness.leave(self.store, self.ns, self.id)
            await self.store.transact(self.ns, self._unregister)

    def _unregister(self, tx: Tx) -> None:
        tx.execute("DELETE FROM workers WHERE worker_id = %s", (self.id,))
        released = tx.all(
            "UPDATE executions SET owner = NULL WHERE owner = %s AND status = 1"
            " RETURNING workflow_id, run_id",
            (self.id,),
        )
        records.on_release(tx, [(str(w), str(r)) for w, r in released])
        tx.execute(
            "UPDATE activity_tasks SET state = 'scheduled', owner = NULL, attempt = attempt + 1,"
            " available_at = %s WHERE owner = %s AND state = 'running'",
            (time.time(), self.id),
        )
        tx.notify(f"wf:{self.tq}")
        tx.notify(f"act:{self.tq}")

    def _reaped(self) -> None:
        """Another worker presumed this one dead (its beats stopped: e.g. the process was frozen)
        and took over its runs and activity attempts. Its drivers are fenced: their next look or
        write is refused and they evict their runs; its running attempts' results are refused as
        stale. The liveness thread has registered it again, and it claims work as before.
        """
        self._reaped_count += 1
        logger.warning(
            "dbosify: worker %s was presumed dead by another worker (its liveness beats stopped"
            " for over %g s, e.g. the process was frozen); its %d runs and %d running activity"
            " attempts were taken over, and it continues with new claims",
            self.id, liveness.LIVENESS_EXPIRY, len(self._driver_objs), self._remote_running(),
        )
        # Each driver checks its claim at its next look and stops if it is stale; one claimed
        # after the re-registration (a moment ago, perhaps before this call) goes on.
        for run_id in list(self._driver_objs):
            self.store.hub.fire(f"{self.ns}\x00run:{run_id}")

    async def _registered(self) -> None:
        assert self._member is not None
        await asyncio.shield(self._member.registered)

    def replace_client(self, client: ClientRef) -> None:
        self.client = client

    def request_workflow_eviction(self, run_id: str) -> None:
        d = self._driver_objs.get(run_id)
        if d is not None:
            d.evict_requested = True
            self.store.hub.fire(f"{self.ns}\x00evict:{run_id}")

    async def _cancel_after_grace(self) -> None:
        await asyncio.sleep(self.graceful_shutdown)
        for token in list(self._running):
            self._send_cancel(token, CANCEL_REASON_WORKER_SHUTDOWN)

    # -- workflows ---------------------------------------------------------------------------

    async def poll_workflow_activation(self) -> bytes:
        self._ensure_started()
        assert self._activations is not None
        while True:
            if self.shutting_down and not self._drivers and self._activations.empty():
                raise PollShutdownError()
            act = await self._activations.get()
            if not act.run_id:
                continue  # a wake-up to re-check shutdown
            return bytes(act.SerializeToString())

    async def complete_workflow_activation(self, proto: bytes) -> None:
        completion = wcomp.WorkflowActivationCompletion.FromString(proto)
        fut = self._pending.pop(completion.run_id, None)
        if fut is not None and not fut.done():
            fut.set_result(completion)

    async def activate(self, act: wa.WorkflowActivation) -> wcomp.WorkflowActivationCompletion:
        assert self._activations is not None
        fut: asyncio.Future[wcomp.WorkflowActivationCompletion] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[act.run_id] = fut
        self._activations.put_nowait(act)
        return await fut

    async def _claim_runs_loop(self) -> None:
        await self._registered()
        fut: asyncio.Future[None] | None = None
        idle = False  # the last look found nothing ready, and the waiter dates from before it
        next_at: float | None = None  # when a delayed run becomes ready
        try:
            while not self.shutting_down:
                try:
                    if fut is None or fut.done() or not idle:
                        if fut is not None:
                            fut.cancel()
                        fut = self.store.waiter(self.ns, [f"wf:{self.tq}", f"shutdown:{self.id}"])
                        got = await self.store.transact(self.ns, self._claim_run)
                        if isinstance(got, tuple):
                            claimed, next_at = got
                            for run_id, gen in claimed:
                                self._start_driver(run_id, gen)
                            idle = next_at is None or next_at > time.time()
                            continue
                        idle, next_at = True, got
                    # Nothing ready: sleep until woken, or until a delayed run becomes due.
                    timeout = None if next_at is None else max(0.0, next_at - time.time())
                    await self.store.wait_future(fut, timeout)
                    if not fut.done():
                        idle = False
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    logger.warning("dbosify: claiming runs on %r failed (%s); retrying", self.tq, err)
                    idle = False
                    await asyncio.sleep(0.5)
        finally:
            if fut is not None:
                fut.cancel()

    def _claim_run(self, tx: Tx) -> tuple[list[tuple[str, int]], float | None] | float | None:
        """Claim up to `CLAIM_BATCH` ready runs: ([(run id, claim generation)], when the next
        unclaimed run is ready, if any). With nothing ready: when a delayed run becomes ready,
        or None.
        """
        # No SKIP LOCKED here: a run's row is briefly locked by every signal or update appended to
        # it, and skipping it then would lose the only wake-up its start sent. Instead the UPDATE
        # waits for such a lock and re-checks ``owner IS NULL``; losing a race to another worker
        # just means trying the next candidates.
        now = time.time()
        if not owns_row(tx, self.id):
            return now + 0.5  # presumed dead a moment ago: look again once the beat re-registers it
        if tx.commit_may_have_landed:
            # An earlier attempt's claims may have committed unseen: drive what is ours.
            mine = [
                (str(r[0]), int(r[1]))
                for r in tx.all(
                    "SELECT run_id, claim_gen FROM executions WHERE task_queue = %s AND status = 1"
                    " AND owner = %s",
                    (self.tq, self.id),
                )
                if r[0] not in self._drivers
            ]
            if mine:
                return mine, now
        for _ in range(8):
            rows = tx.all(
                "SELECT run_id FROM executions WHERE task_queue = %s AND status = 1 AND owner IS NULL"
                " AND (not_before IS NULL OR not_before <= %s) ORDER BY start_time LIMIT %s",
                (self.tq, now, CLAIM_BATCH),
            )
            if not rows:
                nxt = tx.one(
                    "SELECT min(not_before) FROM executions WHERE task_queue = %s AND status = 1"
                    " AND owner IS NULL AND not_before > %s",
                    (self.tq, now),
                )
                return float(nxt[0]) if nxt and nxt[0] is not None else None
            claimed: list[tuple[str, int]] = []
            workflows: list[tuple[str, str]] = []
            for (run_id,) in rows:
                got = tx.one(
                    "UPDATE executions SET owner = %s, claim_gen = claim_gen + 1"
                    " WHERE run_id = %s AND owner IS NULL AND status = 1"
                    " RETURNING run_id, claim_gen, workflow_id",
                    (self.id, run_id),
                )
                if got is not None:
                    claimed.append((str(got[0]), int(got[1])))
                    workflows.append((str(got[2]), str(got[0])))
            if claimed:
                records.on_claim(tx, workflows, self.id)
                self._replay_priority.update(priorities(tx, [r for r, _ in claimed]))
                more = tx.one(
                    "SELECT min(COALESCE(not_before, 0)) FROM executions"
                    " WHERE task_queue = %s AND status = 1 AND owner IS NULL",
                    (self.tq,),
                )
                return claimed, (float(more[0]) if more and more[0] is not None else None)
        return 0.0  # lost every race: look again

    def _start_driver(self, run_id: str, gen: int) -> None:
        old = self._driver_objs.get(run_id)
        if old is not None:
            # Re-claimed while a fenced driver of an earlier claim is still evicting: one driver
            # per run, so the new one starts when the old one has gone.
            old.fence()
            self._restart_after[run_id] = gen
            return
        driver = RunDriver(self, run_id, gen)
        self._driver_objs[run_id] = driver
        task = asyncio.create_task(driver.drive())
        self._drivers[run_id] = task
        task.add_done_callback(lambda _t, rid=run_id: self._driver_done(rid))  # type: ignore

    def _driver_done(self, run_id: str) -> None:
        self._drivers.pop(run_id, None)
        driver = self._driver_objs.pop(run_id, None)
        gen = self._restart_after.pop(run_id, None)
        if gen is not None and not self.shutting_down:
            self._start_driver(run_id, gen)
            return
        self._requery_if_skipped(run_id)
        fut = self._pending.pop(run_id, None)
        if fut is not None and not fut.done():
            fut.cancel()
        if self.shutting_down:
            # Hand the run back so another worker (or this one, restarted) continues it.
            try:
                self.store.transact_sync(
                    self.ns,
                    lambda tx: self._release(tx, run_id, driver.gen if driver and driver.gen is not None else -1),
                )
            except Exception:
                logger.exception("dbosify: releasing run %s failed", run_id)
            if not self._drivers and self._activations is not None:
                self._activations.put_nowait(wa.WorkflowActivation(run_id=""))

    def _release(self, tx: Tx, run_id: str, gen: int) -> None:
        """Hand a run back (this worker shuts down) so that another worker continues it."""
        got = tx.all(
            "UPDATE executions SET owner = NULL WHERE run_id = %s AND owner = %s AND claim_gen = %s"
            " RETURNING workflow_id",
            (run_id, self.id, gen),
        )
        records.on_release(tx, [(str(w), run_id) for (w,) in got])
        tx.notify(f"wf:{self.tq}")

    async def _on_wake(self, key: str, step: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``step`` now, then again after each wake-up on ``key``, until shutdown."""
        while not self.shutting_down:
            fut: asyncio.Future[None] | None = None
            try:
                # Registered before the step, so no wake-up can fall in between.
                fut = self.store.waiter(self.ns, [key, f"shutdown:{self.id}"])
                await step()
                await self.store.wait_future(fut)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning("dbosify: %s on %r failed (%s); retrying", what, self.tq, err)
                await asyncio.sleep(0.5)
            finally:
                if fut is not None:
                    fut.cancel()

    async def _dbos_commands_loop(self) -> None:
        """Carry out DBOS's cancel and resume of this task queue's runs (see _dbos/commands.py)."""
        await self._registered()

        async def step() -> None:
            await self.store.transact(
                self.ns, lambda tx: dbos_commands.apply(tx, self.tq, self.identity)
            )

        await self._on_wake(f"dbos:{self.tq}", step, "carrying out DBOS commands")

    async def _closed_query_loop(self) -> None:
        """Answer queries on closed runs of this task queue by replaying their history, like Temporal."""
        busy: set[str] = set()

        async def step() -> None:
            rows = await self.store.transact(
                self.ns,
                lambda tx: tx.all(
                    "SELECT DISTINCT q.run_id FROM queries q JOIN executions e ON e.run_id = q.run_id"
                    " WHERE q.state = 'pending' AND e.task_queue = %s AND e.status <> 1",
                    (self.tq,),
                ),
            )
            for (run_id,) in rows:
                if run_id in self._drivers or run_id in busy:
                    # Still driven, or replayed for earlier queries (then evicted): its pending
                    # queries were read before this one arrived. Look again when that ends.
                    self._queries_skipped.add(run_id)
                else:
                    busy.add(run_id)
                    task = asyncio.create_task(self._answer_closed(run_id))
                    task.add_done_callback(functools.partial(self._closed_replay_done, busy, run_id))

        await self._on_wake(f"q-tq:{self.tq}", step, "answering queries")

    def _closed_replay_done(self, busy: set[str], run_id: str, _task: asyncio.Task[None]) -> None:
        busy.discard(run_id)
        self._requery_if_skipped(run_id)

    def _requery_if_skipped(self, run_id: str) -> None:
        """A query on ``run_id`` was skipped while its driver or closed-run replay ended: look again."""
        if run_id in self._queries_skipped:
            self._queries_skipped.discard(run_id)
            self.store.hub.fire(f"{self.ns}\x00q-tq:{self.tq}")

    async def _answer_closed(self, run_id: str) -> None:
        driver = RunDriver(self, run_id)
        try:
            await driver.answer_closed_queries()
        except Exception:
            logger.exception("dbosify: replaying closed run %s for a query failed", run_id)

    # -- activities ----------------------------------------------------------------------------

    async def poll_activity_task(self) -> bytes:
        self._ensure_started()
        assert self._activity_queue is not None
        while True:
            if not self._activity_queue.empty():
                return bytes(self._activity_queue.get_nowait().SerializeToString())
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
                    has_slot = self._remote_running() < self.max_activities
                    if not has_slot:
                        keys.append(f"slot:{self.id}")  # look again when an attempt finishes
                    fut = self._claim_waiter = self.store.waiter(self.ns, keys)
                    self._queue_idle, self._queue_next_at = True, None
                    if self.enable_activities and has_slot:
                        await self._registered()
                        got = await self.store.transact(
                            self.ns, lambda tx: acts.claim(tx, self.tq, self.id, self.ns, self._tracked)
                        )
                        if isinstance(got, acts.Claimed):
                            self._track(got)
                            # The same transaction saw whether more is ready: if not, the next
                            # poll waits on this waiter without another round trip.
                            nxt = got.next_ready
                            self._queue_idle = nxt is None or nxt > time.time()
                            self._queue_next_at = nxt
                            return bytes(got.task.SerializeToString())
                        self._queue_next_at = got
                timeout = (
                    None if self._queue_next_at is None else max(0.0, self._queue_next_at - time.time())
                )
                cancel_waiter = self._cancel_waiter
                assert fut is not None and cancel_waiter is not None
                done, _ = await asyncio.wait(
                    [asyncio.shield(fut), asyncio.shield(cancel_waiter)],
                    timeout=timeout, return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    self._queue_idle = False  # a delayed task is due now
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # A database outage must not end temporalio's activity worker: wait and retry.
                logger.warning("dbosify: polling activities on %r failed (%s); retrying", self.tq, err)
                self._queue_idle = False
                self._cancel_waiter = None
                await asyncio.sleep(1.0)

    def _tracked(self) -> set[tuple[str, int]]:
        """The (run id, seq) of every remote attempt this worker is running or recording."""
        return {
            (r.claimed.run_id, r.claimed.seq)
            for r in list(self._running.values())
            if r.local_future is None
        } | set(self._finishing)

    def _remote_running(self) -> int:
        return sum(1 for r in self._running.values() if r.local_future is None)

    def _track(self, claimed: acts.Claimed) -> None:
        ra = _RunningActivity(claimed)
        self._running[claimed.task.task_token] = ra
        ra.watchdog = asyncio.create_task(self._watchdog(ra))

    async def _watchdog(self, ra: _RunningActivity) -> None:
        c = ra.claimed
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
            now = time.time()
            if at_ > now:
                await asyncio.sleep(at_ - now)
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
            return

    def _send_cancel(self, token: bytes, reason: int) -> None:
        ra = self._running.get(token)
        if ra is None or ra.cancel_sent or self._activity_queue is None:
            return
        ra.cancel_sent = True
        ra.cancel_reason = reason
        cancel = at.Cancel(reason=reason)  # type: ignore[arg-type]
        cancel.details.is_cancelled = reason == CANCEL_REASON_CANCELLED
        cancel.details.is_timed_out = reason == CANCEL_REASON_TIMED_OUT
        cancel.details.is_worker_shutdown = reason == CANCEL_REASON_WORKER_SHUTDOWN
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
            if ra is not None:
                # The attempt stays running until the client completes it by token.
                pass
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
        self._finishing.add((run_id, seq))  # still this worker's while its result is recorded
        try:
            delay = 0.5
            while True:
                try:
                    current = await self._results.record((run_id, seq, attempt, k, payload))
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
            self.store.hub.fire(f"{self.ns}\x00slot:{self.id}")  # a slot is free

    def record_activity_heartbeat(self, proto: bytes) -> None:
        hb = ci.ActivityHeartbeat.FromString(proto)
        ra = self._running.get(hb.task_token)
        if ra is None:
            return
        ra.last_heartbeat = time.time()
        if ra.local_future is not None:
            return
        details = common.Payloads()
        details.payloads.extend(hb.details)
        token = hb.task_token

        async def write() -> None:
            try:
                cancel = await acts.heartbeat_by_token(self.store, self.ns, token, details)
            except Exception:
                return
            if cancel:
                self._send_cancel(token, CANCEL_REASON_CANCELLED)

        asyncio.get_running_loop().create_task(write())

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
        s.current_attempt_scheduled_time.FromNanoseconds(time.time_ns())
        s.started_time.FromNanoseconds(time.time_ns())
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
        ra = _RunningActivity(claimed)
        ra.local_future = asyncio.get_running_loop().create_future()
        self._running[token] = ra
        ra.watchdog = asyncio.create_task(self._watchdog(ra))
        self._activity_queue.put_nowait(task)
        self.store.hub.fire(f"{self.ns}\x00local:{self.id}")
        try:
            return await ra.local_future
        except asyncio.CancelledError:
            self._send_cancel(token, CANCEL_REASON_CANCELLED)
            raise


CLAIM_BATCH = 8  # runs claimed per transaction: a takeover of many runs moves on quickly
REPLAY_SLOTS = 4  # runs a worker replays at once (see replay_gate.py)
