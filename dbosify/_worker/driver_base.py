"""The run driver's state and what its seams share (`driver.RunDriver` is built on it).

- loading a snapshot of the run (`_snapshot`, `_load`): its events after a point, and its pending
  updates and queries, read in one transaction;
- the claim: `_owned` locks the run and refuses a stale claim (`Fenced`), `fence` stops a driver
  another worker took over;
- activating the workflow (`_activate_task`, `_activate`): one activation handed to temporalio's
  workflow worker, with the continue-as-new suggestion past a history length;
- answering queries with a query-only activation (`_answer_queries`), and evicting (`_evict`).
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import failed_cause_pb2 as WFT_CAUSE
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.query.v1 import message_pb2 as query_pb
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._engine import history as h
from dbosify._metrics import engine as engine_metrics
from dbosify._store import Tx
from dbosify._worker import activations as A
from dbosify._worker import queries
from dbosify._worker.interfaces import Core, Snapshot
from dbosify._worker.tracking import DriverState

_UNHANDLED = WFT_CAUSE.WORKFLOW_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE
logger = logging.getLogger("dbosify")
E = et


class RunClosed(Exception):
    pass


class Fenced(Exception):
    """This driver's claim is no longer the run's current one: another worker drives it now."""


class Dormant(Exception):
    """The run was evicted to make room in the cache, and gave up its claim (see dormancy.py)."""


class WorkflowTaskFailed(Exception):
    pass


def _build_id_of(wft: hist.WorkflowTaskCompletedEventAttributes) -> str:
    return wft.deployment_version.build_id or wft.worker_version.build_id


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


class DriverBase:
    """A run driver's state, and the steps its replay, live loop and workflow tasks share."""

    def __init__(self, core: Core, run_id: str, gen: int | None = None) -> None:
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
        self.target_version_changed = False  # pinned here while its deployment routes elsewhere

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

    async def _fail_queries_with(self, query_ids: list[str], message: str) -> None:
        await self.store.transact(self.ns, lambda tx: queries.record(tx, query_ids, {
            qid: queries.failed(message) for qid in query_ids
        }))

    async def _activate_task(
        self, jobs: list[wa.WorkflowActivationJob], ts: float, *, replaying: bool, history_length: int
    ) -> wcomp.WorkflowActivationCompletion:
        """One workflow task: activations until Core would have nothing left to resolve locally.

        Returns one completion whose commands are everything the task sends to the server.
        """
        kept: list[wc.WorkflowCommand] = []
        flags: set[int] = set()
        behavior = 0  # the workflow's versioning behavior, as its last activation reported it
        while True:
            completion = await self._activate(jobs, ts, replaying=replaying, history_length=history_length)
            if completion.HasField("failed"):
                return completion
            flags.update(completion.successful.used_internal_flags)
            behavior = completion.successful.versioning_behavior or behavior
            jobs = A.elide_unsent(completion.successful.commands, kept)
            if not jobs:
                break
        out = wcomp.WorkflowActivationCompletion(run_id=self.run_id)
        out.successful.commands.extend(kept)
        out.successful.used_internal_flags.extend(sorted(flags))
        out.successful.versioning_behavior = behavior  # type: ignore[assignment]
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
        if self.core.deployment is not None and self.task_build_id:
            act.deployment_version_for_current_task.deployment_name = self.core.deployment
        act.target_worker_deployment_version_changed = self.target_version_changed
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

    async def _answer_queries(self, pending: queries.Pending) -> None:
        # A query gets an activation of its own, flagged as replaying: Core answers a query task
        # from history it has already applied (a cached run's, or one it just replayed), and a
        # handler sees workflow.unsafe.is_replaying() true on the dev server, cached or not.
        completion = await self._activate(
            queries.jobs(pending),
            self.task_time if self.task_time is not None else self.store.clock.now(),
            replaying=True, history_length=self.state.consumed,
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
