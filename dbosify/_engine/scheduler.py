"""Taking a schedule's actions: each decided and taken in one transaction, exactly once.

There is no server process: a schedule's row (table ``schedules``) says which nominal times
were handled (``processed_until``) and when it next needs attention (``next_due``). Whoever
locks the row first (`fire_due`, run by every worker of the namespace; or an RPC such as
trigger, backfill or create) decides the due actions, starts their workflows with
`_engine.runs.start_run` and advances the row, all in one transaction: two processes cannot both take
an action, and a process killed half-way leaves nothing behind. When a run a schedule started
closes, `on_run_closed` runs in the run's own close transaction: it records the result for the
next action, pauses on failure when asked, and starts a buffered action.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import schedule_pb2 as overlap_enum
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.schedule.v1 import message_pb2 as sched

from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._engine import schedule_spec
from dbosify._engine.errors import ServiceError
from dbosify._store import Tx

SKIP = overlap_enum.SCHEDULE_OVERLAP_POLICY_SKIP
BUFFER_ONE = overlap_enum.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE
BUFFER_ALL = overlap_enum.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL
CANCEL_OTHER = overlap_enum.SCHEDULE_OVERLAP_POLICY_CANCEL_OTHER
TERMINATE_OTHER = overlap_enum.SCHEDULE_OVERLAP_POLICY_TERMINATE_OTHER
ALLOW_ALL = overlap_enum.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL

WAKE_KEY = "schedules"  # notified when a schedule may be due sooner than its fire loop thinks
RECENT_ACTIONS = 10
FUTURE_TIMES = 10
DEFAULT_CATCHUP = 365 * 86400.0  # Temporal's default catchup window: one year
MIN_CATCHUP = 10.0  # and its smallest
MAX_ACTIONS_PER_PASS = 1000  # a long outage is worked off in passes of this many times
MAX_BUFFER = 1000  # buffered starts beyond this are dropped (counted in buffer_dropped)


def _b64(m: Any) -> str:
    return base64.b64encode(m.SerializeToString()).decode()


@dataclass
class State:
    """What a schedule remembers besides its definition (kept as JSON in ``schedules.state``)."""

    created: float
    updated: float | None = None
    actions: int = 0
    missed: int = 0
    skipped: int = 0
    dropped: int = 0
    recent: list[dict[str, Any]] = field(default_factory=list)  # nominal, actual, wid, rid
    buffer: list[dict[str, Any]] = field(default_factory=list)  # nominal, actual, overlap
    last_result: str | None = None  # base64 Payloads of the last completed action's result
    last_failure: str | None = None  # base64 Failure of the last failed action

    @classmethod
    def loads(cls, text: str) -> State:
        return cls(**json.loads(text))

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass
class Row:
    schedule_id: str
    schedule: sched.Schedule
    memo: bytes | None
    search_attributes: bytes | None
    state: State
    token: int
    processed_until: float
    next_due: float | None


def load(tx: Tx, schedule_id: str, *, lock: bool = True) -> Row | None:
    sql = (
        "SELECT schedule_id, schedule, memo, search_attributes, state, conflict_token,"
        " processed_until, next_due FROM schedules WHERE schedule_id = %s"
    )
    if lock and not tx.store.is_sqlite:
        sql += " FOR UPDATE"
    r = tx.one(sql, (schedule_id,))
    if r is None:
        return None
    return Row(
        r[0], sched.Schedule.FromString(bytes(r[1])), bytes(r[2]) if r[2] is not None else None,
        bytes(r[3]) if r[3] is not None else None, State.loads(r[4]), int(r[5]), float(r[6]),
        float(r[7]) if r[7] is not None else None,
    )


def not_found(schedule_id: str) -> ServiceError:
    return ServiceError.not_found(f"workflow not found for ID: temporal-sys-scheduler:{schedule_id}")


def save(tx: Tx, row: Row, *, new: bool = False) -> None:
    row.next_due = _next_due(tx, row)
    values = (
        row.schedule.SerializeToString(), row.memo, row.search_attributes, row.state.dumps(),
        row.token, row.processed_until, row.next_due,
    )
    if new:
        tx.execute(
            "INSERT INTO schedules (schedule, memo, search_attributes, state, conflict_token,"
            " processed_until, next_due, schedule_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (*values, row.schedule_id),
        )
    else:
        tx.execute(
            "UPDATE schedules SET schedule = %s, memo = %s, search_attributes = %s, state = %s,"
            " conflict_token = %s, processed_until = %s, next_due = %s WHERE schedule_id = %s",
            (*values, row.schedule_id),
        )
    tx.notify(WAKE_KEY)


def running(tx: Tx, schedule_id: str) -> list[tuple[str, str]]:
    """(workflow id, run id) of the schedule's runs still running."""
    rows = tx.all(
        "SELECT workflow_id, run_id FROM executions WHERE schedule_id = %s AND status = 1"
        " ORDER BY start_time",
        (schedule_id,),
    )
    return [(str(w), str(r)) for w, r in rows]


