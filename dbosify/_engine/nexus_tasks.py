"""Nexus operations' tasks: a start or cancel request waiting for (or held by) a worker of the
endpoint's task queue, and what its outcome writes into the caller's history.

A workflow's ScheduleNexusOperation appends NexusOperationScheduled and inserts a `nexus_tasks`
row in the same transaction (`schedule_start`), waking ``nexus:<task queue>``. A worker that
registered Nexus services claims ready rows (`claim`: fenced like activity attempts: the claim
checks the worker's liveness row, the task token carries the attempt, a takeover increments it)
and answers with temporalio's NexusTaskCompletion (`complete`): a sync result or an operation
error closes the operation in the caller's history; an async start records NexusOperationStarted
with the handler's links; a retryable handler error puts the row back with a backoff; a
non-retryable one fails the operation. A workflow-run operation's workflow carries a completion
callback (``temporal://system`` with our token, as on Temporal) in its started event; the
transaction that closes it records the outcome in the caller's history (`on_run_closed`).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as E
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.nexus.v1 import message_pb2 as nx
from temporalio.bridge.proto.nexus import nexus_pb2 as core_nx

from dbosify._engine import history as h
from dbosify._engine import nexus_endpoints
from dbosify._engine.liveness import owns_row
from dbosify._store import Tx

logger = logging.getLogger("dbosify")

CALLBACK_URL = "temporal://system"
TOKEN_HEADER = "temporal-callback-token"
OPERATION_TOKEN_HEADER = "nexus-operation-token"
CLAIM_BATCH = 8
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
REQUEST_TIMEOUT = 10.0  # Temporal's default per-request timeout of a Nexus task
UNSUCCESSFUL = "nexus operation completed unsuccessfully"
# Handler error types Temporal retries unless the handler says otherwise.
RETRYABLE_TYPES = {"INTERNAL", "UNAVAILABLE", "UPSTREAM_TIMEOUT", "RESOURCE_EXHAUSTED", ""}
RETRY_BEHAVIOR_RETRYABLE = 1
RETRY_BEHAVIOR_NON_RETRYABLE = 2

CANCEL_ANSWERS = (
    E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED,
    E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_FAILED,
)
OUTCOMES = (
    E.EVENT_TYPE_NEXUS_OPERATION_COMPLETED,
    E.EVENT_TYPE_NEXUS_OPERATION_FAILED,
    E.EVENT_TYPE_NEXUS_OPERATION_CANCELED,
    E.EVENT_TYPE_NEXUS_OPERATION_TIMED_OUT,
)


_FAILURE_ATTRS: dict[int, Any] = {
    E.EVENT_TYPE_NEXUS_OPERATION_FAILED: hist.NexusOperationFailedEventAttributes,
    E.EVENT_TYPE_NEXUS_OPERATION_CANCELED: hist.NexusOperationCanceledEventAttributes,
    E.EVENT_TYPE_NEXUS_OPERATION_TIMED_OUT: hist.NexusOperationTimedOutEventAttributes,
}


def wake_key(task_queue: str) -> str:
    return f"nexus:{task_queue}"


def make_token(task_id: str, attempt: int) -> bytes:
    return f"nx:{task_id}:{attempt}".encode()


def parse_token(token: bytes) -> tuple[str, int] | None:
    parts = token.decode(errors="replace").split(":")
    if len(parts) != 3 or parts[0] != "nx" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def _dur(msg: Any, name: str) -> float | None:
    if msg.HasField(name):
        secs = float(getattr(msg, name).ToNanoseconds()) / 1e9
        return secs if secs > 0 else None
    return None


# -- the caller's side ---------------------------------------------------------------------------


def schedule_start(
    tx: Tx, run: h.Run, seq: int, sched_id: int, attrs: hist.NexusOperationScheduledEventAttributes,
    task_queue: str, now: float,
) -> None:
    """The operation's first start request, for the endpoint's task queue (same transaction)."""
    task_id = str(uuid.uuid4())
    req = nx.Request(endpoint=attrs.endpoint)
    req.scheduled_time.FromNanoseconds(int(now * 1e9))
    for k, v in attrs.nexus_header.items():
        req.header[k] = v
    so = req.start_operation
    so.service, so.operation, so.request_id = attrs.service, attrs.operation, attrs.request_id
    so.payload.CopyFrom(attrs.input)
    so.callback = CALLBACK_URL
    so.callback_header[TOKEN_HEADER] = json.dumps(
        {"ns": tx.namespace, "run": run.run_id, "seq": seq, "sched": sched_id, "task": task_id,
         "req": attrs.request_id}
    )
    so.links.append(_caller_link(tx.namespace, run, sched_id))
    deadline = _dur(attrs, "schedule_to_close_timeout")
    tx.execute(
        "INSERT INTO nexus_tasks (task_id, run_id, seq, scheduled_event_id, kind, task_queue, endpoint,"
        " request, state, attempt, available_at, deadline) VALUES (%s, %s, %s, %s, 'start', %s, %s, %s,"
        " 'scheduled', 1, %s, %s)",
        (task_id, run.run_id, seq, sched_id, task_queue, attrs.endpoint, req.SerializeToString(), now,
         None if deadline is None else now + deadline),
    )
    tx.notify(wake_key(task_queue))


def _caller_link(ns: str, run: h.Run, sched_id: int) -> nx.Link:
    from temporalio.nexus import _link_conversion as lc

    ev = common.Link.WorkflowEvent(namespace=ns, workflow_id=run.workflow_id, run_id=run.run_id)
    ev.event_ref.event_id = sched_id
    ev.event_ref.event_type = E.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED
    link = lc.workflow_event_to_nexus_link(ev)
    return nx.Link(url=link.url, type=link.type)


def started_link(ns: str, workflow_id: str, run_id: str) -> common.Link:
    """The link a start answers a Nexus handler with: the run's started event."""
    link = common.Link()
    ev = link.workflow_event
    ev.namespace, ev.workflow_id, ev.run_id = ns, workflow_id, run_id
    ev.event_ref.event_id = 1
    ev.event_ref.event_type = E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    return link


