"""Standalone activities: started by a client, run by any worker polling the task queue.

A standalone activity is a row of ``activity_executions`` (its options, status, outcome) and,
while it runs, one row of ``activity_tasks`` with ``seq`` 0 (`STANDALONE_SEQ`; a workflow's
activities number from 1). So its attempts are claimed by the same query as a workflow's
activities, carry the same task tokens, heartbeat and time out in the same worker watchdog, and a
dead worker's attempt is handed out again by the same reaper. What differs is where an attempt's
outcome goes: here, into the row, in one transaction with the decision to retry or close.

Locks are taken task row first, then the activity's row, in every path (a claim holds the task row
when it updates the activity's), so that two transactions never wait on each other in a cycle.
Timeouts that no worker watches (a task waiting in its queue, an attempt completed asynchronously)
are found by `expire_due`, which every activity worker runs when the earliest ``check_at`` is due.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.activity.v1 import message_pb2 as activity_pb
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.bridge.proto.activity_task import activity_task_pb2 as at

from dbosify._engine import activity_attempts as attempts
from dbosify._engine.errors import FAILED_PRECONDITION, ServiceError
from dbosify._store import Tx

STANDALONE_SEQ = 0
RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED, TIMED_OUT = 1, 2, 3, 4, 5, 6
DUE_KEY = "sa-due"  # wakes the sweeps (`expire_due`) when a check falls earlier than all others


def result_key(run_id: str) -> str:
    """Notified at every transition of the activity: result polls and describe long-polls wait on it."""
    return f"actx:{run_id}"


_COLS = (
    "run_id, activity_id, activity_type, task_queue, status, request_id, start_time,"
    " execution_time, close_time, request, outcome, search_attributes, attempt, last_started,"
    " last_completed, last_identity, last_failure, last_details, last_heartbeat, cancel_reason,"
    " cancel_request_id, terminate_request_id, transitions, heartbeats"
)


@dataclass
class Row:
    run_id: str
    activity_id: str
    activity_type: str
    task_queue: str
    status: int
    request_id: str | None
    start_time: float
    execution_time: float
    close_time: float | None
    request: rr.StartActivityExecutionRequest
    outcome: bytes | None
    search_attributes: bytes | None
    attempt: int
    last_started: float | None
    last_completed: float | None
    last_identity: str | None
    last_failure: bytes | None
    last_details: bytes | None
    last_heartbeat: float | None
    cancel_reason: str | None
    cancel_request_id: str | None
    terminate_request_id: str | None
    transitions: int
    heartbeats: int

    @property
    def running(self) -> bool:
        return self.status == RUNNING


def _row(r: Any) -> Row:
    vals = list(r)
    vals[9] = rr.StartActivityExecutionRequest.FromString(bytes(vals[9]))
    for i in (10, 11, 16, 17):
        vals[i] = bytes(vals[i]) if vals[i] is not None else None
    return Row(*vals)


def _lock(tx: Tx) -> str:
    return "" if tx.store.is_sqlite else " FOR UPDATE"


def load(tx: Tx, run_id: str, *, lock: bool = False) -> Row | None:
    r = tx.one(
        f"SELECT {_COLS} FROM activity_executions WHERE run_id = %s{_lock(tx) if lock else ''}",
        (run_id,),
    )
    return _row(r) if r is not None else None


def find(tx: Tx, activity_id: str, run_id: str | None) -> Row | None:
    """The run ``run_id`` of ``activity_id``, or its latest run."""
    if run_id:
        row = load(tx, run_id)
        return row if row is not None and row.activity_id == activity_id else None
    r = tx.one(
        f"SELECT {_COLS} FROM activity_executions WHERE activity_id = %s"
        " ORDER BY start_time DESC, run_id DESC LIMIT 1",
        (activity_id,),
    )
    return _row(r) if r is not None else None


@dataclass
class Task:
    """The activity's row of activity_tasks: the current (or next) attempt."""

    attempt: int
    state: str  # scheduled | running
    owner: str | None
    available_at: float
    started_at: float | None
    heartbeat_at: float | None
    details: bytes | None
    cancel_requested: bool
    last_failure: bytes | None