def _catchup(s: sched.Schedule) -> float:
    p = s.policies
    if p.HasField("catchup_window") and p.catchup_window.ToNanoseconds() > 0:
        return max(MIN_CATCHUP, p.catchup_window.ToNanoseconds() / 1e9)
    return DEFAULT_CATCHUP


def _policy(s: sched.Schedule, override: int = 0) -> int:
    return override or s.policies.overlap_policy or SKIP


def _next_due(tx: Tx, row: Row) -> float | None:
    """When the fire loop must next look at this schedule: its next action's actual time."""
    s = row.schedule
    if s.state.paused or (s.state.limited_actions and s.state.remaining_actions <= 0):
        return None
    spec = schedule_spec.compile_spec(s.spec)
    nominal = spec.next_after(row.processed_until)
    return None if nominal is None else spec.jittered(row.schedule_id, nominal)


# -- taking actions -------------------------------------------------------------------------


def process(tx: Tx, row: Row, now: float) -> None:
    """Take every action due by ``now`` (the row is locked); then start what the buffer allows."""
    s = row.schedule
    spec = schedule_spec.compile_spec(s.spec)
    catchup = _catchup(s)
    for _ in range(MAX_ACTIONS_PER_PASS):
        nominal = spec.next_after(row.processed_until)
        if nominal is None:
            break
        actual = spec.jittered(row.schedule_id, nominal)
        if actual > now:
            break
        row.processed_until = nominal
        if s.state.paused:
            continue  # times passing while paused are neither taken nor missed
        if s.state.limited_actions and s.state.remaining_actions <= 0:
            continue
        if now - actual > catchup:
            row.state.missed += 1
            continue
        take(tx, row, nominal, actual, _policy(s), now)
    drain_buffer(tx, row, now)


def take(tx: Tx, row: Row, nominal: float, actual: float, policy: int, now: float, *, manual: bool = False) -> None:
    """One due action under an overlap policy (0: the schedule's): start, buffer or skip it."""
    policy = _policy(row.schedule, policy)
    if policy != ALLOW_ALL:
        others = running(tx, row.schedule_id)
        if others or row.state.buffer:
            _buffer(tx, row, others, {"nominal": nominal, "actual": actual, "overlap": policy, "manual": manual})
            return
    start_action(tx, row, nominal, actual, now, manual=manual)


def _buffer(tx: Tx, row: Row, others: list[tuple[str, str]], entry: dict[str, Any]) -> None:
    """A start that must wait for the schedule's running workflow, per its overlap policy."""
    policy, buf = entry["overlap"], row.state.buffer
    if policy == SKIP:
        row.state.skipped += 1
    elif policy == BUFFER_ONE:
        if buf:  # the oldest waiting start is kept
            row.state.skipped += 1
        else:
            buf.append(entry)
    elif policy in (CANCEL_OTHER, TERMINATE_OTHER):
        _end_others(tx, others, terminate=policy == TERMINATE_OTHER)
        buf[:] = [e for e in buf if e["overlap"] not in (CANCEL_OTHER, TERMINATE_OTHER)] + [entry]
    elif len(buf) >= MAX_BUFFER:
        row.state.dropped += 1
    else:
        buf.append(entry)


def drain_buffer(tx: Tx, row: Row, now: float) -> None:
    """Start buffered actions while nothing of this schedule runs (all of them under ALLOW_ALL)."""
    while row.state.buffer:
        head = row.state.buffer[0]
        if head["overlap"] != ALLOW_ALL and running(tx, row.schedule_id):
            return
        row.state.buffer.pop(0)
        start_action(tx, row, head["nominal"], head["actual"], now, manual=head.get("manual", False))


def _end_others(tx: Tx, others: list[tuple[str, str]], *, terminate: bool) -> None:
    for _, run_id in others:
        run = h.get_run(tx, run_id, lock=True)
        if run is None or not run.running:
            continue
        if terminate:
            _runs.terminate(tx, run, "terminated by schedule overlap policy", _identity(tx, run.schedule_id or ""))
        elif not tx.one(
            "SELECT 1 FROM history WHERE run_id = %s AND event_type = %s LIMIT 1",
            (run_id, et.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED),
        ):
            _runs.request_cancel(tx, run, "cancelled by schedule overlap policy", _identity(tx, run.schedule_id or ""))


def _identity(tx: Tx, schedule_id: str) -> str:
    return f"temporal-scheduler-{tx.namespace}-{schedule_id}"


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _started(tx: Tx, row: Row, nominal: float) -> hist.WorkflowExecutionStartedEventAttributes:
    info = row.schedule.action.start_workflow
    a = hist.WorkflowExecutionStartedEventAttributes(identity=_identity(tx, row.schedule_id), attempt=1)
    a.workflow_type.CopyFrom(info.workflow_type)
    a.task_queue.CopyFrom(info.task_queue)
    for f in ("input", "workflow_execution_timeout", "workflow_run_timeout", "workflow_task_timeout",
              "retry_policy", "memo", "search_attributes", "header", "priority"):
        if info.HasField(f):
            getattr(a, f).CopyFrom(getattr(info, f))
    attrs = a.search_attributes.indexed_fields
    attrs["TemporalScheduledById"].CopyFrom(_json_payload(row.schedule_id, "Keyword"))
    attrs["TemporalScheduledStartTime"].CopyFrom(_json_payload(_rfc3339(nominal), "Datetime"))
    if row.state.last_result is not None:
        a.last_completion_result.ParseFromString(base64.b64decode(row.state.last_result))
    if row.state.last_failure is not None:
        a.continued_failure.ParseFromString(base64.b64decode(row.state.last_failure))
    return a


