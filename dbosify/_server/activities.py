"""Standalone activity RPCs: start, poll for the outcome, describe, cancel, terminate, list, count.

A client starts an activity with no workflow around it; any worker polling its task queue runs
it (see `dbosify._engine.activity_executions` for the rows, claims, outcomes and timeouts). This module
validates and normalises requests as Temporal's frontend does (timeouts deduced from each other,
a default retry policy, id reuse and conflict policies) and shapes the answers.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import activity_pb2 as act_enums
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.errordetails.v1 import message_pb2 as errdetails
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import activity_executions as ax
from dbosify._engine import activity_tasks as acts
from dbosify._engine import history as h
from dbosify._engine import listing, priorities
from dbosify._engine import search_attributes as sa
from dbosify._engine.errors import ServiceError
from dbosify._engine.visibility_sql import ACTIVITIES, Translated, translate
from dbosify._store import Store, Tx

POLL_SECONDS = 20.0  # a result poll answers empty after this long; the client asks again
_BAD_ENDINGS = {ax.FAILED, ax.CANCELED, ax.TERMINATED, ax.TIMED_OUT}
STATUS_NAMES = {
    ax.RUNNING: "Running", ax.COMPLETED: "Completed", ax.FAILED: "Failed", ax.CANCELED: "Canceled",
    ax.TERMINATED: "Terminated", ax.TIMED_OUT: "TimedOut",
}  # fmt: skip


def _not_found(activity_id: str, run_id: str = "") -> ServiceError:
    if run_id:
        return ServiceError.not_found(
            f"activity execution not found for activity ID {activity_id!r} and run ID {run_id!r}"
        )
    return ServiceError.not_found(f"activity execution not found for activity ID {activity_id!r}")


def _seconds(req: Message, field: str) -> float:
    return getattr(req, field).ToNanoseconds() / 1e9 if req.HasField(field) else 0.0


def _normalize(req: rr.StartActivityExecutionRequest) -> None:
    """Validate a start and fill in what Temporal deduces (in place)."""
    if not req.activity_id:
        raise ServiceError.invalid("activityId is not set")
    if req.HasField("priority"):
        priorities.check(req.priority)
    if not req.activity_type.name:
        raise ServiceError.invalid("activityType is not set")
    if not req.task_queue.name:
        raise ServiceError.invalid("TaskQueue is not set on request.")
    for f in ("schedule_to_close_timeout", "schedule_to_start_timeout", "start_to_close_timeout",
              "heartbeat_timeout", "start_delay"):
        if _seconds(req, f) < 0:
            raise ServiceError.invalid(f"invalid {f}: negative duration")
    s2c, s2s, stc = (
        _seconds(req, "schedule_to_close_timeout"),
        _seconds(req, "schedule_to_start_timeout"),
        _seconds(req, "start_to_close_timeout"),
    )
    if s2c > 0:
        req.schedule_to_start_timeout.FromNanoseconds(int(min(s2s, s2c) * 1e9) if s2s > 0 else int(s2c * 1e9))
        req.start_to_close_timeout.FromNanoseconds(int(min(stc, s2c) * 1e9) if stc > 0 else int(s2c * 1e9))
    elif stc <= 0:
        raise ServiceError.invalid(
            "a valid StartToCloseTimeout or ScheduleToCloseTimeout must be set on the activity."
            f" ActivityId={req.activity_id} ActivityType={req.activity_type.name}"
        )
    hb = _seconds(req, "heartbeat_timeout")
    if hb > 0:
        req.heartbeat_timeout.FromNanoseconds(
            int(min(hb, _seconds(req, "start_to_close_timeout")) * 1e9)
        )
    p = req.retry_policy
    if not p.HasField("initial_interval") or p.initial_interval.ToNanoseconds() <= 0:
        p.initial_interval.FromSeconds(1)
    if not p.backoff_coefficient:
        p.backoff_coefficient = 2.0
    if not p.HasField("maximum_interval") or p.maximum_interval.ToNanoseconds() <= 0:
        p.maximum_interval.FromNanoseconds(p.initial_interval.ToNanoseconds() * 100)
    if p.backoff_coefficient < 1:
        raise ServiceError.invalid("BackoffCoefficient cannot be less than 1.")
    if p.maximum_attempts < 0:
        raise ServiceError.invalid("MaximumAttempts cannot be negative.")
    if not req.id_reuse_policy:
        req.id_reuse_policy = act_enums.ACTIVITY_ID_REUSE_POLICY_ALLOW_DUPLICATE
    if not req.id_conflict_policy:
        req.id_conflict_policy = act_enums.ACTIVITY_ID_CONFLICT_POLICY_FAIL


def _already_started(row: ax.Row) -> ServiceError:
    detail = errdetails.ActivityExecutionAlreadyStartedFailure(
        start_request_id=row.request_id or "", run_id=row.run_id
    )
    return ServiceError.already_exists("activity execution already started", detail)


def _start(tx: Tx, req: rr.StartActivityExecutionRequest) -> tuple[str, bool]:
    if not tx.store.is_sqlite:  # concurrent starts of one id: one at a time
        tx.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("activity:" + req.activity_id,))
    latest = ax.find(tx, req.activity_id, None)
    if latest is not None:
        if req.request_id and latest.request_id == req.request_id:
            return latest.run_id, False  # a retry of this start
        if latest.running:
            if req.id_conflict_policy == act_enums.ACTIVITY_ID_CONFLICT_POLICY_USE_EXISTING:
                return latest.run_id, False
            raise _already_started(latest)
        policy = req.id_reuse_policy
        if policy == act_enums.ACTIVITY_ID_REUSE_POLICY_REJECT_DUPLICATE or (
            policy == act_enums.ACTIVITY_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY
            and latest.status not in _BAD_ENDINGS
        ):
            raise _already_started(latest)
    now = tx.store.clock.now()
    run_id = h.new_run_id()
    delay = _seconds(req, "start_delay")
    attrs = sa.on_start(tx, run_id, req.search_attributes)  # types the payloads in place
    tx.execute(
        "INSERT INTO activity_executions (run_id, activity_id, activity_type, task_queue, status,"
        " request_id, start_time, execution_time, request, search_attributes)"
        " VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s, %s)",
        (run_id, req.activity_id, req.activity_type.name, req.task_queue.name,
         req.request_id or None, now, now + delay, req.SerializeToString(), attrs),
    )
    key, fairness, weight = priorities.effective(req.priority if req.HasField("priority") else None)
    tx.execute(
        "INSERT INTO activity_tasks (run_id, seq, task_queue, attempt, state, available_at,"
        " scheduled_event_id, scheduled_time, task_priority, fairness_key, fairness_weight)"
        " VALUES (%s, 0, %s, 1, 'scheduled', %s, 0, %s, %s, %s, %s)",
        (run_id, req.task_queue.name, now + delay, now, key, fairness, weight),
    )
    row = ax.load(tx, run_id)
    assert row is not None
    ax.set_check(tx, run_id, ax._next_check(row, ax.task(tx, run_id), now))
    tx.notify(f"act:{req.task_queue.name}")
    return run_id, True


async def start(store: Store, req: rr.StartActivityExecutionRequest) -> Message:
    _normalize(req)
    run_id, started = await store.transact(req.namespace, lambda tx: _start(tx, req))
    return rr.StartActivityExecutionResponse(run_id=run_id, started=started)


def _get(tx: Tx, activity_id: str, run_id: str) -> ax.Row:
    if not activity_id:
        raise ServiceError.invalid("activity ID is required")
    row = ax.find(tx, activity_id, run_id or None)
    if row is None:
        raise _not_found(activity_id, run_id)
    return row


def _get_in(activity_id: str, run_id: str, tx: Tx) -> ax.Row:
    return _get(tx, activity_id, run_id)


async def poll(store: Store, req: rr.PollActivityExecutionRequest) -> Message:
    """Long-poll for the outcome: answered when the activity closes, else empty after a while."""
    deadline = time.monotonic() + POLL_SECONDS
    run_id = req.run_id
    while True:
        fut = store.waiter(req.namespace, [ax.result_key(run_id)]) if run_id else None
        row = await store.transact(req.namespace, functools.partial(_get_in, req.activity_id, run_id))
        if fut is None:  # now we know which run to wait for: register, then look again
            run_id = row.run_id
            continue
        if not row.running or time.monotonic() >= deadline:
            fut.cancel()
            resp = rr.PollActivityExecutionResponse(run_id=row.run_id)
            if not row.running and row.outcome is not None:
                resp.outcome.ParseFromString(row.outcome)
            return resp
        try:
            await store.wait_future(fut, max(0.0, deadline - time.monotonic()))
        finally:
            fut.cancel()


def _ts(field: Any, seconds: float | None) -> None:
    if seconds is not None:
        field.FromNanoseconds(int(round(seconds * 1e9)))


def _list_info(info: Any, row: ax.Row, types: dict[str, int]) -> None:
    """The fields that list and describe share."""
    info.activity_id = row.activity_id
    info.run_id = row.run_id
    info.activity_type.name = row.activity_type
    info.status = row.status
    info.task_queue = row.task_queue
    _ts(info.schedule_time, row.start_time)
    _ts(info.execution_time, row.execution_time)
    if row.close_time is not None:
        _ts(info.close_time, row.close_time)
        info.execution_duration.FromNanoseconds(
            max(0, int((row.close_time - row.execution_time) * 1e9))
        )
    if row.search_attributes is not None:
        raw = common.SearchAttributes.FromString(row.search_attributes)
        info.search_attributes.CopyFrom(sa.typed(raw, types))


def _describe(
    tx: Tx, req: rr.DescribeActivityExecutionRequest, row: ax.Row
) -> rr.DescribeActivityExecutionResponse:
    t = ax.task(tx, row.run_id) if row.running else None
    types = sa.writable(tx)
    resp = rr.DescribeActivityExecutionResponse(run_id=row.run_id)
    resp.long_poll_token = str(row.transitions).encode()
    info = resp.info
    _list_info(info, row, types)
    r = row.request
    for f in ("schedule_to_close_timeout", "schedule_to_start_timeout", "start_to_close_timeout",
              "heartbeat_timeout", "retry_policy", "priority", "header", "user_metadata",
              "start_delay"):
        if r.HasField(f):
            getattr(info, f).CopyFrom(getattr(r, f))
    info.state_transition_count = row.transitions
    info.total_heartbeat_count = row.heartbeats
    info.attempt = t.attempt if t is not None else row.attempt
    if t is not None:
        info.run_state = (
            wfenums.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED if t.cancel_requested
            else wfenums.PENDING_ACTIVITY_STATE_STARTED if t.state == "running"
            else wfenums.PENDING_ACTIVITY_STATE_SCHEDULED
        )  # type: ignore[assignment]
        if t.state == "scheduled" and t.attempt > 1:
            _ts(info.next_attempt_schedule_time, t.available_at)
            info.current_retry_interval.FromNanoseconds(
                max(0, int((t.available_at - (row.last_completed or t.available_at)) * 1e9))
            )
    s2c = _seconds(r, "schedule_to_close_timeout")
    if s2c > 0:
        _ts(info.expiration_time, row.start_time + s2c)
    last_started = t.started_at if t is not None and t.started_at is not None else row.last_started
    _ts(info.last_started_time, last_started)
    _ts(info.last_attempt_complete_time, row.last_completed)
    heartbeat_at = t.heartbeat_at if t is not None else row.last_heartbeat
    _ts(info.last_heartbeat_time, heartbeat_at)
    info.last_worker_identity = row.last_identity or ""
    if row.cancel_request_id is not None:
        info.canceled_reason = row.cancel_reason or ""
    details = t.details if t is not None else row.last_details
    if req.include_heartbeat_details and details:
        info.heartbeat_details.ParseFromString(details)
    last_failure = (t.last_failure if t is not None else None) or row.last_failure
    if req.include_last_failure and last_failure:
        info.last_failure.ParseFromString(last_failure)
    if req.include_input and r.HasField("input"):
        resp.input.CopyFrom(r.input)
    if req.include_outcome and row.outcome is not None:
        resp.outcome.ParseFromString(row.outcome)
    return resp


async def describe(store: Store, req: rr.DescribeActivityExecutionRequest) -> Message:
    """Describe; with a long-poll token, first wait (a while) for a transition past it."""
    if req.long_poll_token and not req.run_id:
        raise ServiceError.invalid("run id is required when long poll token is provided")
    seen = int(req.long_poll_token.decode() or 0) if req.long_poll_token else None
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        fut = store.waiter(req.namespace, [ax.result_key(req.run_id)]) if seen is not None else None

        def fn(tx: Tx) -> rr.DescribeActivityExecutionResponse | None:
            row = _get(tx, req.activity_id, req.run_id)
            if seen is not None and row.transitions <= seen and time.monotonic() < deadline:
                return None
            return _describe(tx, req, row)

        try:
            resp = await store.transact(req.namespace, fn)
            if resp is not None:
                return resp
            assert fut is not None
            await store.wait_future(fut, max(0.0, deadline - time.monotonic()))
        finally:
            if fut is not None:
                fut.cancel()


async def request_cancel(store: Store, req: rr.RequestCancelActivityExecutionRequest) -> Message:
    def fn(tx: Tx) -> None:
        row = _get(tx, req.activity_id, req.run_id)
        ax.request_cancel(tx, row.run_id, req.reason, req.request_id, req.identity)

    await store.transact(req.namespace, fn)
    return rr.RequestCancelActivityExecutionResponse()


async def terminate(store: Store, req: rr.TerminateActivityExecutionRequest) -> Message:
    def fn(tx: Tx) -> None:
        row = _get(tx, req.activity_id, req.run_id)
        ax.terminate(tx, row.run_id, req.reason, req.request_id, req.identity)

    await store.transact(req.namespace, fn)
    return rr.TerminateActivityExecutionResponse()


async def delete(store: Store, req: rr.DeleteActivityExecutionRequest) -> Message:
    """Delete a run of an activity (a running one is terminated first, as Temporal does)."""

    def fn(tx: Tx) -> None:
        row = _get(tx, req.activity_id, req.run_id)
        if row.running:
            ax.terminate(tx, row.run_id, "deleted", "", "")
        tx.execute("DELETE FROM search_attributes WHERE run_id = %s", (row.run_id,))
        tx.execute("DELETE FROM activity_executions WHERE run_id = %s", (row.run_id,))

    await store.transact(req.namespace, fn)
    return rr.DeleteActivityExecutionResponse()


# -- list and count ----------------------------------------------------------------------------


_LIST_COLS = ", ".join("e." + c.strip() for c in ax._COLS.split(","))


def _translate(tx: Tx, query: str) -> Translated:
    return translate(query, sa.registry(tx), sqlite=tx.store.is_sqlite, target=ACTIVITIES)


async def list_executions(store: Store, req: rr.ListActivityExecutionsRequest) -> Message:
    """Newest first, paged by keyset (start time, run id); an ORDER BY pages by offset."""
    size = req.page_size if req.page_size > 0 else listing.DEFAULT_PAGE
    after = listing.read_token(req.next_page_token)

    def fn(tx: Tx) -> tuple[list[ax.Row], dict[str, int], bool]:
        q = _translate(tx, req.query)
        rows = listing.page(tx, "activity_executions", _LIST_COLS, q, size, after)
        return [ax._row(r) for r in rows], sa.writable(tx), bool(q.order_by)

    rows, types, ordered = await store.transact(req.namespace, fn)
    resp = rr.ListActivityExecutionsResponse()
    for row in rows:
        info = resp.executions.add()
        _list_info(info, row, types)
        if not row.running:
            info.state_transition_count = row.transitions
    if rows:
        resp.next_page_token = listing.next_token(
            len(rows), size, ordered, after, rows[-1].start_time, rows[-1].run_id
        )
    return resp


async def count_executions(store: Store, req: rr.CountActivityExecutionsRequest) -> Message:
    result = await store.transact(
        req.namespace, lambda tx: listing.count(tx, "activity_executions", _translate(tx, req.query))
    )
    return listing.fill_count(rr.CountActivityExecutionsResponse(), result, STATUS_NAMES)


# -- asynchronous completion by id (no workflow id: a standalone activity) ---------------------


async def token_by_id(store: Store, ns: str, activity_id: str, run_id: str) -> bytes:
    """The task token of the activity's running attempt, for the *ById RPCs."""

    def fn(tx: Tx) -> bytes:
        row = _get(tx, activity_id, run_id)
        t = ax.task(tx, row.run_id) if row.running else None
        if t is None or t.state != "running":
            raise ServiceError.not_found("activity task not found")
        return acts.make_token(row.run_id, ax.STANDALONE_SEQ, t.attempt)

    return await store.transact(ns, fn)