def task(tx: Tx, run_id: str, *, lock: bool = False) -> Task | None:
    r = tx.one(
        "SELECT attempt, state, owner, available_at, started_at, heartbeat_at, details,"
        " cancel_requested, last_failure FROM activity_tasks WHERE run_id = %s AND seq = 0"
        + (_lock(tx) if lock else ""),
        (run_id,),
    )
    if r is None:
        return None
    return Task(
        int(r[0]), str(r[1]), r[2], float(r[3]), r[4], r[5],
        bytes(r[6]) if r[6] is not None else None, bool(r[7]),
        bytes(r[8]) if r[8] is not None else None,
    )


def _dur(req: Message, field: str) -> float | None:
    return attempts._dur(req, field)


# -- when to look again ------------------------------------------------------------------------


def _next_check(row: Row, t: Task | None, now: float) -> float | None:
    """The earliest moment a timeout of this activity may fall due that no worker watches."""
    req = row.request
    s2c, s2s, stc = (
        _dur(req, "schedule_to_close_timeout"),
        _dur(req, "schedule_to_start_timeout"),
        _dur(req, "start_to_close_timeout"),
    )
    times = [row.start_time + s2c] if s2c else []
    if t is not None and t.state == "scheduled" and s2s:
        times.append(t.available_at + s2s)
    if t is not None and t.state == "running":
        if stc and t.started_at is not None:
            times.append(t.started_at + stc)
        if s2s:
            times.append(now + s2s)  # a takeover requeues it no earlier than now
    return min(times) if times else None


def set_check(tx: Tx, run_id: str, when: float | None) -> None:
    """Record when to look at this activity; wake the sweeps if that is earlier than every other."""
    if when is not None:
        other = tx.one(
            "SELECT min(check_at) FROM activity_executions WHERE check_at IS NOT NULL AND run_id <> %s",
            (run_id,),
        )
        if other is None or other[0] is None or when < float(other[0]):
            tx.notify(DUE_KEY)
    tx.execute("UPDATE activity_executions SET check_at = %s WHERE run_id = %s", (when, run_id))


# -- claiming ----------------------------------------------------------------------------------


def claimed(
    tx: Tx, namespace: str, run_id: str, attempt: int, details: Any, avail: float, now: float
) -> attempts.Claimed | None:
    """The attempt just claimed (its task row is locked and marked running): the task to run.
    None if the activity is gone or closed (its stray task row is removed)."""
    row = load(tx, run_id, lock=True)
    if row is None or not row.running:
        tx.execute("DELETE FROM activity_tasks WHERE run_id = %s AND seq = 0", (run_id,))
        return None
    req = row.request
    tx.execute(
        "UPDATE activity_executions SET last_started = %s, transitions = transitions + 1"
        " WHERE run_id = %s",
        (now, run_id),
    )
    t = Task(attempt, "running", None, avail, now, None, None, False, None)
    set_check(tx, run_id, _next_check(row, t, now))
    tx.notify(result_key(run_id))
    task = at.ActivityTask(task_token=attempts.make_token(run_id, STANDALONE_SEQ, attempt))
    s = task.start
    s.workflow_namespace = namespace
    s.run_id = run_id
    s.activity_id = row.activity_id
    s.activity_type = row.activity_type
    for k, v in req.header.fields.items():
        s.header_fields[k].CopyFrom(v)
    s.input.extend(req.input.payloads)
    if details:
        s.heartbeat_details.extend(common.Payloads.FromString(bytes(details)).payloads)
    s.scheduled_time.FromNanoseconds(int(row.start_time * 1e9))
    s.current_attempt_scheduled_time.FromNanoseconds(int(avail * 1e9))
    s.started_time.FromNanoseconds(int(now * 1e9))
    s.attempt = attempt
    for f in ("schedule_to_close_timeout", "start_to_close_timeout", "heartbeat_timeout", "retry_policy", "priority"):
        if req.HasField(f):
            getattr(s, f).CopyFrom(getattr(req, f))
    s2c = _dur(req, "schedule_to_close_timeout")
    return attempts.Claimed(
        run_id, STANDALONE_SEQ, attempt, task,
        _dur(req, "start_to_close_timeout"), _dur(req, "heartbeat_timeout"),
        row.start_time + s2c if s2c else None,
    )


