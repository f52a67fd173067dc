"""Activity tasks: scheduled by a run, claimed by any live worker on the task queue.

An attempt's outcome is decided here in one transaction: the result event in the
run's history, or the next attempt (with the retry policy's backoff), or the
final failure. Heartbeat details live on the task row so they survive a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.activity_task import activity_task_pb2 as at

from dbosify._engine import activity_executions as standalone
from dbosify._engine import activity_timeouts as timeouts
from dbosify._engine import history as h
from dbosify._engine import priorities, rates
from dbosify._engine.activity_attempts import (
    STANDALONE_SEQ,
    TIMEOUT_HEARTBEAT,
    TIMEOUT_SCHEDULE_TO_CLOSE,
    TIMEOUT_SCHEDULE_TO_START,
    TIMEOUT_START_TO_CLOSE,
    Claimed,
    _dur,
    _retry_delay,
    _retryable,
    make_token,
    parse_token,
    timeout_failure,
)
from dbosify._engine.errors import ServiceError
from dbosify._engine.liveness import RETRY_SET, owns_row
from dbosify._store import Store, Tx
from dbosify._store.store import FACT

# The names of activity_attempts that callers reach through this module.
__all__ = [
    "STANDALONE_SEQ",
    "TIMEOUT_HEARTBEAT",
    "TIMEOUT_SCHEDULE_TO_CLOSE",
    "TIMEOUT_SCHEDULE_TO_START",
    "TIMEOUT_START_TO_CLOSE",
    "Claimed",
    "_dur",
    "_retry_delay",
    "_retryable",
    "make_token",
    "parse_token",
    "timeout_failure",
]

PAUSED_RECHECK = 5.0  # seconds between a run driver's looks at a paused activity's queue timeouts


def schedule(
    tx: Tx, run: h.Run, seq: int, event_id: int, task_queue: str, now: float,
    priority: common.Priority | None = None,
) -> None:
    """Queue an activity's first attempt; ``priority``: its own, each unset field the run's."""
    key, fairness, weight = priorities.effective(priorities.merge(priorities.of(run), priority))
    tx.execute(
        "INSERT INTO activity_tasks (run_id, seq, task_queue, attempt, state, available_at,"
        " scheduled_event_id, scheduled_time, task_priority, fairness_key, fairness_weight)"
        " VALUES (%s, %s, %s, 1, 'scheduled', %s, %s, %s, %s, %s, %s)",
        (run.run_id, seq, task_queue, now, event_id, now, key, fairness, weight),
    )
    tx.notify(f"act:{task_queue}")


def _scheduled_attrs(tx: Tx, run_id: str, event_id: int) -> hist.ActivityTaskScheduledEventAttributes:
    row = tx.one("SELECT event FROM history WHERE run_id = %s AND event_id = %s", (run_id, event_id))
    ev = hist.HistoryEvent.FromString(bytes(row[0]))
    return ev.activity_task_scheduled_event_attributes


def claim(
    tx: Tx, task_queue: str, owner: str, namespace: str,
    tracked: Callable[[], set[tuple[str, int]]], *, recheck: bool = False, rate: float | None = None,
) -> Claimed | float | None:
    """Claim one ready task; else the time the next one becomes ready (or None), or, when the
    task queue's rate allows no start now, the time it allows the next.

    Tasks are taken by priority key, then by pass (their fairness key's turn: `priorities`).
    ``tracked`` gives the attempts the claimer is running: after a lost connection (or with
    ``recheck``: an eager hand-off whose commit went unseen), attempts it owns but does not
    run are handed back to the queue as their next attempt. ``rate``: the claimer's
    max_task_queue_activities_per_second, set on the queue for all its workers (`rates`).
    """
    now = tx.store.clock.now()
    if not owns_row(tx, owner):
        return now + 0.5  # presumed dead a moment ago: look again once its beat re-registers it
    if tx.commit_may_have_landed or recheck:
        running = tracked()
        for run_id, seq in tx.all(
            "SELECT run_id, seq FROM activity_tasks WHERE owner = %s AND state = 'running'", (owner,)
        ):
            if (run_id, seq) not in running:
                tx.execute(
                    f"UPDATE activity_tasks SET {RETRY_SET}, available_at = %s"
                    " WHERE run_id = %s AND seq = %s",
                    (now, run_id, seq),
                )
    priorities.assign_passes(tx, task_queue, now)
    lock = "" if tx.store.is_sqlite else " FOR UPDATE OF activity_tasks SKIP LOCKED"
    # SQLite, with no statistics, would rather range over available_at and sort the backlog.
    index = " INDEXED BY activity_tasks_fair" if tx.store.is_sqlite else ""
    row = tx.one(
        "SELECT run_id, seq, attempt, details, scheduled_event_id, scheduled_time, available_at,"
        f" {rates.PEEK} FROM activity_tasks{index} WHERE task_queue = %s AND state = 'scheduled'"
        " AND paused = 0 AND fair_pass IS NOT NULL AND available_at <= %s"
        f" ORDER BY task_priority, fair_pass LIMIT 1{lock}",
        (task_queue, now),
    )
    if row is None:
        nxt = tx.one(
            "SELECT min(available_at) FROM activity_tasks WHERE task_queue = %s AND state = 'scheduled'"
            " AND paused = 0",
            (task_queue,),
        )
        return float(nxt[0]) if nxt and nxt[0] is not None else None
    run_id, seq, attempt, details, sched_id, sched_time, avail = row[:7]
    wait = rates.take(tx, task_queue, owner, rate, row[7:], now)
    if wait is not None:
        return wait  # the queue's rate allows no start before then
    tx.lease()
    tx.execute(
        "UPDATE activity_tasks SET state = 'running', owner = %s, started_at = %s, heartbeat_at = NULL"
        " WHERE run_id = %s AND seq = %s",
        (owner, now, run_id, seq),
    )
    if seq == STANDALONE_SEQ:  # started by a client, not by a workflow

        c = standalone.claimed(tx, namespace, run_id, attempt, details, avail, now)
        if c is None:
            return now  # nothing to run after all: look again
        c.next_ready = _next_ready(tx, task_queue)
        return c
    run = h.get_run(tx, run_id)
    assert run is not None
    return _claimed(
        namespace, run, seq, attempt, details, int(sched_id), _scheduled_attrs(tx, run_id, sched_id),
        sched_time, avail, now, _next_ready(tx, task_queue),
    )


def schedule_eager(
    tx: Tx, run: h.Run, seq: int, event_id: int, attrs: hist.ActivityTaskScheduledEventAttributes,
    now: float, owner: str, namespace: str,
) -> Claimed:
    """Schedule a workflow's activity already started by ``owner`` (eager dispatch, as Core
    asks of Temporal for an activity on its own task queue when it has a free slot): the
    workflow task's transaction hands the attempt to its worker, with no claim of its own."""
    # Its priority as `schedule` gives it, so that its retries keep their place.
    own = attrs.priority if attrs.HasField("priority") else None
    key, fairness, weight = priorities.effective(priorities.merge(priorities.of(run), own))
    tx.execute(
        "INSERT INTO activity_tasks (run_id, seq, task_queue, attempt, state, available_at,"
        " scheduled_event_id, scheduled_time, owner, started_at, task_priority, fairness_key,"
        " fairness_weight) VALUES (%s, %s, %s, 1, 'running', %s, %s, %s, %s, %s, %s, %s, %s)",
        (run.run_id, seq, attrs.task_queue.name, now, event_id, now, owner, now, key, fairness, weight),
    )
    return _claimed(namespace, run, seq, 1, None, event_id, attrs, now, now, now, None)


