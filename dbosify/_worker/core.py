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
from typing import Any

from temporalio.bridge.proto.activity_task import activity_task_pb2 as at
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._dbos import records
from dbosify._engine import deployments, scheduler
from dbosify._engine import task_queues as queues
from dbosify._engine.liveness import RETRY_SET, owns_row
from dbosify._metrics import core as core_metrics
from dbosify._metrics import engine as engine_metrics
from dbosify._store import Store, Tx
from dbosify._store.clock import busy_task
from dbosify._store.loop_pool import LoopPool
from dbosify._store.namespaces import InvalidNamespace, NamespaceNotFound
from dbosify._store.threads import in_thread
from dbosify._worker import backlog, dbos_commands, dbos_inbound, dormancy, eager, liveness, nexus
from dbosify._worker.activity_side import ActivitySide, PollShutdownError, _RunningActivity
from dbosify._worker.driver import RunDriver
from dbosify._worker.interfaces import ClientRef, Driver
from dbosify._worker.liveness import LOCAL_TOKEN, Member
from dbosify._worker.rate_limit import rates_of
from dbosify._worker.replay_gate import ReplayGate, priorities
from dbosify._worker.results import ResultRecorder
from dbosify._worker.versioning import of_strategy

__all__ = ["PollShutdownError", "WorkerCore"]

logger = logging.getLogger("dbosify")


ENV_EAGER_ACTIVITIES = "DBOSIFY_EAGER_ACTIVITIES"


