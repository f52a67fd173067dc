"""A run's steps in DBOS's `operation_outputs`, for ``dbos workflow steps`` and
`DBOSClient.list_workflow_steps`.

A step is a command the workflow gave: an activity, a local activity, a timer (``sleep``), a
child workflow (with the child's DBOS ID), a signal or a cancel sent to another run. Its
`function_id` is the event ID of the command's first event in the run's history (`step_id`):
unique in the run and in the order the workflow gave its commands, whatever the kind (Temporal's
per-kind sequence numbers repeat across kinds, and DBOS keys steps by `function_id`).

The row is written by `_engine.history.append`, in the transaction that appends the event: inserted
with the scheduling event, completed (output or error, end time) with the result event. No
statement of its own is committed, and nothing is written where DBOS rows are off.
"""

from __future__ import annotations

import json
import time
from typing import Any

from temporalio.api.enums.v1 import event_type_pb2 as et

from dbosify._dbos import records
from dbosify._store import Tx
from dbosify._store import dbos_ids as ids

E = et

LOCAL_ACTIVITY_MARKER = "core_local_activity"


def step_id(scheduling_event_id: int) -> int:
    """The DBOS `function_id` of the step whose command's first event is ``scheduling_event_id``."""
    return scheduling_event_id


_STARTS: dict[int, Any] = {
    E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: lambda a: a.activity_type.name,
    E.EVENT_TYPE_TIMER_STARTED: lambda a: "sleep",
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: lambda a: a.workflow_type.name,
    E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: lambda a: f"signal:{a.signal_name}",
    E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: lambda a: "cancel",
}

# Result event -> the attribute naming its step's first event.
_ENDS: dict[int, str] = {
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "scheduled_event_id",
    E.EVENT_TYPE_ACTIVITY_TASK_FAILED: "scheduled_event_id",
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "scheduled_event_id",
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "scheduled_event_id",
    E.EVENT_TYPE_TIMER_FIRED: "started_event_id",
    E.EVENT_TYPE_TIMER_CANCELED: "started_event_id",
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED: "initiated_event_id",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: "initiated_event_id",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: "initiated_event_id",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: "initiated_event_id",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: "initiated_event_id",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: "initiated_event_id",
    E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED: "initiated_event_id",
    E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED: "initiated_event_id",
    E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED: "initiated_event_id",
    E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED: "initiated_event_id",
}

WATCHED = frozenset(_STARTS) | frozenset(_ENDS) | {
    E.EVENT_TYPE_MARKER_RECORDED, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED,
    E.EVENT_TYPE_ACTIVITY_TASK_STARTED,
}

_ERROR_NAMES: dict[int, str] = {
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "TimeoutError",
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "Cancelled",
    E.EVENT_TYPE_TIMER_CANCELED: "Cancelled",
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED: "WorkflowExecutionAlreadyStarted",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: "Cancelled",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: "Terminated",
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: "TimeoutError",
    E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED: "NotFound",
    E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED: "NotFound",
}


def _failure_json(f: Any, name: str, attempt: int | None = None) -> str:
    inner = f.cause if f.HasField("cause") else f
    if inner.HasField("application_failure_info") and inner.application_failure_info.type:
        name = inner.application_failure_info.type
    out: dict[str, Any] = {"name": name, "message": inner.message or f.message}
    if attempt:
        out["attempt"] = attempt
    return json.dumps(out)


def _result(event_type: int, attrs: Any, attempt: int | None) -> tuple[str | None, str | None]:
    """(output, error) of a step's result event, in DBOS's portable JSON."""
    if event_type in (E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED):
        payloads = list(attrs.result.payloads)
        return json.dumps(records.payload_json(payloads[0]) if payloads else None), None
    if event_type in (
        E.EVENT_TYPE_TIMER_FIRED, E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED,
        E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
    ):
        return "null", None
    if event_type in (E.EVENT_TYPE_ACTIVITY_TASK_FAILED, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED):
        kind = "ActivityError" if event_type == E.EVENT_TYPE_ACTIVITY_TASK_FAILED else "ChildWorkflowError"
        return None, _failure_json(attrs.failure, kind, attempt)
    if event_type == E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
        return None, _failure_json(attrs.failure, "TimeoutError", attempt)
    name = _ERROR_NAMES.get(event_type, "Error")
    return None, json.dumps({"name": name, "message": name})