def _claimed(
    namespace: str, run: h.Run, seq: int, attempt: int, details: Any, sched_id: int,
    attrs: hist.ActivityTaskScheduledEventAttributes, sched_time: float, avail: float, now: float,
    next_ready: float | None,
) -> Claimed:
    """The attempt as the SDK's activity worker receives it."""
    task = at.ActivityTask(task_token=make_token(run.run_id, seq, attempt))
    s = task.start
    s.workflow_namespace = namespace
    s.workflow_type = run.workflow_type
    s.workflow_execution.workflow_id = run.workflow_id
    s.workflow_execution.run_id = run.run_id
    s.activity_id = attrs.activity_id
    s.activity_type = attrs.activity_type.name
    for k, v in attrs.header.fields.items():
        s.header_fields[k].CopyFrom(v)
    s.input.extend(attrs.input.payloads)
    if details:
        s.heartbeat_details.extend(common.Payloads.FromString(bytes(details)).payloads)
    s.scheduled_time.FromNanoseconds(int(sched_time * 1e9))
    s.current_attempt_scheduled_time.FromNanoseconds(int(avail * 1e9))
    s.started_time.FromNanoseconds(int(now * 1e9))
    s.attempt = attempt
    for f in ("schedule_to_close_timeout", "start_to_close_timeout", "heartbeat_timeout", "retry_policy", "priority"):
        if attrs.HasField(f):
            getattr(s, f).CopyFrom(getattr(attrs, f))
    s2c = _dur(attrs, "schedule_to_close_timeout")
    return Claimed(
        run.run_id, seq, attempt, task,
        _dur(attrs, "start_to_close_timeout"),
        _dur(attrs, "heartbeat_timeout"),
        sched_time + s2c if s2c else None,
        next_ready,
        sched_id,
    )


