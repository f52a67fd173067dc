"""Temporal's frontend limits, checked on a request before anything is written.

Each check answers as Temporal's frontend does (the texts are Temporal's own):

- ids and names (workflow id, task queue, workflow and activity types, activity id, signal name,
  update id, namespace): at most ``limit.maxIDLength`` (1,000) bytes;
- a NUL inside an id or a name: INVALID_ARGUMENT here (the database's text cannot hold it);
- request payloads: over the namespace's ``limit.blobSize.error`` (2 MiB), "Blob data size
  exceeds limit."; memos over ``limit.memoSize.error``, "Memo size exceeds limit.";
- search attribute values over ``limit.searchAttributesSizeOfValue`` (2 KiB).

The values are `dbosify._store.limits.Limits`; the limits on what workers send and on history are
checked in `dbosify._engine.limits`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.failure.v1 import message_pb2 as failure_pb

from dbosify._engine.errors import ServiceError
from dbosify._engine.limits import BLOB_TOO_LARGE, MEMO_TOO_LARGE, _length, _measured
from dbosify._store.limits import NOT_UTF8, NUL, TOO_LONG, Limits, byte_length, id_problem

logger = logging.getLogger("dbosify.limits")


# -- ids and names -------------------------------------------------------------------------------

def _no_nul(label: str, value: str) -> None:
    if "\x00" in value:
        raise ServiceError.invalid(f"{label} contains a NUL character, which cannot be stored.")


def _check_id(limits: Limits, label: str, value: str, message: Callable[[int, int], str]) -> None:
    problem = id_problem(value, limits.max_id_length)
    if problem == NUL:
        _no_nul(label, value)
    elif problem == NOT_UTF8:
        raise ServiceError.invalid(f"{label} is not valid UTF-8.")
    elif problem == TOO_LONG:
        raise ServiceError.invalid(message(byte_length(value), limits.max_id_length))


def _fixed(text: str) -> Callable[[int, int], str]:
    return lambda n, limit: text


def _counted(label: str) -> Callable[[int, int], str]:
    return lambda n, limit: f"{label} exceeds maximum allowed length ({n}/{limit})"


# Strings that name something stored as text (a column, a key): a NUL is refused in each of them,
# wherever it is in a request. Payloads, failures and the like are stored as bytes and not looked at.
_NAMED_FIELDS = frozenset({
    "namespace", "workflow_id", "run_id", "first_execution_run_id", "request_id", "activity_id",
    "update_id", "schedule_id", "name", "signal_name", "query_type", "task_queue", "deployment_name",
    "build_id", "fairness_key",
})
_OPAQUE = (common.Payload, common.Payloads, common.Memo, common.Header, common.SearchAttributes,
           failure_pb.Failure)


def _refuse_nul(msg: Message, depth: int = 0) -> None:
    if isinstance(msg, _OPAQUE) or depth > 8:
        return
    for field, value in msg.ListFields():
        if field.message_type is None:
            if field.name in _NAMED_FIELDS and isinstance(value, str):
                _no_nul(_label(field.name), value)
            continue
        if field.message_type.GetOptions().map_entry:
            continue
        for item in (value if field.is_repeated else [value]):
            _refuse_nul(item, depth + 1)


def _label(field: str) -> str:
    return {"workflow_id": "WorkflowId", "run_id": "RunId", "namespace": "Namespace"}.get(
        field, "".join(p[:1].upper() + p[1:] for p in field.split("_"))
    )


# -- payloads ------------------------------------------------------------------------------------

def _blob(limits: Limits, msg: Message | None) -> None:
    if msg is not None and msg.ByteSize() > limits.blob_error:
        raise ServiceError.invalid(BLOB_TOO_LARGE)


def _memo(limits: Limits, req: Any) -> None:
    if req.HasField("memo") and req.memo.ByteSize() > limits.memo_error:
        raise ServiceError.invalid(MEMO_TOO_LARGE)


def _search_attributes(limits: Limits, req: Any) -> None:
    if not req.HasField("search_attributes"):
        return
    for name, payload in req.search_attributes.indexed_fields.items():
        size = len(payload.data)
        if size > limits.search_attribute_value:
            raise ServiceError.invalid(
                f"search attribute {name} value size {size} exceeds size limit {limits.search_attribute_value}"
            )


def _field(req: Any, name: str) -> Message | None:
    return getattr(req, name) if req.HasField(name) else None


# -- the requests --------------------------------------------------------------------------------

def _start(limits: Limits, req: Any) -> None:
    _check_id(limits, "WorkflowId", req.workflow_id, _counted("WorkflowId"))
    _check_id(limits, "WorkflowType", req.workflow_type.name, _fixed("WorkflowType length exceeds limit."))
    _check_id(limits, "TaskQueue", req.task_queue.name, _fixed("taskQueue length exceeds limit"))
    _search_attributes(limits, req)
    _memo(limits, req)
    _blob(limits, _field(req, "input"))


def _signal_with_start(limits: Limits, req: Any) -> None:
    _start(limits, req)
    _check_id(limits, "SignalName", req.signal_name, _counted("signal name"))
    _blob(limits, _field(req, "signal_input"))


def _signal(limits: Limits, req: Any) -> None:
    _check_id(limits, "SignalName", req.signal_name, _fixed("SignalName length exceeds limit."))
    _blob(limits, _field(req, "input"))


def _update(limits: Limits, req: Any) -> None:
    _check_id(limits, "UpdateId", req.request.meta.update_id, _fixed("UpdateId length exceeds limit."))
    _blob(limits, _field(req.request.input, "args"))


def _query(limits: Limits, req: Any) -> None:
    _blob(limits, _field(req.query, "query_args"))


def _multi(limits: Limits, req: Any) -> None:
    for op in req.operations:
        kind = op.WhichOneof("operation")
        if kind == "start_workflow":
            _start(limits, op.start_workflow)
        elif kind == "update_workflow":
            _update(limits, op.update_workflow)


def _start_activity(limits: Limits, req: Any) -> None:
    _check_id(limits, "ActivityId", req.activity_id, _measured("activityId"))
    _check_id(limits, "ActivityType", req.activity_type.name, _measured("activityType"))
    _check_id(limits, "TaskQueue", req.task_queue.name, _fixed("taskQueue length exceeds limit"))
    _search_attributes(limits, req)
    _blob(limits, _field(req, "input"))


def _schedule(limits: Limits, req: Any) -> None:
    _check_id(limits, "ScheduleId", req.schedule_id, _counted("ScheduleId"))
    _memo(limits, req)
    _search_attributes(limits, req)
    action = req.schedule.action
    if action.HasField("start_workflow"):
        start = action.start_workflow
        _check_id(limits, "WorkflowId", start.workflow_id, _counted("WorkflowId"))
        _check_id(limits, "WorkflowType", start.workflow_type.name, _fixed("WorkflowType length exceeds limit."))
        _check_id(limits, "TaskQueue", start.task_queue.name, _fixed("taskQueue length exceeds limit"))
        _memo(limits, start)
        _blob(limits, _field(start, "input"))


_CHECKS: dict[str, Callable[[Limits, Any], None]] = {
    "start_workflow_execution": _start,
    "signal_with_start_workflow_execution": _signal_with_start,
    "signal_workflow_execution": _signal,
    "update_workflow_execution": _update,
    "query_workflow": _query,
    "execute_multi_operation": _multi,
    "start_activity_execution": _start_activity,
    "create_schedule": _schedule,
}


def check_request(limits: Limits, rpc: str, req: Message) -> None:
    """Refuse a request over Temporal's frontend limits (INVALID_ARGUMENT), before any transaction."""
    namespace = getattr(req, "namespace", None)
    if isinstance(namespace, str) and _length(namespace) > limits.max_id_length:
        raise ServiceError.invalid("Namespace length exceeds limit.")
    _refuse_nul(req)
    check = _CHECKS.get(rpc)
    if check is not None:
        check(limits, req)