def _attempts(tx: Tx) -> dict[tuple[str, int], int]:
    """Attempts of activities whose started event this transaction appended (the result event
    that follows it in the same transaction takes it)."""
    got: dict[tuple[str, int], int] | None = getattr(tx, "_dbos_attempts", None)
    if got is None:
        got = {}
        tx._dbos_attempts = got  # type: ignore[attr-defined]
    return got


def on_event(
    tx: Tx, run_id: str, workflow_id: str, event_id: int, event_type: int, attrs: Any, seq: int | None,
) -> None:
    """Called by `_engine.history.append` for each event of a `WATCHED` type."""
    if not records.enabled(tx):
        return
    ms = int(time.time() * 1000)  # DBOS's timestamps are wall time, as the run's row
    uuid = ids.workflow_uuid(tx.namespace, workflow_id, run_id)
    table = records.table(tx, "operation_outputs")
    start = _STARTS.get(event_type)
    if start is not None:
        _insert(tx, table, uuid, step_id(event_id), start(attrs), ms, None, None, None)
        return
    if event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
        _attempts(tx)[(run_id, attrs.scheduled_event_id)] = attrs.attempt
        return
    if event_type == E.EVENT_TYPE_MARKER_RECORDED:
        if attrs.marker_name != LOCAL_ACTIVITY_MARKER:
            return
        name = "local_activity"
        if attrs.HasField("failure"):
            info = attrs.failure.activity_failure_info
            name = info.activity_type.name or name
            output, error = None, _failure_json(attrs.failure, "ActivityError")
        else:
            data = list(attrs.details["data"].payloads) if "data" in attrs.details else []
            output, error = json.dumps(records.payload_json(data[0]) if data else None), None
        _insert(tx, table, uuid, step_id(event_id), name, ms, ms, output, error)
        return
    if event_type == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
        child = ids.workflow_uuid(
            attrs.namespace or tx.namespace, attrs.workflow_execution.workflow_id,
            attrs.workflow_execution.run_id,
        )
        tx.execute(
            f"UPDATE {table} SET child_workflow_id = %s WHERE workflow_uuid = %s AND function_id = %s",
            (child, uuid, step_id(attrs.initiated_event_id)),
        )
        return
    field = _ENDS.get(event_type)
    if field is None:
        return
    first = int(getattr(attrs, field))
    if not first and event_type == E.EVENT_TYPE_TIMER_FIRED and seq is not None:
        # A fired timer names its start by sequence here (its started_event_id is not set).
        row = tx.one(
            "SELECT event_id FROM history WHERE run_id = %s AND seq = %s AND event_type = %s",
            (run_id, seq, E.EVENT_TYPE_TIMER_STARTED),
        )
        first = int(row[0]) if row is not None else 0
    attempt = _attempts(tx).pop((run_id, first), None) if field == "scheduled_event_id" else None
    output, error = _result(event_type, attrs, attempt)
    tx.execute(
        f"UPDATE {table} SET output = %s, error = %s, completed_at_epoch_ms = %s"
        " WHERE workflow_uuid = %s AND function_id = %s",
        (output, error, ms, uuid, step_id(first)),
    )


def _insert(
    tx: Tx, table: str, uuid: str, function_id: int, name: str, started: int, completed: int | None,
    output: str | None, error: str | None,
) -> None:
    tx.execute(
        f"INSERT INTO {table} (workflow_uuid, function_id, function_name, output, error,"
        " started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name,"
        " retention_timestamp) VALUES (%s, %s, %s, %s, %s, %s, %s, 'portable_json', %s, %s)"
        " ON CONFLICT (workflow_uuid, function_id) DO NOTHING",
        (uuid, function_id, name, output, error, started, completed, records.APP, started),
    )
