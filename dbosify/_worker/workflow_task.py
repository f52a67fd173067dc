"""The workflow task's transaction: a completion's commands applied with the events they record.

`_apply` opens one transaction: it checks the claim (`_owned`) and that no new input arrived since
the activation, appends the WorkflowTaskScheduled/Started/Completed events (the Completed event's
``seq`` records exactly which inputs the activation consumed, the boundary replay reproduces),
then hands each command to its applier (`commands.APPLIERS`). A failed task records
WorkflowTaskFailed (`_record_task_failure`); a run past its history limits is terminated
(`_terminate`, `history_limits`).
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._engine import activity_tasks as acts
from dbosify._engine import core_logs
from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._store import Tx
from dbosify._worker import activations as A
from dbosify._worker import commands as commands_
from dbosify._worker import dormancy, tracking, versioning
from dbosify._worker.applying import Applying
from dbosify._worker.driver_base import (
    _UNHANDLED,
    DriverBase,
    E,
    RunClosed,
    WorkflowTaskFailed,
)
from dbosify._worker.interfaces import Snapshot


class WorkflowTask(DriverBase):
    """Applying a workflow task's completion in one transaction."""

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
            versioning.on_task_completed(tx, self, wft, completion.successful.versioning_behavior)
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
            applying = Applying(
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