def scheduled_attrs(tx: Tx, run_id: str, seq: int) -> tuple[int, hist.NexusOperationScheduledEventAttributes] | None:
    row = tx.one(
        "SELECT event FROM history WHERE run_id = %s AND seq = %s AND event_type = %s",
        (run_id, seq, E.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED),
    )
    if row is None:
        return None
    ev = hist.HistoryEvent.FromString(bytes(row[0]))
    return ev.event_id, ev.nexus_operation_scheduled_event_attributes


def request_cancel(tx: Tx, run: h.Run, seq: int, wft_id: int, ts: float) -> None:
    """RequestCancelNexusOperation (Temporal's default WAIT_COMPLETED): recorded; a start not yet
    handed to a worker is cancelled at once; a started operation gets a cancel request task."""
    got = scheduled_attrs(tx, run.run_id, seq)
    if got is None:
        return
    sched_id, attrs = got
    # Recorded whatever happened meanwhile, as the command was given (a replay matches it).
    h.append(
        tx, run.run_id, E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED,
        hist.NexusOperationCancelRequestedEventAttributes(scheduled_event_id=sched_id, workflow_task_completed_event_id=wft_id),
        at=ts,
    )
    if tx.one("SELECT 1 FROM history WHERE run_id = %s AND dedup = %s", (run.run_id, f"nx-done:{seq}")):
        return  # resolved while the workflow task ran: nothing left to cancel
    start = tx.one(
        "SELECT task_id, state FROM nexus_tasks WHERE run_id = %s AND seq = %s AND kind = 'start'", (run.run_id, seq)
    )
    if start is not None and start[1] == "scheduled":
        tx.execute("DELETE FROM nexus_tasks WHERE task_id = %s", (start[0],))
        cause = failure_pb.Failure(message="operation canceled before it was started")
        cause.canceled_failure_info.SetInParent()
        _outcome(tx, run.run_id, seq, sched_id, attrs, E.EVENT_TYPE_NEXUS_OPERATION_CANCELED, cause=cause)
    elif start is not None:
        # Running: the cancel follows once the start's answer names the operation.
        tx.execute("UPDATE nexus_tasks SET cancel_requested = 1 WHERE task_id = %s", (start[0],))
    else:
        started = tx.one(
            "SELECT event FROM history WHERE run_id = %s AND seq = %s AND event_type = %s",
            (run.run_id, seq, E.EVENT_TYPE_NEXUS_OPERATION_STARTED),
        )
        if started is not None:
            token = hist.HistoryEvent.FromString(bytes(started[0])).nexus_operation_started_event_attributes.operation_token
            _schedule_cancel(tx, run.run_id, seq, sched_id, attrs, token, ts)