class WorkerCore(ActivitySide):
    def __init__(self, client: ClientRef, config: Any) -> None:
        self.client = client
        self.store: Store = client.store
        self.ns: str = config.namespace
        self.tq: str = config.task_queue
        self.identity: str = config.identity_override or client.identity
        self.runtime: Any = client.runtime  # where Core's logs go (see dbosify/_engine/core_logs.py)
        self.payloads_warn_size = int(getattr(client.config, "payloads_warn_size", 0) or 512 * 1024)
        self.payload_error_limit = not getattr(config, "disable_payload_error_limit", False)
        strategy = config.versioning_strategy
        self.build_id: str = (
            getattr(strategy, "build_id_no_versioning", "")
            or getattr(getattr(strategy, "version", None), "build_id", "")
            or getattr(strategy, "build_id_with_versioning", "")
        )
        self.deployment, self.default_versioning_behavior = of_strategy(strategy)  # None: unversioned
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        if LOCAL_TOKEN:
            self.id += f"@{LOCAL_TOKEN}"
        types = config.task_types
        self.enable_workflows = bool(types.enable_workflows)
        self.enable_activities = bool(types.enable_remote_activities)
        polled = (self.enable_workflows, self.enable_activities, bool(getattr(types, "enable_nexus", False)))
        self._poller = liveness.Poller(
            self.identity, queues.type_bits(t for t, on in zip(queues.KINDS, polled, strict=True) if on), self.build_id,
            self.deployment,
        )
        slots = getattr(config.tuner.activity_slot_supplier, "num_slots", None)
        self.max_activities: int = int(slots) if slots else 1000
        # Eager activities, as Core asks for them: up to this many per workflow task, none when
        # activity starts are rate-limited (each start must then go through the limiter). Like a
        # Temporal server's system.enableActivityEagerExecution, the engine grants them only when
        # DBOSIFY_EAGER_ACTIVITIES=1: they start a burst of activities at once, whose results
        # then arrive at once (measured in bench W6: twice the re-runs after a crash).
        self._local_rate, self._queue_rate = rates_of(config)
        rate_limited = self._local_rate is not None or self._queue_rate is not None
        enabled = os.environ.get(ENV_EAGER_ACTIVITIES, "") == "1"
        self._eager_limit = (
            int(config.max_eager_activity_reservations_per_workflow_task) if enabled and not rate_limited else 0
        )
        self._recheck_owned = False  # attempts this worker owns may not all be tracked
        self._reserved = 0  # activity slots held by claims and workflow tasks in flight
        self.max_cached: int = int(config.max_cached_workflows)
        self.cache = dormancy.Cache(self.max_cached)  # which idle runs to evict (dormancy.py)
        self._claim_next_at: float | None = None  # when the claim loop looks again by itself
        self._claim_looking = True  # the claim loop is looking (what it reads may be outdated)
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
        # Single statements sent from the worker's loop (results, query answers): loop_pool.py.
        self.loop_pool = LoopPool(self.store)
        self._results = ResultRecorder(self.store, self.ns, self.identity, self.loop_pool)
        # Busy for a virtual clock from now until its pollers run (each is then busy itself): a
        # run started before this worker's first poll must not see time skip past it.
        self._starting = self.store.clock.participant()
        self._waiting_for = {
            part for part, on in (("workflows", self.enable_workflows), ("activities", self.enable_activities))
            if on
        }
        if self.enable_workflows:
            eager.register(self)  # a start in this process may hand it its first task
        self.metrics = core_metrics.for_worker(getattr(self.runtime, "meter", None), self.ns, self.tq, config)
        backlog.watch(self)  # the queue's backlog, read when metrics are exported (backlog.py)
        self._nexus = nexus.NexusPoller(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def _poller_running(self, part: str) -> None:
        """A poller of ``part`` runs (busy until it waits): the worker is no longer starting."""
        self._waiting_for.discard(part)
        if not self._waiting_for:
            self._starting.close()

    @property
    def started(self) -> bool:
        return self._started

    def ensure_started(self) -> None:
        self._ensure_started()

    async def registered(self) -> None:
        await self._registered()

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        self.loop = asyncio.get_running_loop()  # the worker's loop (heartbeats may come from others)
        self._activations = asyncio.Queue()
        self._activity_queue = asyncio.Queue()
        self._shutdown_event = asyncio.Event()
        # Registered by the liveness thread, with retries: a busy or restarting database delays
        # this worker's first claim, never ends it.
        self._member = liveness.join(self.store, self.ns, self.id, self.tq, self._reaped, self._poller)
        if self.enable_workflows:
            self._tasks.append(asyncio.create_task(self._claim_runs_loop()))
            self._tasks.append(asyncio.create_task(self._closed_query_loop()))
            if self.store.dbos_on(self.ns):
                self._tasks.append(asyncio.create_task(self._dbos_commands_loop()))
                self._tasks.append(asyncio.create_task(self._dbos_inbound_loop()))
            self._tasks.append(busy_task(self.store.clock, self._schedules_loop))
        if self.enable_activities:
            self._tasks.append(busy_task(self.store.clock, self._standalone_timeouts_loop))

    def _same_process(self) -> None:
        if self.runtime is not None:
            self.runtime.assert_same_process("use worker")

    async def validate(self) -> bytes:
        """Core's check before a worker polls: its namespace must be registered (Core asks
        DescribeNamespace). Nothing is written for a namespace that is not."""
        self._same_process()
        await in_thread(self.store.check)
        try:
            await in_thread(self.store.require_namespace, self.ns)
        except (NamespaceNotFound, InvalidNamespace) as err:
            # temporalio's worker raises what Core's validate raises: this RuntimeError.
            raise RuntimeError(f"Worker validation failed: {err}") from None
        from temporalio.bridge.proto import NamespaceInfo

        info = NamespaceInfo()
        info.limits.blob_size_limit_error = self.store.limits_for(self.ns).blob_error
        return bytes(info.SerializeToString())

    def initiate_shutdown(self) -> None:
        self.shutting_down = True
        self._starting.close()
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
        eager.unregister(self)
        for t in self._tasks:
            t.cancel()
        for t in list(self._drivers.values()):
            t.cancel()
        await self.loop_pool.close()
        if self._started:
            liveness.leave(self.store, self.ns, self.id)
            await self.store.transact(self.ns, self._unregister)

    def _unregister(self, tx: Tx) -> None:
        queues.depart(tx, self.id, time.time())  # listed as a poller for a while yet
        dormancy.release(tx, "owner = %s", (self.id,))
        tx.execute(
            f"UPDATE activity_tasks SET {RETRY_SET},"
            " available_at = %s WHERE owner = %s AND state = 'running'",
            (self.store.clock.now(), self.id),
        )
        tx.notify(f"wf:{self.tq}")
        tx.notify(f"act:{self.tq}")
        self._nexus.hand_back(tx)

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

    # -- nexus (dbosify/_worker/nexus.py) ----------------------------------------------------

    async def poll_nexus_task(self) -> bytes:
        self._same_process()
        self._ensure_started()
        try:
            return await self._nexus.poll()
        except nexus.PollShutdown:
            raise PollShutdownError() from None

    async def complete_nexus_task(self, proto: bytes) -> None:
        await self._nexus.complete(proto)

    # -- workflows ---------------------------------------------------------------------------

    async def poll_workflow_activation(self) -> bytes:
        self._same_process()
        self._ensure_started()
        assert self._activations is not None
        t0 = time.perf_counter()
        while True:
            if self.shutting_down and not self._drivers and self._activations.empty():
                raise PollShutdownError()
            act = await self._activations.get()
            if not act.run_id:
                continue  # a wake-up to re-check shutdown
            if self.metrics:
                self.metrics.polled_workflow(t0)
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
        return await (fut if self.metrics is None else self.metrics.activation(act, fut))

    async def _claim_runs_loop(self) -> None:
        with self.store.clock.participant():
            self._poller_running("workflows")
            await self._claim_runs()

    async def _claim_runs(self) -> None:
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
                        self._claim_looking = True
                        got = await engine_metrics.timed_claim("workflow", self.store.transact(self.ns, self._claim_run))
                        if isinstance(got, tuple):
                            claimed, next_at = got
                            for run_id, gen in claimed:
                                self._start_driver(run_id, gen)
                            idle = next_at is None or next_at > self.store.clock.now()
                            continue
                        idle, next_at = True, got
                    # Nothing ready: sleep until woken, or until a delayed run or a dormant
                    # run's timer becomes due.
                    self._claim_next_at, self._claim_looking = next_at, False
                    await self.store.wait_until(fut, next_at)
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
        now = self.store.clock.now()
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
        route, route_args = deployments.claim_filter(tx, self.tq, self.deployment, self.build_id)  # routed here
        for _ in range(8):
            # Ready runs, then dormant runs whose wake-up time has passed (each by its index).
            # By priority key (Temporal's Priority), then by age.
            rows = sorted(tx.all(
                "SELECT run_id, task_priority, start_time FROM (SELECT run_id, task_priority, start_time"
                " FROM executions WHERE task_queue = %s AND status = 1 AND owner IS NULL AND dormant = 0"
                f" AND (not_before IS NULL OR not_before <= %s){route} ORDER BY task_priority, start_time LIMIT %s)"
                " ready UNION ALL SELECT run_id, task_priority, wake_at FROM (SELECT run_id, task_priority, wake_at"
                " FROM executions WHERE task_queue = %s AND status = 1 AND owner IS NULL AND dormant = 1"
                f" AND wake_at <= %s{route} ORDER BY wake_at LIMIT %s) due",
                (self.tq, now, *route_args, CLAIM_BATCH, self.tq, now, *route_args, CLAIM_BATCH),
            ), key=lambda r: (int(r[1]), float(r[2])))[:CLAIM_BATCH]
            if not rows:
                return self._next_ready(tx, now, route, route_args)
            claimed: list[tuple[str, int]] = []
            workflows: list[tuple[str, str]] = []
            for run_id, _, _ in rows:
                got = tx.one(
                    "UPDATE executions SET owner = %s, claim_gen = claim_gen + 1, dormant = 0"
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
                return claimed, self._next_ready(tx, None, route, route_args)
        return 0.0  # lost every race: look again

    def _next_ready(self, tx: Tx, after: float | None, route: str, route_args: tuple[Any, ...]) -> float | None:
        """When the next unclaimed run becomes ready (0 if one is ready now), if any: a delayed
        start, or a dormant run's wake-up time. ``after``: when none is ready before it."""
        delayed = "COALESCE(not_before, 0)" if after is None else "not_before"
        later = "" if after is None else f" AND {delayed} > %s"
        got = tx.one(
            f"SELECT (SELECT min({delayed}) FROM executions WHERE task_queue = %s AND status = 1"
            f" AND owner IS NULL AND dormant = 0{later}{route}),"
            " (SELECT min(wake_at) FROM executions WHERE task_queue = %s AND status = 1"
            f" AND owner IS NULL AND dormant = 1{route})",
            (self.tq, *([] if after is None else [after]), *route_args, self.tq, *route_args),
        )
        times = [float(t) for t in (got or ()) if t is not None]
        return min(times, default=None)

    def start_driver(self, run_id: str, gen: int) -> None:
        """Drive a run this worker has claimed (also one claimed at its start: `eager`)."""
        if not self.shutting_down:
            self._start_driver(run_id, gen)

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
        self._driver_idle(None)  # a full cache makes room: its least recently used idle run sleeps
        # Busy from now, not from the task's first step: this loop may wait before that.
        task = busy_task(self.store.clock, driver.drive)
        self._drivers[run_id] = task
        task.add_done_callback(lambda _t, rid=run_id: self._driver_done(rid))  # type: ignore

    def _driver_idle(self, driver: Driver | None) -> None:
        """``driver`` has nothing to do (or a driver was added): over capacity, the least
        recently used idle runs are asked to go dormant (``driver`` itself sees its flag)."""
        for d in self.cache.to_evict(self._driver_objs):
            if d is not driver:
                self.store.hub.fire(f"{self.ns}\x00evict:{d.run_id}")

    def _run_sleeps(self, wake: float | None) -> None:
        """A run of this worker went dormant until ``wake``: the claim loop must look by then."""
        if wake is None:
            return
        if self._claim_looking or self._claim_next_at is None or wake < self._claim_next_at:
            self._claim_next_at = wake
            self.store.hub.fire(f"{self.ns}\x00wf:{self.tq}")

    def _driver_done(self, run_id: str) -> None:
        self._drivers.pop(run_id, None)
        self.cache.forget(run_id)
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
        """Hand a run back (this worker shuts down): dormant if it has nothing to do until its
        next due time, else for another worker to continue at once."""
        dormancy.release(tx, "run_id = %s AND owner = %s AND claim_gen = %s", (run_id, self.id, gen))

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
        """Carry out DBOS's cancel and resume of this task queue's runs (see _worker/dbos_commands.py)."""
        await self._registered()

        async def step() -> None:
            await self.store.transact(
                self.ns, lambda tx: dbos_commands.apply(tx, self.tq, self.identity)
            )

        await self._on_wake(f"dbos:{self.tq}", step, "carrying out DBOS commands")

    async def _dbos_inbound_loop(self) -> None:
        """Deliver DBOS's messages to this task queue's runs and start the runs enqueued on it
        through DBOS (see _worker/dbos_inbound.py)."""
        await self._registered()

        async def step() -> None:
            await self.store.transact(self.ns, lambda tx: dbos_inbound.apply(tx, self.tq, self.identity))

        await self._on_wake(dbos_inbound.wake_key(self.tq), step, "taking DBOS messages and starts")

    async def _schedules_loop(self) -> None:
        """Take the namespace's due schedule actions (any worker may: row locks decide who).

        Sleeps until the next action is due or a schedule changes; no polling on an idle database.
        """
        await self._registered()
        while not self.shutting_down:
            fut = self.store.waiter(self.ns, [scheduler.WAKE_KEY, f"shutdown:{self.id}"])
            try:
                taken, next_due = await self.store.transact(self.ns, scheduler.fire_due)
                if taken < scheduler.FIRE_BATCH:
                    await self.store.wait_until(fut, next_due)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning("dbosify: taking schedule actions failed (%s); retrying", err)
                await asyncio.sleep(0.5)
            finally:
                fut.cancel()

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


CLAIM_BATCH = 8  # runs claimed per transaction: a takeover of many runs moves on quickly
REPLAY_SLOTS = 4  # runs a worker replays at once (see replay_gate.py)