def _next_ready(tx: Tx, task_queue: str) -> float | None:
    nxt = tx.one(
        "SELECT min(available_at) FROM activity_tasks WHERE task_queue = %s AND state = 'scheduled'"
        " AND paused = 0",
        (task_queue,),
    )
    return float(nxt[0]) if nxt and nxt[0] is not None else None


_CLEAR_DETAILS = ", details = NULL, heartbeat_at = NULL"  # a reset with reset_heartbeat asked for it


def finish(
    tx: Tx,
    run_id: str,
    seq: int,
    attempt: int,
    kind: str,
    payload: Message | None,
    identity: str,
    *,
    timeout_kind: int = 0,
) -> bool:
    """Record an attempt's outcome. Returns False if the attempt is no longer current."""
    if seq == STANDALONE_SEQ:

        return standalone.finish(
            tx, run_id, attempt, kind, payload, identity, timeout_kind=timeout_kind
        )
    # The rows stay locked until commit, so a takeover or timeout cannot slip in between; the
    # run's first, in the order drivers take them.
    lock = "" if tx.store.is_sqlite else " FOR UPDATE"
    if lock:
        tx.execute("SELECT 1 FROM executions WHERE run_id = %s FOR UPDATE", (run_id,))
    row = tx.one(
        "SELECT attempt, state, scheduled_event_id, scheduled_time, details, task_queue, paused,"
        " reset_heartbeats, attempts_reset, last_failure FROM activity_tasks"
        f" WHERE run_id = %s AND seq = %s{lock}",
        (run_id, seq),
    )
    if row is None or row[0] != attempt or row[1] != "running":
        return False
    _, _, sched_id, sched_time, details, task_queue, paused, reset_heartbeats, attempts_reset, last = row
    # A reset while this attempt ran restarts the count: its retry is attempt 2.
    counted = 1 if attempts_reset else attempt
    now = tx.store.clock.now()
    if kind == "failed":
        assert isinstance(payload, failure_pb.Failure)
        attrs = _scheduled_attrs(tx, run_id, sched_id)
        if timeout_kind:
            payload = timeout_failure(timeout_kind, payload if payload.message else None)
            if details:
                payload.timeout_failure_info.last_heartbeat_details.CopyFrom(
                    common.Payloads.FromString(bytes(details))
                )
        if paused and _retryable(attrs.retry_policy, payload):
            # Like Temporal: a paused activity's failed attempt counts, whatever the retry policy
            # says of the attempts left, and the next one waits for the unpause.
            tx.execute(
                "UPDATE activity_tasks SET attempt = %s, state = 'scheduled', owner = NULL, fair_pass = NULL,"
                " available_at = %s, last_failure = %s, reset_requested = 0, reset_heartbeats = 0,"
                f" attempts_reset = 0{_CLEAR_DETAILS if reset_heartbeats else ''}"
                " WHERE run_id = %s AND seq = %s",
                (counted + 1, now, payload.SerializeToString(), run_id, seq),
            )
            return True
        delay = _retry_delay(attrs.retry_policy, counted, payload)
        s2c = _dur(attrs, "schedule_to_close_timeout")
        retry_state = wfenums.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED if delay is None else 0
        if (delay is not None and s2c and now + delay >= sched_time + s2c) or timeout_kind in (
            TIMEOUT_SCHEDULE_TO_START, TIMEOUT_SCHEDULE_TO_CLOSE  # never retried, as on Temporal
        ):
            delay = None
            retry_state = wfenums.RETRY_STATE_TIMEOUT
        if delay is None and not retry_state:
            retry_state = wfenums.RETRY_STATE_NON_RETRYABLE_FAILURE
        if delay is not None:
            tx.execute(
                "UPDATE activity_tasks SET attempt = %s, state = 'scheduled', owner = NULL, fair_pass = NULL,"
                " available_at = %s, last_failure = %s, reset_requested = 0, reset_heartbeats = 0,"
                f" attempts_reset = 0{_CLEAR_DETAILS if reset_heartbeats else ''}"
                " WHERE run_id = %s AND seq = %s",
                (counted + 1, now + delay, payload.SerializeToString(), run_id, seq),
            )
            tx.notify(f"act:{task_queue}")
            return True
        _record_started(tx, run_id, seq, sched_id, attempt, identity, payload)
        if timeout_kind:
            payload = timeouts.timed_out_failure(
                timeout_kind, retry_state, failure_pb.Failure.FromString(bytes(last)) if last else None
            )
            if details:
                payload.timeout_failure_info.last_heartbeat_details.CopyFrom(
                    common.Payloads.FromString(bytes(details))
                )
            h.append(
                tx,
                run_id,
                et.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
                hist.ActivityTaskTimedOutEventAttributes(
                    failure=payload, scheduled_event_id=sched_id, retry_state=retry_state  # type: ignore[arg-type]
                ),
                seq=seq,
                dedup=f"act-done:{seq}",
            )
        else:
            h.append(
                tx,
                run_id,
                et.EVENT_TYPE_ACTIVITY_TASK_FAILED,
                hist.ActivityTaskFailedEventAttributes(
                    failure=payload, scheduled_event_id=sched_id, identity=identity,
                    retry_state=retry_state,  # type: ignore[arg-type]
                ),
                seq=seq,
                dedup=f"act-done:{seq}",
            )
    elif kind == "completed":
        _record_started(tx, run_id, seq, sched_id, attempt, identity, None)
        a = hist.ActivityTaskCompletedEventAttributes(scheduled_event_id=sched_id, identity=identity)
        if payload is not None:
            a.result.CopyFrom(payload)  # type: ignore
        h.append(tx, run_id, et.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, a, seq=seq, dedup=f"act-done:{seq}")
    else:  # canceled
        _record_started(tx, run_id, seq, sched_id, attempt, identity, None)
        c = hist.ActivityTaskCanceledEventAttributes(scheduled_event_id=sched_id, identity=identity)
        if isinstance(payload, common.Payloads):
            c.details.CopyFrom(payload)
        h.append(tx, run_id, et.EVENT_TYPE_ACTIVITY_TASK_CANCELED, c, seq=seq, dedup=f"act-done:{seq}")
    tx.execute("DELETE FROM activity_tasks WHERE run_id = %s AND seq = %s", (run_id, seq))
    return True


