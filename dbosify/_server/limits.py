"""Temporal's frontend limits, checked on a request before anything is written.

Each check answers as Temporal's frontend does (the texts are Temporal's own):

- ids and names (workflow id, task queue, workflow and activity types, activity id, signal name,
  update id, namespace): at most ``limit.maxIDLength`` (1,000) bytes;
- a NUL inside an id or a name: INVALID_ARGUMENT here (the database's text cannot hold it);
- request payloads: over the namespace's ``limit.blobSize.error`` (2 MiB), "Blob data size
  exceeds limit."; memos over ``limit.memoSize.error``, "Memo size exceeds limit.";
- search attribute values over ``limit.searchAttributesSizeOfValue`` (2 KiB);
- activity results sent by workers or by token over the blob limit fail the activity, as Temporal
  does (see `activity_outcome`);
- history size and event count (`history_over`): past the warn limits a warning is logged, past
  the error limits the run is terminated when its workflow task completes.

The limits are one `Limits` per store (``Store.limits``), with optional per-namespace overrides
(``Store.namespace_limits``), set from ``DBOSIFY_LIMITS`` and from a dev server's
``--dynamic-config-value limit.*=N``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.failure.v1 import message_pb2 as failure_pb

from dbosify._engine.errors import ServiceError

logger = logging.getLogger("dbosify.limits")

BLOB_TOO_LARGE = "Blob data size exceeds limit."
MEMO_TOO_LARGE = "Memo size exceeds limit."
HISTORY_SIZE_EXCEEDED = "Workflow history size exceeds limit."
HISTORY_COUNT_EXCEEDED = "Workflow history count exceeds limit."
# What Temporal records when an activity's outcome is over the blob limit.
RESULT_TOO_LARGE = "Complete result exceeds size limit."
FAILURE_TOO_LARGE = "Failure exceeds size limit."
CANCEL_DETAILS_TOO_LARGE = "Cancel details exceed size limit."
HEARTBEAT_TOO_LARGE = "Heartbeat details exceed size limit."
# What a worker's Core does with an activity result over the namespace's blob limit.
CORE_PAYLOADS_TOO_LARGE = "[TMPRL1103] Attempted to upload payloads with size that exceeded the error limit."


@dataclasses.dataclass
class Limits:
    """One namespace's limits: Temporal's defaults, each a dynamic config key of its server."""

    max_id_length: int = 1000  # limit.maxIDLength
    blob_warn: int = 512 * 1024  # limit.blobSize.warn
    blob_error: int = 2 * 1024 * 1024  # limit.blobSize.error
    memo_warn: int = 2 * 1024  # limit.memoSize.warn
    memo_error: int = 2 * 1024 * 1024  # limit.memoSize.error
    search_attribute_value: int = 2 * 1024  # limit.searchAttributesSizeOfValue
    history_size_warn: int = 10 * 1024 * 1024  # limit.historySize.warn
    history_size_error: int = 50 * 1024 * 1024  # limit.historySize.error
    history_count_warn: int = 10 * 1024  # limit.historyCount.warn
    history_count_error: int = 50 * 1024  # limit.historyCount.error


# The dynamic config keys a dev server's `--dynamic-config-value` may set here.
DYNAMIC_CONFIG: dict[str, str] = {
    "limit.maxIDLength": "max_id_length",
    "limit.blobSize.warn": "blob_warn",
    "limit.blobSize.error": "blob_error",
    "limit.memoSize.warn": "memo_warn",
    "limit.memoSize.error": "memo_error",
    "limit.searchAttributesSizeOfValue": "search_attribute_value",
    "limit.historySize.warn": "history_size_warn",
    "limit.historySize.error": "history_size_error",
    "limit.historyCount.warn": "history_count_warn",
    "limit.historyCount.error": "history_count_error",
}


def apply_dynamic_config(limits: Limits, key: str, value: str) -> bool:
    """Set one ``limit.*`` dynamic config value; False when ``key`` is not one of ours."""
    attr = DYNAMIC_CONFIG.get(key)
    if attr is None:
        return False
    setattr(limits, attr, int(value))
    return True


ENV = "DBOSIFY_LIMITS"  # e.g. "limit.blobSize.error=4194304,limit.historyCount.error=100000"


def from_env(environ: Mapping[str, str]) -> Limits:
    """Temporal's defaults, with the ``limit.*`` values of ``DBOSIFY_LIMITS`` (comma-separated)."""
    limits = Limits()
    for item in filter(None, (part.strip() for part in environ.get(ENV, "").split(","))):
        key, _, value = item.partition("=")
        try:
            known = apply_dynamic_config(limits, key.strip(), value.strip())
        except ValueError:
            known = False
        if not known:
            raise ValueError(f"{ENV}: {item!r} is not LIMIT=BYTES with one of {', '.join(DYNAMIC_CONFIG)}")
    return limits


