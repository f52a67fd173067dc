"""Temporal's history limits on a run, applied when one of its workflow tasks completes.

Past ``limit.historySize.warn`` / ``limit.historyCount.warn`` a warning is logged; past the error
limits the task is failed (cause FORCE_CLOSE_COMMAND) and the run terminated, both by
"history-service", with Temporal's reason ("Workflow history size exceeds limit." or "Workflow
history count exceeds limit."). The limits are the namespace's (`dbosify._store.limits`), checked by `dbosify._engine.limits`.
"""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import event_type_pb2 as E
from temporalio.api.enums.v1 import failed_cause_pb2 as causes
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist

from dbosify._engine import history as h
from dbosify._engine import limits
from dbosify._engine import runs as _runs
from dbosify._store import Tx

IDENTITY = "history-service"  # who fails the task and terminates the run on Temporal


def over(driver: Any, consumed: int) -> str | None:
    """Why the run must end now (its history is past an error limit), else None.

    The count is the history as the task's completion would leave it: the events consumed, the
    task's scheduled and started events (as the activation counted them) and its completion.
    """
    length, size = driver.history_seen
    return limits.history_over(
        driver.store.limits_for(driver.ns), length + 1, size,
        workflow_id=driver.run.workflow_id if driver.run is not None else "", run_id=driver.run_id,
    )


def terminate(tx: Tx, driver: Any, reason: str, ts: float) -> None:
    """The task failed by the server (FORCE_CLOSE_COMMAND) and the run terminated, as Temporal does."""
    run = driver._owned(tx)
    if run is None:
        return
    sched = hist.WorkflowTaskScheduledEventAttributes(attempt=max(run.wft_attempt, 0) + 1)
    sched.task_queue.name = run.task_queue
    sched.start_to_close_timeout.FromSeconds(10)
    sched_id = h.append(tx, run.run_id, E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, sched, at=ts) or 0
    started_id = h.append(
        tx, run.run_id, E.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        hist.WorkflowTaskStartedEventAttributes(scheduled_event_id=sched_id, identity=driver.core.identity),
        at=ts,
    ) or 0
    h.append(tx, run.run_id, E.EVENT_TYPE_WORKFLOW_TASK_FAILED, hist.WorkflowTaskFailedEventAttributes(
        scheduled_event_id=sched_id, started_event_id=started_id, identity=IDENTITY,
        cause=causes.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND,
        failure=failure_pb.Failure(message=reason),
    ))
    _runs.terminate(tx, run, reason, IDENTITY)
