"""What every activity attempt shares, a workflow's or a standalone one: its task token, the
claim handed to a worker, the retry policy's next delay and the timeout failures.

`activity_tasks` (the attempts of a workflow's activities) and `activity_executions` (standalone
activities) both build on this module, and neither on the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.bridge.proto.activity_task import activity_task_pb2 as at

from dbosify._engine.errors import ServiceError

TIMEOUT_START_TO_CLOSE = 1
TIMEOUT_SCHEDULE_TO_START = 2
TIMEOUT_SCHEDULE_TO_CLOSE = 3
TIMEOUT_HEARTBEAT = 4
# The seq of a standalone activity's task row (see _activity_executions); a workflow's activities
# are numbered from 1.
STANDALONE_SEQ = 0


def make_token(run_id: str, seq: int, attempt: int) -> bytes:
    return f"{run_id}\x00{seq}\x00{attempt}".encode()


def parse_token(token: bytes) -> tuple[str, int, int]:
    try:
        run_id, seq, attempt = token.decode().split("\x00")
        return run_id, int(seq), int(attempt)
    except Exception:
        raise ServiceError.invalid("invalid activity task token") from None


def _dur(msg: Any, field: str) -> float | None:
    if msg.HasField(field):
        v = getattr(msg, field).ToNanoseconds() / 1e9
        return v if v > 0 else None
    return None


@dataclass
class Claimed:
    run_id: str
    seq: int
    attempt: int
    task: at.ActivityTask
    start_to_close: float | None
    heartbeat_timeout: float | None
    deadline: float | None  # schedule-to-close
    next_ready: float | None = None  # when the queue's next task is ready (now or later), if any
    scheduled_event_id: int | None = None  # of a workflow's activity (None: not known here)


def _retry_delay(policy: common.RetryPolicy, attempt: int, failure: failure_pb.Failure | None) -> float | None:
    """Seconds until the next attempt, or None if the failure is final."""
    if failure is not None:
        info = failure.application_failure_info if failure.HasField("application_failure_info") else None
        if info is not None:
            if info.non_retryable or info.type in set(policy.non_retryable_error_types):
                return None
            if info.HasField("next_retry_delay") and info.next_retry_delay.ToNanoseconds() > 0:
                if policy.maximum_attempts and attempt >= policy.maximum_attempts:
                    return None
                return info.next_retry_delay.ToNanoseconds() / 1e9
    if policy.maximum_attempts and attempt >= policy.maximum_attempts:
        return None
    initial = policy.initial_interval.ToNanoseconds() / 1e9 if policy.HasField("initial_interval") else 1.0
    initial = initial or 1.0
    coeff = policy.backoff_coefficient or 2.0
    maximum = (
        policy.maximum_interval.ToNanoseconds() / 1e9
        if policy.HasField("maximum_interval") and policy.maximum_interval.ToNanoseconds()
        else initial * 100
    )
    return float(min(initial * coeff ** (attempt - 1), maximum))


def _retryable(policy: common.RetryPolicy, failure: failure_pb.Failure) -> bool:
    """Whether a failure may be retried at all (attempts left and timing aside)."""
    if failure.HasField("application_failure_info"):
        info = failure.application_failure_info
        return not (info.non_retryable or info.type in set(policy.non_retryable_error_types))
    if failure.HasField("timeout_failure_info"):
        return failure.timeout_failure_info.timeout_type not in (
            TIMEOUT_SCHEDULE_TO_START, TIMEOUT_SCHEDULE_TO_CLOSE,
        )
    return True


def timeout_failure(kind: int, last: failure_pb.Failure | None = None) -> failure_pb.Failure:
    names = {1: "StartToClose", 2: "ScheduleToStart", 3: "ScheduleToClose", 4: "Heartbeat"}
    f = failure_pb.Failure(message=f"activity {names.get(kind, '')} timeout", source="dbosify")
    f.timeout_failure_info.timeout_type = kind  # type: ignore[assignment]
    if last is not None:
        f.cause.CopyFrom(last)
    return f
