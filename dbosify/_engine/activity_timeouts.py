"""A workflow activity's timeouts as a Temporal server fills them in and reports them.

Measured on a Temporal dev server (tests/test_fidelity.py keeps the observations):

- the ActivityTaskScheduled event carries all four timeouts: schedule-to-start defaults to, and is
  capped by, schedule-to-close; start-to-close too; the heartbeat timeout is capped by
  start-to-close. So an activity that only sets schedule-to-close and is never picked up times
  out as SCHEDULE_TO_START (both fall due at once; schedule-to-start is checked first).
- a timeout after which the schedule-to-close budget leaves no room for a retry (retry state
  TIMEOUT), other than schedule-to-start, is reported as a SCHEDULE_TO_CLOSE timeout with the
  message below, whichever timeout fired.
- a timed-out activity's failure has the previous attempt's failure as its cause.
"""

from __future__ import annotations

from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist

START_TO_CLOSE, SCHEDULE_TO_START, SCHEDULE_TO_CLOSE, HEARTBEAT = 1, 2, 3, 4

NO_TIME_TO_RETRY = (
    "Not enough time to schedule next retry before activity ScheduleToClose timeout, giving up retrying"
)
_NAMES = {START_TO_CLOSE: "StartToClose", SCHEDULE_TO_START: "ScheduleToStart",
          SCHEDULE_TO_CLOSE: "ScheduleToClose", HEARTBEAT: "Heartbeat"}


def normalize_timeouts(a: hist.ActivityTaskScheduledEventAttributes) -> None:
    """Fill in and cap the scheduled event's timeouts (in place), as the server does."""
    s2c = a.schedule_to_close_timeout.ToNanoseconds() if a.HasField("schedule_to_close_timeout") else 0
    s2s = a.schedule_to_start_timeout.ToNanoseconds() if a.HasField("schedule_to_start_timeout") else 0
    stc = a.start_to_close_timeout.ToNanoseconds() if a.HasField("start_to_close_timeout") else 0
    hb = a.heartbeat_timeout.ToNanoseconds() if a.HasField("heartbeat_timeout") else 0
    if s2c > 0:
        s2s = min(s2s, s2c) if s2s > 0 else s2c
        stc = min(stc, s2c) if stc > 0 else s2c
    if stc > 0 and hb > stc:
        hb = stc
    a.schedule_to_close_timeout.FromNanoseconds(max(s2c, 0))
    a.schedule_to_start_timeout.FromNanoseconds(max(s2s, 0))
    a.start_to_close_timeout.FromNanoseconds(max(stc, 0))
    a.heartbeat_timeout.FromNanoseconds(max(hb, 0))


def timed_out_failure(
    kind: int, retry_state: int, last_failure: failure_pb.Failure | None
) -> failure_pb.Failure:
    """The failure of an ActivityTaskTimedOut event: the timeout that fired, or the
    schedule-to-close one when no retry fits in the budget; caused by the previous attempt's."""
    if retry_state == 3 and kind != SCHEDULE_TO_START:  # RETRY_STATE_TIMEOUT
        f = failure_pb.Failure(message=NO_TIME_TO_RETRY, source="dbosify")
        kind = SCHEDULE_TO_CLOSE
    else:
        f = failure_pb.Failure(message=f"activity {_NAMES.get(kind, '')} timeout", source="dbosify")
    f.timeout_failure_info.timeout_type = kind  # type: ignore[assignment]
    if last_failure is not None and last_failure.ByteSize():
        f.cause.CopyFrom(last_failure)
    return f