def _schedule_cancel(
    tx: Tx, run_id: str, seq: int, sched_id: int, attrs: hist.NexusOperationScheduledEventAttributes,
    token: str, now: float,
) -> None:
    ep = nexus_endpoints.lookup_in_tx(tx, attrs.endpoint)
    if ep is None:
        return
    req = nx.Request(endpoint=attrs.endpoint)
    req.scheduled_time.FromNanoseconds(int(now * 1e9))
    # The caller's Nexus headers go with the cancel as with the start (a tracing context, ...).
    for k, v in attrs.nexus_header.items():
        req.header[k] = v
    co = req.cancel_operation
    co.service, co.operation, co.operation_token, co.operation_id = attrs.service, attrs.operation, token, token
    tq = ep.target[1]
    tx.execute(
        "INSERT INTO nexus_tasks (task_id, run_id, seq, scheduled_event_id, kind, task_queue, endpoint,"
        " request, state, attempt, available_at) VALUES (%s, %s, %s, %s, 'cancel', %s, %s, %s, 'scheduled', 1, %s)",
        (str(uuid.uuid4()), run_id, seq, sched_id, tq, attrs.endpoint, req.SerializeToString(), now),
    )
    tx.notify(wake_key(tq))


def _cancel_answered(tx: Tx, run_id: str, seq: int, sched_id: int, failure: failure_pb.Failure | None) -> None:
    """The handler answered a cancel request: NexusOperationCancelRequestCompleted, or
    NexusOperationCancelRequestFailed with its failure, in the caller's history (once)."""
    run = h.get_run(tx, run_id, lock=True)
    if run is None or not run.running:
        return
    requested = 0
    for eid, raw in tx.all(
        "SELECT event_id, event FROM history WHERE run_id = %s AND event_type = %s",
        (run_id, E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED),
    ):
        ev = hist.HistoryEvent.FromString(bytes(raw))
        if ev.nexus_operation_cancel_requested_event_attributes.scheduled_event_id == sched_id:
            requested = int(eid)
    msg: Any
    if failure is None:
        event_type = E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED
        msg = hist.NexusOperationCancelRequestCompletedEventAttributes(
            requested_event_id=requested, scheduled_event_id=sched_id)
    else:
        event_type = E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_FAILED
        msg = hist.NexusOperationCancelRequestFailedEventAttributes(
            requested_event_id=requested, scheduled_event_id=sched_id)
        msg.failure.CopyFrom(failure)
    h.append(tx, run_id, event_type, msg, seq=seq, dedup=f"nx-cancel-answered:{seq}")


def wrap_failure(sched_id: int, attrs: hist.NexusOperationScheduledEventAttributes, cause: failure_pb.Failure,
                 token: str = "") -> failure_pb.Failure:
    """Temporal's chain: NexusOperationFailure (what was called) caused by what the handler said."""
    f = failure_pb.Failure(message=UNSUCCESSFUL)
    i = f.nexus_operation_execution_failure_info
    i.scheduled_event_id = sched_id
    i.endpoint, i.service, i.operation = attrs.endpoint, attrs.service, attrs.operation
    if token:
        i.operation_token = token
        i.operation_id = token
    f.cause.CopyFrom(cause)
    return f