# -- outcomes ----------------------------------------------------------------------------------


def _string_payloads(text: str) -> common.Payloads:
    p = common.Payloads()
    p.payloads.add(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())
    return p


def close(
    tx: Tx, row: Row, status: int, outcome: Any, *, identity: str = "", attempt: int | None = None,
    last_failure: failure_pb.Failure | None = None,
) -> None:
    """Close the activity (its task row goes), and wake whoever waits for its outcome."""
    now = tx.store.clock.now()
    t = task(tx, row.run_id)
    tx.execute(
        "UPDATE activity_executions SET status = %s, close_time = %s, outcome = %s, attempt = %s,"
        " last_completed = CASE WHEN %s THEN %s ELSE last_completed END,"
        " last_identity = COALESCE(%s, last_identity), last_failure = COALESCE(%s, last_failure),"
        " last_details = COALESCE(%s, last_details), last_heartbeat = COALESCE(%s, last_heartbeat),"
        " transitions = transitions + 1, check_at = NULL WHERE run_id = %s",
        (
            status, now, outcome.SerializeToString(),
            attempt if attempt is not None else (t.attempt if t else row.attempt),
            t is not None and t.state == "running", now, identity or None,
            last_failure.SerializeToString() if last_failure is not None else (t.last_failure if t else None),
            t.details if t else None, t.heartbeat_at if t else None, row.run_id,
        ),
    )
    tx.execute("DELETE FROM activity_tasks WHERE run_id = %s AND seq = 0", (row.run_id,))
    tx.notify(result_key(row.run_id))


def finish(
    tx: Tx, run_id: str, attempt: int, kind: str, payload: Message | None, identity: str,
    *, timeout_kind: int = 0,
) -> bool:
    """Record an attempt's outcome (`_activity_tasks.finish` for seq 0): the next attempt, or
    the activity's close. Returns False if the attempt is no longer current."""
    t = task(tx, run_id, lock=True)
    if t is None or t.attempt != attempt or t.state != "running":
        return False
    row = load(tx, run_id, lock=True)
    if row is None or not row.running:
        return False
    now = tx.store.clock.now()
    req = row.request
    outcome = activity_pb.ActivityExecutionOutcome()
    if kind == "completed":
        if isinstance(payload, common.Payloads):
            outcome.result.CopyFrom(payload)
        close(tx, row, COMPLETED, outcome, identity=identity)
        return True
    if kind == "canceled":
        if not t.cancel_requested:
            return False  # nobody asked: refused (the RPCs say why, see `check_cancelable`)
        f = outcome.failure
        f.message = "Activity canceled"
        f.canceled_failure_info.SetInParent()
        if isinstance(payload, common.Payloads):
            f.canceled_failure_info.details.CopyFrom(payload)
        close(tx, row, CANCELED, outcome, identity=identity)
        return True
    assert isinstance(payload, failure_pb.Failure)
    failure = payload
    if timeout_kind:
        failure = attempts.timeout_failure(timeout_kind, payload if payload.message else None)
        if t.details:
            failure.timeout_failure_info.last_heartbeat_details.CopyFrom(
                common.Payloads.FromString(t.details)
            )
    delay = None if t.cancel_requested else attempts._retry_delay(req.retry_policy, attempt, failure)
    retry_state = wfenums.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED if delay is None else 0
    if t.cancel_requested:
        retry_state = wfenums.RETRY_STATE_CANCEL_REQUESTED
    s2c = _dur(req, "schedule_to_close_timeout")
    if delay is not None and s2c and now + delay >= row.start_time + s2c:
        delay, retry_state = None, wfenums.RETRY_STATE_TIMEOUT
    if delay is None and not retry_state:
        retry_state = wfenums.RETRY_STATE_NON_RETRYABLE_FAILURE
    if timeout_kind == attempts.TIMEOUT_SCHEDULE_TO_CLOSE:
        retry_state = wfenums.RETRY_STATE_TIMEOUT
    if delay is not None:
        tx.execute(
            "UPDATE activity_tasks SET attempt = attempt + 1, state = 'scheduled', owner = NULL,"
            " fair_pass = NULL, available_at = %s, last_failure = %s WHERE run_id = %s AND seq = 0",
            (now + delay, failure.SerializeToString(), run_id),
        )
        tx.execute(
            "UPDATE activity_executions SET last_completed = %s, last_identity = %s,"
            " last_failure = %s, transitions = transitions + 1 WHERE run_id = %s",
            (now, identity or row.last_identity, failure.SerializeToString(), run_id),
        )
        nxt = Task(attempt + 1, "scheduled", None, now + delay, None, None, None, False, None)
        set_check(tx, run_id, _next_check(row, nxt, now))
        tx.notify(f"act:{row.task_queue}")
        tx.notify(result_key(run_id))
        return True
    outcome.failure.CopyFrom(failure)
    outcome.retry_state = retry_state  # type: ignore[assignment]
    close(tx, row, TIMED_OUT if timeout_kind else FAILED, outcome, identity=identity,
          last_failure=failure)
    return True


