"""Operator RPCs on a run's pending activities: PauseActivity, UnpauseActivity, ResetActivity.

They follow the Temporal server's semantics, on the `activity_tasks` row of each activity:

- **Pause.** The task is no longer handed out (claims skip paused rows) and has no timeouts. An
  attempt that is running goes on; its next heartbeat answers ``activity_paused``, so the worker
  cancels it with ``cancellation_details().paused``. If that attempt then fails (with any
  retryable failure), the attempt counts but the next one waits for the unpause, whatever the
  retry policy says of the attempts left; if it completes, the activity is done.
- **Unpause.** The waiting attempt is scheduled at once (after `DISPATCH_DELAY`, plus a random
  ``jitter``), optionally from attempt 1 and without its heartbeat details.
- **Reset.** The attempt count restarts at 1. An attempt that is running is told at its next
  heartbeat (``activity_reset``); it keeps its number, since its task token carries it (on
  Temporal its outcome would be refused and the activity would wait for a timeout), and its
  retry is attempt 2, without heartbeat details if the request said so. A waiting attempt is
  scheduled at once. A paused activity is unpaused unless
  ``keep_paused``.

Each RPC names the activities by id, by type, or all of them; none found is NOT_FOUND, as on
Temporal. The effects are on the row only: nothing is appended to the run's history.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.workflow.v1 import message_pb2 as wf_pb
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import history as h
from dbosify._engine.errors import FAILED_PRECONDITION, ServiceError
from dbosify._store import Store, Tx

ACTIVITY_NOT_FOUND = (
    "Can't find pending activity with such ID. Invalid activityID or activity already completed"
)


@dataclass
class _Task:
    seq: int
    activity_id: str
    activity_type: str
    state: str
    paused: bool
    pause_request_id: str | None
    task_queue: str


def _validate(req: Any) -> None:
    if not req.execution.workflow_id:
        raise ServiceError.invalid("WorkflowId is not set on request.")
    if req.WhichOneof("activity") is None:
        raise ServiceError.invalid("Either Activity.Id or Activity.Type should be set on request.")


def _run(tx: Tx, req: Any) -> h.Run:
    ex = req.execution
    run = h.find_run(tx, ex.workflow_id, ex.run_id or None, lock=True)
    if run is None:
        if ex.run_id:
            raise ServiceError.not_found(
                f"workflow execution not found for workflow ID {ex.workflow_id!r} and run ID {ex.run_id!r}"
            )
        raise ServiceError.not_found(f"workflow not found for ID: {ex.workflow_id}")
    if not run.running:
        raise ServiceError.not_found("workflow execution already completed")
    return run


def pending(tx: Tx, run_id: str) -> list[_Task]:
    """The run's pending activities, with the id and type of their scheduled events."""
    lock = "" if tx.store.is_sqlite else " FOR UPDATE OF t"
    rows = tx.all(
        "SELECT t.seq, t.state, t.paused, t.pause_request_id, t.task_queue, e.event"
        " FROM activity_tasks t JOIN history e"
        " ON e.run_id = t.run_id AND e.event_id = t.scheduled_event_id"
        f" WHERE t.run_id = %s ORDER BY t.seq{lock}",
        (run_id,),
    )
    out = []
    for seq, state, paused, pause_request_id, task_queue, event in rows:
        a = hist.HistoryEvent.FromString(bytes(event)).activity_task_scheduled_event_attributes
        out.append(
            _Task(
                int(seq), a.activity_id or str(seq), a.activity_type.name, str(state),
                bool(paused), pause_request_id, str(task_queue),
            )
        )
    return out


def _targets(tx: Tx, run: h.Run, req: Any, all_field: str) -> list[_Task]:
    tasks = pending(tx, run.run_id)
    which = req.WhichOneof("activity")
    if which == "id":
        chosen = [t for t in tasks if t.activity_id == req.id]
    elif which == "type":
        chosen = [t for t in tasks if t.activity_type == req.type]
    else:
        chosen = tasks if getattr(req, all_field) else []
    if not chosen:
        raise ServiceError.not_found(ACTIVITY_NOT_FOUND)
    return chosen


# On Temporal an unpaused or reset attempt is dispatched through the activity retry timer and
# matching, so it starts a moment after the RPC returns, and describe() shows it unpaused but
# not yet done; callers (the SDK's own test helpers among them) rely on that. Here it would be
# claimed at once, so its dispatch waits this long, about Temporal's.
DISPATCH_DELAY = 0.2


def _jittered(now: float, jitter: Any) -> float:
    seconds = jitter.ToNanoseconds() / 1e9 if jitter is not None else 0.0
    return now + DISPATCH_DELAY + (random.uniform(0.0, seconds) if seconds > 0 else 0.0)