def expire_if_queued(tx: Tx, run_id: str, seq: int, now: float) -> float | None:
    """Time out the task if it still waits in its queue past schedule-to-start (this attempt)
    or schedule-to-close. Returns when to check again, or None if there is nothing to check.
    """
    row = tx.one(
        "SELECT state, available_at, scheduled_time, scheduled_event_id, paused, last_failure"
        " FROM activity_tasks WHERE run_id = %s AND seq = %s",
        (run_id, seq),
    )
    if row is None:
        return None  # it has an outcome
    state, available_at, sched_time, sched_id, paused, last = row
    if paused:
        # A paused activity has no timeouts (as on Temporal); look again later, for the unpause.
        return now + PAUSED_RECHECK
    attrs = _scheduled_attrs(tx, run_id, sched_id)
    s2s = _dur(attrs, "schedule_to_start_timeout")
    s2c = _dur(attrs, "schedule_to_close_timeout")
    if state != "scheduled":
        # Running: its worker's watchdog has this attempt's timeouts. A retry waits in the queue
        # again, from no earlier than now, so its schedule-to-start cannot end before now + s2s.
        later = ([now + s2s] if s2s else []) + (
            [sched_time + s2c] if s2c and sched_time + s2c > now else []
        )
        return float(min(later)) if later else None
    checks = [(available_at + s2s, TIMEOUT_SCHEDULE_TO_START)] if s2s else []
    checks += [(sched_time + s2c, TIMEOUT_SCHEDULE_TO_CLOSE)] if s2c else []
    if not checks:
        return None
    at, kind = min(checks)
    if at > now:
        return float(at)
    failure = timeouts.timed_out_failure(
        kind, wfenums.RETRY_STATE_TIMEOUT, failure_pb.Failure.FromString(bytes(last)) if last else None
    )
    h.append(
        tx, run_id, et.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        hist.ActivityTaskTimedOutEventAttributes(
            failure=failure, scheduled_event_id=sched_id, retry_state=wfenums.RETRY_STATE_TIMEOUT
        ),
        seq=seq, dedup=f"act-done:{seq}",
    )
    tx.execute("DELETE FROM activity_tasks WHERE run_id = %s AND seq = %s", (run_id, seq))
    return None