def check_cancelable(tx: Tx, run_id: str) -> None:
    """Refuse, as Temporal does, to record as cancelled an attempt whose cancel nobody asked for."""
    t = task(tx, run_id)
    if t is not None and t.state == "running" and not t.cancel_requested:
        raise ServiceError(
            FAILED_PRECONDITION,
            "unable to mark activity as canceled: its cancellation was not requested"
            " (invalid transition from Started)",
        )


def heartbeat_on_closed(tx: Tx, run_id: str) -> bool:
    """A heartbeat of an attempt that is gone: True (cancel it) if the activity has closed."""
    row = tx.one("SELECT status FROM activity_executions WHERE run_id = %s", (run_id,))
    return row is not None and int(row[0]) != RUNNING


# -- cancel and terminate ----------------------------------------------------------------------


def request_cancel(tx: Tx, run_id: str, reason: str, request_id: str, identity: str) -> None:
    t = task(tx, run_id, lock=True)
    row = load(tx, run_id, lock=True)
    assert row is not None
    if request_id and row.cancel_request_id == request_id:
        return  # a retry of the same request
    if not row.running:
        raise ServiceError(FAILED_PRECONDITION, f"activity is in terminal state {_STATUS_NAMES[row.status]}")
    if t is not None and t.cancel_requested:
        raise ServiceError(
            FAILED_PRECONDITION, f"cancellation already requested with request ID {row.cancel_request_id}"
        )
    tx.execute(
        "UPDATE activity_executions SET cancel_reason = %s, cancel_request_id = %s,"
        " transitions = transitions + 1 WHERE run_id = %s",
        (reason, request_id, run_id),
    )
    if t is not None and t.state == "running":
        # The worker learns of it at its next heartbeat (or at once: its cancel check).
        tx.execute("UPDATE activity_tasks SET cancel_requested = 1 WHERE run_id = %s AND seq = 0", (run_id,))
        tx.notify(f"actcancel:{t.owner}")
        tx.notify(result_key(run_id))
        return
    outcome = activity_pb.ActivityExecutionOutcome()
    f = outcome.failure
    f.message = "Activity canceled"
    f.canceled_failure_info.details.CopyFrom(_string_payloads(reason))
    f.canceled_failure_info.identity = identity
    close(tx, row, CANCELED, outcome)