def _outcome(
    tx: Tx, run_id: str, seq: int, sched_id: int, attrs: hist.NexusOperationScheduledEventAttributes,
    event_type: int, *, result: common.Payload | None = None, cause: failure_pb.Failure | None = None,
    token: str = "",
) -> bool:
    """Close the operation in the caller's history (once: deduplicated). False if the caller's
    run is gone or closed, or the operation was closed already."""
    run = h.get_run(tx, run_id, lock=True)
    if run is None or not run.running:
        return False
    msg: Any
    if event_type == E.EVENT_TYPE_NEXUS_OPERATION_COMPLETED:
        msg = hist.NexusOperationCompletedEventAttributes(scheduled_event_id=sched_id, request_id=attrs.request_id)
        if result is not None:
            msg.result.CopyFrom(result)
    else:
        cls: Any = _FAILURE_ATTRS[event_type]
        msg = cls(scheduled_event_id=sched_id, request_id=attrs.request_id)
        assert cause is not None
        msg.failure.CopyFrom(wrap_failure(sched_id, attrs, cause, token))
    got = h.append(tx, run_id, event_type, msg, seq=seq, dedup=f"nx-done:{seq}")
    if got is not None:
        tx.execute("DELETE FROM nexus_tasks WHERE run_id = %s AND seq = %s", (run_id, seq))
    return got is not None


def _started(tx: Tx, run_id: str, seq: int, sched_id: int, attrs: hist.NexusOperationScheduledEventAttributes,
             token: str, links: list[common.Link]) -> bool:
    run = h.get_run(tx, run_id, lock=True)
    if run is None or not run.running:
        return False
    msg = hist.NexusOperationStartedEventAttributes(
        scheduled_event_id=sched_id, operation_id=token, operation_token=token, request_id=attrs.request_id
    )
    return h.append(tx, run_id, E.EVENT_TYPE_NEXUS_OPERATION_STARTED, msg, seq=seq,
                    dedup=f"nx-started:{seq}", links=links) is not None


# -- the handler's side ---------------------------------------------------------------------------


def claim(tx: Tx, task_queue: str, owner: str, limit: int) -> tuple[list[bytes], float | None]:
    """Up to ``limit`` ready tasks for ``owner`` (NexusTask protos), and when the next is ready."""
    now = tx.store.clock.now()
    if not owns_row(tx, owner):
        return [], now + 0.5
    rows = tx.all(
        "SELECT task_id FROM nexus_tasks WHERE task_queue = %s AND state = 'scheduled' AND available_at <= %s"
        " ORDER BY available_at LIMIT %s",
        (task_queue, now, max(1, min(limit, CLAIM_BATCH))),
    )
    out: list[bytes] = []
    for (task_id,) in rows:
        got = tx.one(
            "UPDATE nexus_tasks SET state = 'running', owner = %s WHERE task_id = %s AND state = 'scheduled'"
            " RETURNING attempt, request, endpoint, deadline",
            (owner, task_id),
        )
        if got is None:
            continue
        task = core_nx.NexusTask(endpoint=str(got[2]))
        task.task.task_token = make_token(str(task_id), int(got[0]))
        task.task.request.ParseFromString(bytes(got[1]))
        # As on Temporal: each request has its own deadline (the server's per-request timeout),
        # never past the operation's schedule-to-close deadline.
        request_deadline = now + REQUEST_TIMEOUT
        if got[3] is not None:
            request_deadline = min(request_deadline, float(got[3]))
        task.request_deadline.FromNanoseconds(int(request_deadline * 1e9))
        out.append(task.SerializeToString())
    tx.lease()
    return out, next_ready(tx, task_queue)


def next_ready(tx: Tx, task_queue: str) -> float | None:
    row = tx.one(
        "SELECT min(available_at) FROM nexus_tasks WHERE task_queue = %s AND state = 'scheduled'", (task_queue,)
    )
    return None if row is None or row[0] is None else float(row[0])


def _retryable(f: failure_pb.Failure) -> bool:
    info = f.nexus_handler_failure_info
    if info.retry_behavior == RETRY_BEHAVIOR_RETRYABLE:
        return True
    if info.retry_behavior == RETRY_BEHAVIOR_NON_RETRYABLE:
        return False
    return info.type in RETRYABLE_TYPES