def _record_started(
    tx: Tx, run_id: str, seq: int, sched_id: int, attempt: int, identity: str,
    last_failure: failure_pb.Failure | None,
) -> None:
    a = hist.ActivityTaskStartedEventAttributes(
        scheduled_event_id=sched_id, identity=identity, attempt=attempt
    )
    if last_failure is not None:
        a.last_failure.CopyFrom(last_failure)
    h.append(tx, run_id, et.EVENT_TYPE_ACTIVITY_TASK_STARTED, a, seq=None, dedup=f"act-start:{seq}")


async def finish_by_token(
    store: Store, ns: str, token: bytes, kind: str, payload: Message | None, identity: str
) -> None:
    run_id, seq, attempt = parse_token(token)
    if seq == STANDALONE_SEQ:

        def by_standalone(tx: Tx) -> None:
            if kind == "canceled":
                standalone.check_cancelable(tx, run_id)
            if not standalone.finish(tx, run_id, attempt, kind, payload, identity):
                raise ServiceError.not_found("activity task not found")

        await store.transact(ns, by_standalone, lane=FACT)
        return

    def fn(tx: Tx) -> None:
        run = h.get_run(tx, run_id, lock=True)
        if run is None or not run.running:
            raise ServiceError.not_found("workflow execution already completed")
        if not finish(tx, run_id, seq, attempt, kind, payload, identity):
            raise ServiceError.not_found("activity task not found")

    await store.transact(ns, fn, lane=FACT)


@dataclass(frozen=True)
class HeartbeatAnswer:
    """What a heartbeat's response tells the attempt (RecordActivityTaskHeartbeatResponse)."""

    cancel_requested: bool = False
    paused: bool = False
    reset: bool = False

    @property
    def stop(self) -> bool:
        return self.cancel_requested or self.paused or self.reset