# -- ids and names -------------------------------------------------------------------------------

def _length(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def _no_nul(label: str, value: str) -> None:
    if "\x00" in value:
        raise ServiceError.invalid(f"{label} contains a NUL character, which cannot be stored.")


def _check_id(limits: Limits, label: str, value: str, message: Callable[[int, int], str]) -> None:
    _no_nul(label, value)
    n = _length(value)
    if n > limits.max_id_length:
        raise ServiceError.invalid(message(n, limits.max_id_length))


def _fixed(text: str) -> Callable[[int, int], str]:
    return lambda n, limit: text


def _counted(label: str) -> Callable[[int, int], str]:
    return lambda n, limit: f"{label} exceeds maximum allowed length ({n}/{limit})"


def _measured(label: str) -> Callable[[int, int], str]:
    return lambda n, limit: f"{label} exceeds length limit. Length={n} Limit={limit}"


# Strings that name something stored as text (a column, a key): a NUL is refused in each of them,
# wherever it is in a request. Payloads, failures and the like are stored as bytes and not looked at.
_NAMED_FIELDS = frozenset({
    "namespace", "workflow_id", "run_id", "first_execution_run_id", "request_id", "activity_id",
    "update_id", "schedule_id", "name", "signal_name", "query_type", "task_queue", "deployment_name",
    "build_id",
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


def schedule_activity_problem(limits: Limits, activity_id: str, activity_type: str, task_queue: str) -> str | None:
    """Why Temporal refuses a worker's ScheduleActivityTask command by its ids, else None."""
    for label, value in (("activityId", activity_id), ("activityType", activity_type), ("TaskQueue", task_queue)):
        if "\x00" in value:
            return f"BadScheduleActivityAttributes: {label} contains a NUL character, which cannot be stored."
        n = _length(value)
        if n > limits.max_id_length:
            return f"BadScheduleActivityAttributes: {_measured(label)(n, limits.max_id_length)}"
    return None


# -- activity outcomes ---------------------------------------------------------------------------

def _server_failure(message: str) -> failure_pb.Failure:
    f = failure_pb.Failure(message=message, source="")
    f.server_failure_info.non_retryable = True
    return f


def activity_outcome(limits: Limits, kind: str, payload: Message | None, *, worker: bool) -> tuple[str, Message | None]:
    """An activity attempt's outcome, as recorded: one over the blob limit fails the attempt.

    A worker's Core fails an attempt whose result is too large (retryably, PayloadsTooLarge);
    Temporal's frontend replaces a result, failure or cancel details that are too large with a
    non-retryable server failure.
    """
    if payload is None or payload.ByteSize() <= limits.blob_error:
        return kind, payload
    if kind == "completed" and worker:
        f = failure_pb.Failure(message=CORE_PAYLOADS_TOO_LARGE)
        f.application_failure_info.type = "PayloadsTooLarge"
        return "failed", f
    text = {"completed": RESULT_TOO_LARGE, "failed": FAILURE_TOO_LARGE}.get(kind, CANCEL_DETAILS_TOO_LARGE)
    return "failed", _server_failure(text)


def heartbeat_failure(limits: Limits, details: Message | None) -> failure_pb.Failure | None:
    """The failure recorded for a heartbeat whose details are over the blob limit, else None."""
    if details is None or details.ByteSize() <= limits.blob_error:
        return None
    return _server_failure(HEARTBEAT_TOO_LARGE)


# -- history -------------------------------------------------------------------------------------

def history_over(limits: Limits, count: int, size: int, *, workflow_id: str, run_id: str) -> str | None:
    """The termination reason of a run whose history is past an error limit, else None (warning
    past a warn limit, as Temporal's history service logs)."""
    if size > limits.history_size_error:
        return HISTORY_SIZE_EXCEEDED
    if count > limits.history_count_error:
        return HISTORY_COUNT_EXCEEDED
    if size > limits.history_size_warn:
        logger.warning("history size exceeds warn limit. wf-id=%s wf-run-id=%s wf-history-size=%d",
                       workflow_id, run_id, size)
    elif count > limits.history_count_warn:
        logger.warning("history count exceeds warn limit. wf-id=%s wf-run-id=%s wf-event-count=%d",
                       workflow_id, run_id, count)
    return None