def complete(tx: Tx, owner: str, token: bytes, completion: core_nx.NexusTaskCompletion) -> None:
    """Record a worker's answer to a task it holds; a stale answer (its claim was taken over)
    changes nothing."""
    parsed = parse_token(token)
    if parsed is None:
        return
    task_id, attempt = parsed
    lock = "" if tx.store.is_sqlite else " FOR UPDATE"
    row = tx.one(
        "SELECT run_id, seq, scheduled_event_id, kind, request, task_queue, cancel_requested, deadline"
        f" FROM nexus_tasks WHERE task_id = %s AND owner = %s AND attempt = %s AND state = 'running'{lock}",
        (task_id, owner, attempt),
    )
    if row is None:
        logger.info("dbosify: a Nexus task's answer came after its claim was taken over; ignored")
        return
    run_id, seq, sched_id, kind, req_bytes, tq, cancel_requested, deadline = row
    got = scheduled_attrs(tx, run_id, seq)
    if got is None:
        tx.execute("DELETE FROM nexus_tasks WHERE task_id = %s", (task_id,))
        return
    _, attrs = got
    now = tx.store.clock.now()
    failure: failure_pb.Failure | None = None
    if completion.HasField("failure"):
        failure = completion.failure
    elif completion.HasField("error"):
        failure = failure_pb.Failure(message=completion.error.failure.message or "handler error")
        failure.nexus_handler_failure_info.type = completion.error.error_type or "INTERNAL"
    elif completion.HasField("ack_cancel") or not completion.HasField("completed"):
        failure = failure_pb.Failure(message="the Nexus task was cancelled")
        failure.nexus_handler_failure_info.type = "INTERNAL"
    if failure is not None:
        if _retryable(failure) and (deadline is None or now < float(deadline)):
            delay = min(BACKOFF_INITIAL * 2 ** (attempt - 1), BACKOFF_MAX)
            tx.execute(
                "UPDATE nexus_tasks SET state = 'scheduled', owner = NULL, attempt = attempt + 1,"
                " available_at = %s, last_failure = %s WHERE task_id = %s",
                (now + delay, failure.SerializeToString(), task_id),
            )
            tx.notify(wake_key(tq))
        elif kind == "start":
            _outcome(tx, run_id, seq, sched_id, attrs, E.EVENT_TYPE_NEXUS_OPERATION_FAILED, cause=failure)
        else:
            tx.execute("DELETE FROM nexus_tasks WHERE task_id = %s", (task_id,))
            _cancel_answered(tx, run_id, seq, sched_id, failure)
        return
    resp = completion.completed
    if kind == "cancel":
        tx.execute("DELETE FROM nexus_tasks WHERE task_id = %s", (task_id,))
        _cancel_answered(tx, run_id, seq, sched_id, None)
        return
    so = resp.start_operation
    variant = so.WhichOneof("variant")
    if variant == "sync_success":
        _outcome(tx, run_id, seq, sched_id, attrs, E.EVENT_TYPE_NEXUS_OPERATION_COMPLETED, result=so.sync_success.payload)
    elif variant == "async_success":
        op_token = so.async_success.operation_token or so.async_success.operation_id
        links = _event_links(so.async_success.links)
        tx.execute("DELETE FROM nexus_tasks WHERE task_id = %s", (task_id,))
        if _started(tx, run_id, seq, sched_id, attrs, op_token, links) and cancel_requested:
            _schedule_cancel(tx, run_id, seq, sched_id, attrs, op_token, now)
    else:
        if variant == "failure":
            f = so.failure
        else:  # the older form: a Nexus failure and the operation's state
            f = failure_pb.Failure(message=so.operation_error.failure.message)
            if so.operation_error.operation_state == "canceled":
                f.canceled_failure_info.SetInParent()
            else:
                f.application_failure_info.type = "OperationError"
                f.application_failure_info.non_retryable = True
        etype = (
            E.EVENT_TYPE_NEXUS_OPERATION_CANCELED
            if f.WhichOneof("failure_info") == "canceled_failure_info"
            else E.EVENT_TYPE_NEXUS_OPERATION_FAILED
        )
        _outcome(tx, run_id, seq, sched_id, attrs, etype, cause=f)


def _event_links(links: Any) -> list[common.Link]:
    import nexusrpc
    from temporalio.nexus import _link_conversion as lc

    out = []
    for link in links:
        try:
            got = lc.nexus_link_to_temporal_link(nexusrpc.Link(url=link.url, type=link.type))
        except Exception:
            got = None
        if got is not None:
            out.append(got)
    return out