async def heartbeat_by_token(
    store: Store, ns: str, token: bytes, details: common.Payloads | None
) -> HeartbeatAnswer:
    """Store heartbeat details; returns whether the attempt was cancelled, paused or reset."""
    run_id, seq, attempt = parse_token(token)

    def fn(tx: Tx) -> HeartbeatAnswer:
        row = tx.one(
            "SELECT attempt, cancel_requested, paused, reset_requested, state FROM activity_tasks"
            " WHERE run_id = %s AND seq = %s",
            (run_id, seq),
        )
        if row is None and seq == STANDALONE_SEQ:

            if standalone.heartbeat_on_closed(tx, run_id):
                return HeartbeatAnswer(True, False, False)  # closed (terminated, say): stop
        if row is None or row[0] != attempt or row[4] != "running":
            raise ServiceError.not_found("activity task not found")
        tx.execute(
            "UPDATE activity_tasks SET heartbeat_at = %s, details = COALESCE(%s, details)"
            " WHERE run_id = %s AND seq = %s",
            (tx.store.clock.now(), details.SerializeToString() if details is not None else None, run_id, seq),
        )
        if seq == STANDALONE_SEQ:  # describe reports how many it has had
            tx.execute(
                "UPDATE activity_executions SET heartbeats = heartbeats + 1 WHERE run_id = %s",
                (run_id,),
            )
        return HeartbeatAnswer(bool(row[1]), bool(row[2]), bool(row[3]))

    return await store.transact(ns, fn)


async def token_by_id(store: Store, ns: str, workflow_id: str, run_id: str, activity_id: str) -> bytes:
    def fn(tx: Tx) -> bytes:
        run = h.find_run(tx, workflow_id, run_id or None)
        if run is None:
            raise ServiceError.not_found(f"workflow not found for ID: {workflow_id}")
        rows = tx.all(
            "SELECT seq, attempt, scheduled_event_id FROM activity_tasks WHERE run_id = %s",
            (run.run_id,),
        )
        for seq, attempt, sched_id in rows:
            if _scheduled_attrs(tx, run.run_id, sched_id).activity_id == activity_id:
                return make_token(run.run_id, seq, attempt)
        raise ServiceError.not_found("activity task not found")

    return await store.transact(ns, fn)


Outcome = tuple[str, int, int, str, "Message | None"]  # run id, seq, attempt, kind, payload


def finish_batch(
    tx: Tx, outcomes: list[Outcome], identity: str, scheduled: Sequence[int | None] | None = None
) -> list[bool]:
    """Record many attempts' outcomes in one transaction (group commit); `finish` for each.

    On Postgres, completed attempts of workflows whose scheduled event id is known (``scheduled``,
    by position) take one statement for the whole batch (`completed_results`).
    """
    done: dict[int, bool] = {}
    if not tx.store.is_sqlite and scheduled is not None:
        from dbosify._engine import completed_results  # (it imports this module's neighbours)

        fast = [
            i for i, o in enumerate(outcomes)
            if o[3] == "completed" and o[1] != STANDALONE_SEQ and scheduled[i] is not None
        ]
        now_ns = int(tx.store.clock.now() * 1e9)
        items = [
            completed_results.build(
                outcomes[i][0], outcomes[i][1], outcomes[i][2], int(scheduled[i] or 0),
                outcomes[i][4], identity, now_ns,  # type: ignore[arg-type]
            )
            for i in fast
        ]
        for i, verdict in zip(fast, completed_results.record_in(tx, items) if items else [], strict=True):
            if verdict is not None:
                done[i] = verdict
    for i, (run_id, seq, attempt, kind, payload) in enumerate(outcomes):
        if i not in done:
            done[i] = finish(tx, run_id, seq, attempt, kind, payload, identity)
    return [done[i] for i in range(len(outcomes))]