def _schedule_now(tx: Tx, run_id: str, task: _Task, at: float) -> None:
    tx.execute(
        "UPDATE activity_tasks SET available_at = %s, fair_pass = NULL"
        " WHERE run_id = %s AND seq = %s AND state = 'scheduled'",
        (at, run_id, task.seq),
    )
    tx.notify(f"act:{task.task_queue}")


def pause_in_tx(tx: Tx, req: rr.PauseActivityRequest) -> None:
    run = _run(tx, req)
    info = wf_pb.PendingActivityInfo.PauseInfo()
    info.pause_time.FromNanoseconds(time.time_ns())
    info.manual.identity = req.identity
    info.manual.reason = req.reason
    for task in _targets(tx, run, req, ""):
        if task.paused:
            if req.request_id and task.pause_request_id == req.request_id:
                continue  # the same request again
            raise ServiceError(FAILED_PRECONDITION, "activity is already paused")
        tx.execute(
            "UPDATE activity_tasks SET paused = 1, pause_info = %s, pause_request_id = %s"
            " WHERE run_id = %s AND seq = %s",
            (info.SerializeToString(), req.request_id or None, run.run_id, task.seq),
        )


def unpause_in_tx(tx: Tx, req: rr.UnpauseActivityRequest) -> None:
    run = _run(tx, req)
    now = tx.store.clock.now()
    for task in _targets(tx, run, req, "unpause_all"):
        if not task.paused:
            continue
        sets = ["paused = 0", "pause_info = NULL", "pause_request_id = NULL"]
        if req.reset_attempts:
            # A running attempt keeps its number (its task token carries it): its retry counts from 1.
            sets.append("attempts_reset = 1" if task.state == "running" else "attempt = 1")
        if req.reset_heartbeat:
            sets.append("details = NULL, heartbeat_at = NULL")
        tx.execute(
            f"UPDATE activity_tasks SET {', '.join(sets)} WHERE run_id = %s AND seq = %s",
            (run.run_id, task.seq),
        )
        if task.state == "scheduled":
            _schedule_now(tx, run.run_id, task, _jittered(now, req.jitter if req.HasField("jitter") else None))
    tx.notify(f"run:{run.run_id}")  # its driver looks at queue timeouts again


def reset_in_tx(tx: Tx, req: rr.ResetActivityRequest) -> None:
    run = _run(tx, req)
    now = tx.store.clock.now()
    for task in _targets(tx, run, req, "match_all"):
        unpause = task.paused and not req.keep_paused
        sets = []
        if unpause:
            sets.append("paused = 0, pause_info = NULL, pause_request_id = NULL")
        if task.state == "running":
            # The attempt learns of it at its next heartbeat. It keeps its number (its task token
            # carries it, and its outcome is still accepted); its retry is attempt 2.
            sets.append("reset_requested = 1, attempts_reset = 1")
            if req.reset_heartbeat:
                sets.append("reset_heartbeats = 1")
        else:
            sets.append("attempt = 1")
            if req.reset_heartbeat:
                sets.append("details = NULL, heartbeat_at = NULL")
        tx.execute(
            f"UPDATE activity_tasks SET {', '.join(sets)} WHERE run_id = %s AND seq = %s",
            (run.run_id, task.seq),
        )
        if task.state == "scheduled" and (unpause or not task.paused):
            _schedule_now(tx, run.run_id, task, _jittered(now, req.jitter if req.HasField("jitter") else None))
    tx.notify(f"run:{run.run_id}")


async def pause(store: Store, req: rr.PauseActivityRequest) -> Message:
    _validate(req)
    await store.transact(req.namespace, lambda tx: pause_in_tx(tx, req))
    return rr.PauseActivityResponse()


async def unpause(store: Store, req: rr.UnpauseActivityRequest) -> Message:
    _validate(req)
    await store.transact(req.namespace, lambda tx: unpause_in_tx(tx, req))
    return rr.UnpauseActivityResponse()


async def reset(store: Store, req: rr.ResetActivityRequest) -> Message:
    _validate(req)
    await store.transact(req.namespace, lambda tx: reset_in_tx(tx, req))
    return rr.ResetActivityResponse()


def describe_pending(
    pa: wf_pb.PendingActivityInfo, state: str, cancel_requested: bool, paused: bool,
    pause_info: bytes | None,
) -> None:
    """A pending activity's state and pause info in DescribeWorkflowExecution, as Temporal shows them."""
    running = state == "running"
    if cancel_requested:
        pa.state = wfenums.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED
    elif paused:
        pa.state = (
            wfenums.PENDING_ACTIVITY_STATE_PAUSE_REQUESTED if running
            else wfenums.PENDING_ACTIVITY_STATE_PAUSED
        )
    else:
        pa.state = (
            wfenums.PENDING_ACTIVITY_STATE_STARTED if running
            else wfenums.PENDING_ACTIVITY_STATE_SCHEDULED
        )
    pa.paused = paused
    if paused and pause_info:
        pa.pause_info.ParseFromString(pause_info)