def terminate(tx: Tx, run_id: str, reason: str, request_id: str, identity: str) -> None:
    task(tx, run_id, lock=True)
    row = load(tx, run_id, lock=True)
    assert row is not None
    if row.status == TERMINATED and (not request_id or row.terminate_request_id == request_id):
        return
    if not row.running:
        raise ServiceError(FAILED_PRECONDITION, f"activity is in terminal state {_STATUS_NAMES[row.status]}")
    outcome = activity_pb.ActivityExecutionOutcome()
    outcome.failure.message = reason
    outcome.failure.terminated_failure_info.identity = identity
    tx.execute(
        "UPDATE activity_executions SET terminate_request_id = %s WHERE run_id = %s",
        (request_id, run_id),
    )
    close(tx, row, TERMINATED, outcome)


_STATUS_NAMES = {
    RUNNING: "Running", COMPLETED: "Completed", FAILED: "Failed", CANCELED: "Canceled",
    TERMINATED: "Terminated", TIMED_OUT: "TimedOut",
}


# -- timeouts nobody watches -------------------------------------------------------------------

SWEEP_BATCH = 64


def expire_due(tx: Tx) -> tuple[int, float | None]:
    """Time out the activities whose check is due; returns how many were looked at and when the
    next check is due. Any process may run it: each activity is decided under its row locks."""
    now = tx.store.clock.now()
    due = [
        str(r[0])
        for r in tx.all(
            "SELECT run_id FROM activity_executions WHERE check_at <= %s ORDER BY check_at LIMIT %s",
            (now, SWEEP_BATCH),
        )
    ]
    for run_id in due:
        _expire(tx, run_id, now)
    tx.keys_to_fire.discard(DUE_KEY)  # a sweep only moves checks later
    nxt = tx.one("SELECT min(check_at) FROM activity_executions WHERE check_at IS NOT NULL")
    return len(due), (float(nxt[0]) if nxt is not None and nxt[0] is not None else None)


def _expire(tx: Tx, run_id: str, now: float) -> None:
    t = task(tx, run_id, lock=True)
    row = load(tx, run_id, lock=True)
    if row is None:
        return
    if not row.running or t is None:
        tx.execute("UPDATE activity_executions SET check_at = NULL WHERE run_id = %s", (run_id,))
        return
    req = row.request
    s2c, s2s, stc = (
        _dur(req, "schedule_to_close_timeout"),
        _dur(req, "schedule_to_start_timeout"),
        _dur(req, "start_to_close_timeout"),
    )
    due: list[tuple[float, int]] = []
    if s2c and row.start_time + s2c <= now:
        due.append((row.start_time + s2c, attempts.TIMEOUT_SCHEDULE_TO_CLOSE))
    if t.state == "scheduled" and s2s and t.available_at + s2s <= now:
        due.append((t.available_at + s2s, attempts.TIMEOUT_SCHEDULE_TO_START))
    if t.state == "running" and stc and t.started_at is not None and t.started_at + stc <= now:
        due.append((t.started_at + stc, attempts.TIMEOUT_START_TO_CLOSE))
    if not due:
        set_check(tx, run_id, _next_check(row, t, now))
        return
    # On a tie (a schedule-to-start deduced from schedule-to-close), schedule-to-close it is.
    kind = min(due, key=lambda d: (d[0], d[1] != attempts.TIMEOUT_SCHEDULE_TO_CLOSE))[1]
    if t.state == "running":
        # As the worker's watchdog would: the attempt fails with the timeout (maybe retried).
        finish(tx, run_id, t.attempt, "failed", failure_pb.Failure(), "", timeout_kind=kind)
        return
    outcome = activity_pb.ActivityExecutionOutcome()
    last = failure_pb.Failure.FromString(t.last_failure) if t.last_failure else None
    outcome.failure.CopyFrom(attempts.timeout_failure(kind, last))
    outcome.retry_state = wfenums.RETRY_STATE_TIMEOUT
    close(tx, row, TIMED_OUT, outcome, attempt=t.attempt)
