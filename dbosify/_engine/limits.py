"""Temporal's limits on what workers send and on a run's history (the values: `dbosify._store.limits`).

- activity results sent by workers or by token over the blob limit fail the activity, as Temporal
  does (see `activity_outcome`); heartbeat details over it fail the attempt (`heartbeat_failure`);
- a worker's ScheduleActivityTask command with an id or a name over ``limit.maxIDLength``, or
  holding a NUL, fails its workflow task (`schedule_activity_problem`);
- history size and event count (`history_over`): past the warn limits a warning is logged, past
  the error limits the run is terminated when its workflow task completes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf.message import Message
from temporalio.api.failure.v1 import message_pb2 as failure_pb

from dbosify._store.limits import Limits, byte_length

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


_length = byte_length


def _measured(label: str) -> Callable[[int, int], str]:
    return lambda n, limit: f"{label} exceeds length limit. Length={n} Limit={limit}"


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