def release_owner(tx: Tx, owner: str, now: float) -> list[str]:
    """A dead (or departing) worker's tasks go back to their queues as their next attempt."""
    rows = tx.all(
        "UPDATE nexus_tasks SET state = 'scheduled', owner = NULL, attempt = attempt + 1, available_at = %s"
        " WHERE owner = %s AND state = 'running' RETURNING task_queue",
        (now, owner),
    )
    queues = sorted({str(r[0]) for r in rows})
    for q in queues:
        tx.notify(wake_key(q))
    return queues


# -- a handler workflow closes ----------------------------------------------------------------------


def on_run_closed(tx: Tx, run: h.Run, status: int, attrs: Any) -> None:
    """The closing run's leftovers as a caller (its operations' tasks), and, if it was started by
    a workflow-run operation of this namespace, the operation's outcome in the caller's history."""
    tx.execute("DELETE FROM nexus_tasks WHERE run_id = %s", (run.run_id,))
    if status == h.CONTINUED_AS_NEW:
        return
    row = tx.one("SELECT event FROM history WHERE run_id = %s AND event_id = 1", (run.run_id,))
    if row is None:
        return
    started = hist.HistoryEvent.FromString(bytes(row[0])).workflow_execution_started_event_attributes
    for cb in started.completion_callbacks:
        if cb.nexus.url != CALLBACK_URL or TOKEN_HEADER not in cb.nexus.header:
            continue
        try:
            ref = json.loads(cb.nexus.header[TOKEN_HEADER])
            caller_ns, caller_run, seq, sched_id = ref["ns"], ref["run"], int(ref["seq"]), int(ref["sched"])
            request_id = str(ref["req"])
        except (ValueError, KeyError, TypeError):
            continue
        if caller_ns != tx.namespace:
            continue  # another namespace's caller: not in this release (docs/COMPATIBILITY.md)
        _deliver(tx, caller_run, seq, sched_id, request_id, cb.nexus.header.get(OPERATION_TOKEN_HEADER, ""),
                 run, status, attrs)


def _deliver(tx: Tx, caller_run: str, seq: int, sched_id: int, request_id: str, token: str, run: h.Run,
             status: int, attrs: Any) -> None:
    got = scheduled_attrs(tx, caller_run, seq)
    if got is None:
        return
    event_id, sched = got
    if event_id != sched_id or not request_id or sched.request_id != request_id:
        # Not the callback this operation's start handed out (a start's completion callbacks are
        # the client's to give): the caller's history is never written from it.
        logger.warning("dbosify: a completion callback for run %s names no operation of it; ignored", caller_run)
        return
    # The handler's run may close before its start answer is recorded: the start goes first.
    if tx.one("SELECT 1 FROM nexus_tasks WHERE run_id = %s AND seq = %s AND kind = 'start'", (caller_run, seq)):
        _started(tx, caller_run, seq, sched_id, sched, token, [])
        tx.execute("DELETE FROM nexus_tasks WHERE run_id = %s AND seq = %s AND kind = 'start'", (caller_run, seq))
    if status == h.COMPLETED:
        result = attrs.result.payloads[0] if attrs.result.payloads else common.Payload()
        _outcome(tx, caller_run, seq, sched_id, sched, E.EVENT_TYPE_NEXUS_OPERATION_COMPLETED, result=result)
        return
    etype = E.EVENT_TYPE_NEXUS_OPERATION_FAILED
    if status == h.FAILED:
        cause = failure_pb.Failure()
        cause.CopyFrom(attrs.failure)
    elif status == h.CANCELED:
        cause = failure_pb.Failure(message="operation canceled")
        cause.canceled_failure_info.details.CopyFrom(attrs.details)
        etype = E.EVENT_TYPE_NEXUS_OPERATION_CANCELED
    elif status == h.TERMINATED:
        cause = failure_pb.Failure(message="operation terminated")
        cause.terminated_failure_info.SetInParent()
    else:
        cause = failure_pb.Failure(message="operation exceeded internal timeout")
        cause.timeout_failure_info.timeout_type = 1  # type: ignore[assignment]  # START_TO_CLOSE
    _outcome(tx, caller_run, seq, sched_id, sched, etype, cause=cause, token=token)