def _json_payload(value: str, type_name: str) -> common.Payload:
    return common.Payload(
        metadata={"encoding": b"json/plain", "type": type_name.encode()}, data=json.dumps(value).encode()
    )


def start_action(tx: Tx, row: Row, nominal: float, actual: float, now: float, *, manual: bool = False) -> None:
    """Start the schedule's workflow for one nominal time and record the action."""
    s = row.schedule
    info = s.action.start_workflow
    workflow_id = info.workflow_id if s.policies.keep_original_workflow_id else f"{info.workflow_id}-{_rfc3339(nominal)}"
    reuse = wfenums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE if manual else wfenums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE
    try:
        res = _runs.start_run(
            tx, workflow_id=workflow_id, workflow_type=info.workflow_type.name,
            task_queue=info.task_queue.name, started=_started(tx, row, nominal),
            reuse_policy=reuse, identity=_identity(tx, row.schedule_id),
            metadata=info.user_metadata if info.HasField("user_metadata") else None,
            schedule_id=row.schedule_id,
        )
    except ServiceError:
        return  # a run with that id exists (as on Temporal, that start is dropped)
    row.state.actions += 1
    if s.state.limited_actions and not manual:
        s.state.remaining_actions = max(0, s.state.remaining_actions - 1)
        row.token += 1
    row.state.recent.append({"scheduled": actual, "started": now, "wid": workflow_id, "rid": res.run_id})
    del row.state.recent[:-RECENT_ACTIONS]


def on_run_closed(tx: Tx, run: h.Run, status: int, attrs: Any) -> None:
    """A run this schedule started closed (in its close transaction): remember its outcome, pause
    on failure if asked, and start what waited for it."""
    continued = bool(getattr(attrs, "new_execution_run_id", ""))
    if run.schedule_id is None or status == h.CONTINUED_AS_NEW or continued:
        return  # the action goes on in a new run (continue-as-new, a retry, the next cron run)
    row = load(tx, run.schedule_id)
    if row is None:
        return  # the schedule was deleted; its runs live on
    if status == h.COMPLETED:
        payloads = common.Payloads()
        payloads.CopyFrom(attrs.result)
        row.state.last_result, row.state.last_failure = _b64(payloads), None
    elif status in (h.FAILED, h.TIMED_OUT):
        failure = attrs.failure if status == h.FAILED else failure_pb.Failure(message="workflow timed out")
        row.state.last_failure = _b64(failure)
        if row.schedule.policies.pause_on_failure:
            row.schedule.state.paused = True
            row.schedule.state.notes = (
                f"paused due to workflow failure: {run.workflow_id}: {failure.message}"
                if status == h.FAILED else f"paused due to workflow timeout: {run.workflow_id}"
            )
            row.token += 1
    drain_buffer(tx, row, tx.store.clock.now())
    save(tx, row)


FIRE_BATCH = 20  # schedules processed per transaction of the fire loop
# For crash tests only: "SECONDS:PATH" makes a firing transaction create PATH and sleep before it
# commits, so that a test can SIGKILL the process between deciding actions and recording them.
_FAULT_PAUSE = os.environ.get("DBOSIFY_FAULT_PAUSE_BEFORE_SCHEDULE_COMMIT", "")


def _pause_before_commit() -> None:
    seconds, _, path = _FAULT_PAUSE.partition(":")
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(float(seconds))


def fire_due(tx: Tx, limit: int = FIRE_BATCH) -> tuple[int, float | None]:
    """Process the schedules that are due (skipping rows another process holds).

    Returns how many were processed and when the next one is due.
    """
    now = tx.store.clock.now()
    sql = "SELECT schedule_id FROM schedules WHERE next_due <= %s ORDER BY next_due LIMIT %s"
    if not tx.store.is_sqlite:
        sql += " FOR UPDATE SKIP LOCKED"
    due = [str(r[0]) for r in tx.all(sql, (now, limit))]
    for schedule_id in due:
        row = load(tx, schedule_id)
        if row is not None:
            process(tx, row, now)
            save(tx, row)
    tx.keys_to_fire.discard(WAKE_KEY)  # firing only moves due times later: no one need look again
    if due and _FAULT_PAUSE:
        _pause_before_commit()
    nxt = tx.one("SELECT min(next_due) FROM schedules")
    return len(due), (float(nxt[0]) if nxt is not None and nxt[0] is not None else None)
