"""Starting and closing runs, in one transaction with the events they append.

Shared by the service (client requests) and the run driver (workflow commands):
id reuse and conflict policies, the close event, and the parent's child-result
event all happen here, atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.errordetails.v1 import message_pb2 as errdetails
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.update.v1 import message_pb2 as upd_pb

from dbosify._dbos import records
from dbosify._engine import deployments, priorities, search_attributes
from dbosify._engine import history as h
from dbosify._engine import nexus_tasks as _nexus_tasks
from dbosify._engine.errors import ServiceError
from dbosify._store import Tx
from dbosify._store.wakeups import with_value

_CLOSED_BAD = {h.FAILED, h.CANCELED, h.TERMINATED, h.TIMED_OUT}

# What `close` tells the scheduler when a run a schedule started closes, in the close's transaction
# (`dbosify._engine.scheduler.on_run_closed`, set by the `dbosify._engine` package as it loads).
# The scheduler starts runs through this module, so this module does not import it.
on_schedule_run_closed: Callable[[Tx, h.Run, int, Any], None] | None = None


@dataclass
class StartResult:
    run_id: str
    started: bool


def already_started(workflow_id: str, run_id: str, request_id: str = "") -> ServiceError:
    detail = errdetails.WorkflowExecutionAlreadyStartedFailure(
        start_request_id=request_id, run_id=run_id
    )
    return ServiceError.already_exists(
        f"Workflow execution is already running. WorkflowId: {workflow_id}, RunId: {run_id}.",
        detail,
    )


def start_run(
    tx: Tx,
    *,
    workflow_id: str,
    workflow_type: str,
    task_queue: str,
    started: hist.WorkflowExecutionStartedEventAttributes,
    request_id: str = "",
    reuse_policy: int = 0,
    conflict_policy: int = 0,
    parent: tuple[str, str, str, int] | None = None,
    run_id: str | None = None,
    identity: str = "",
    metadata: Message | None = None,
    delay: float = 0.0,
    schedule_id: str | None = None,
    cron_schedule: str = "",
    pinned_version: str | None = None,
) -> StartResult:
    """Create a run (or apply the id policies) and append its started event. ``pinned_version``:
    the worker deployment version (canonical string) its workflow tasks go to until one of them
    says otherwise (continue-as-new's inheritance; a start's pinned override is in ``started``)."""
    existing = h.current_run(tx, workflow_id, lock=True)
    if existing is not None and existing.running:
        if request_id and existing.request_id == request_id:
            return StartResult(existing.run_id, False)
        if conflict_policy == wfenums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING:
            return StartResult(existing.run_id, False)
        if (
            conflict_policy == wfenums.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING
            or reuse_policy == wfenums.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING
        ):
            terminate(tx, existing, "terminated by a start with the same workflow id", identity)
        else:
            raise already_started(workflow_id, existing.run_id, request_id)
    elif existing is not None:
        if reuse_policy == wfenums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE or (
            reuse_policy == wfenums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY
            and existing.status not in _CLOSED_BAD
        ):
            raise already_started(workflow_id, existing.run_id, request_id)

    now = tx.store.clock.now()
    if cron_schedule:
        started.cron_schedule = cron_schedule
    run_id = run_id or h.new_run_id()
    first_run_id = started.first_execution_run_id or run_id
    started.first_execution_run_id = first_run_id
    if not started.original_execution_run_id:
        started.original_execution_run_id = run_id
    started.workflow_id = workflow_id
    started.workflow_type.name = workflow_type
    started.task_queue.name = task_queue
    if identity and not started.identity:
        started.identity = identity
    if not started.attempt:
        started.attempt = 1
    if not started.HasField("workflow_task_timeout") or not started.workflow_task_timeout.ToNanoseconds():
        started.workflow_task_timeout.FromSeconds(10)  # Temporal's default
    exec_deadline: float | None = None
    if started.HasField("workflow_execution_expiration_time"):
        exec_deadline = started.workflow_execution_expiration_time.ToNanoseconds() / 1e9
    elif started.HasField("workflow_execution_timeout") and started.workflow_execution_timeout.ToNanoseconds():
        exec_deadline = now + delay + started.workflow_execution_timeout.ToNanoseconds() / 1e9
        started.workflow_execution_expiration_time.FromNanoseconds(int(exec_deadline * 1e9))
    run_deadline: float | None = None
    if started.HasField("workflow_run_timeout") and started.workflow_run_timeout.ToNanoseconds():
        run_deadline = now + delay + started.workflow_run_timeout.ToNanoseconds() / 1e9
    if exec_deadline is not None and (run_deadline is None or exec_deadline < run_deadline):
        run_deadline = exec_deadline
    p_ns, p_wf, p_run, p_seq = parent if parent else (None, None, None, None)
    root = (workflow_id, run_id)
    if p_run is not None and (p_ns or tx.namespace) == tx.namespace:
        row = tx.one(
            "SELECT root_workflow_id, root_run_id, priority_key, fairness_key, fairness_weight"
            " FROM executions WHERE run_id = %s",
            (p_run,),
        )
        if row is not None and row[0]:
            root = (row[0], row[1])
        if row is not None:
            # A child inherits each priority field it leaves unset (its started event shows
            # the merged priority, as on Temporal).
            merged = priorities.merge(priorities.from_row(row[2:]), started.priority)
            if merged.ByteSize():
                started.priority.CopyFrom(merged)
    elif started.HasField("root_workflow_execution") and started.root_workflow_execution.run_id:
        root = (started.root_workflow_execution.workflow_id, started.root_workflow_execution.run_id)
    prio = started.priority
    tx.execute(
        "INSERT INTO executions (run_id, workflow_id, workflow_type, task_queue, status,"
        " first_execution_run_id, start_time, next_event_id, parent_namespace, parent_workflow_id,"
        " parent_run_id, parent_seq, request_id, execution_deadline, run_deadline, not_before,"
        " execution_time, root_workflow_id, root_run_id, memo, search_attributes, schedule_id,"
        " cron_schedule, priority_key, fairness_key, fairness_weight, task_priority, vers_bucket)"
        " VALUES (%s, %s, %s, %s, 1, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s)",
        (
            run_id,
            workflow_id,
            workflow_type,
            task_queue,
            first_run_id,
            now,
            p_ns,
            p_wf,
            p_run,
            p_seq,
            request_id or None,
            exec_deadline,
            run_deadline,
            now + delay if delay > 0 else None,
            now + max(delay, 0.0),
            *root,
            search_attributes.memo_on_start(started.memo),
            search_attributes.on_start(tx, run_id, started.search_attributes),
            schedule_id,
            cron_schedule or None,
            prio.priority_key,
            prio.fairness_key,
            prio.fairness_weight,
            priorities.dispatch_key(prio),
            deployments.bucket(workflow_id),
        ),
    )
    if pinned_version is None and started.HasField("inherited_pinned_version"):
        v = started.inherited_pinned_version
        pinned_version = deployments.canonical(v.deployment_name, v.build_id)
    deployments.on_start(
        tx, run_id,
        started.versioning_override if started.HasField("versioning_override") else None, pinned_version,
    )
    if delay > 0:
        started.first_workflow_task_backoff.FromNanoseconds(int(delay * 1e9))
    h.append(tx, run_id, et.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, started, at=now, metadata=metadata)
    records.on_start(
        tx, workflow_id, run_id, workflow_type, task_queue, started.input,
        (p_ns or tx.namespace, p_wf, p_run) if p_wf and p_run else None,
    )
    tx.notify(f"wf:{task_queue}")
    return StartResult(run_id, True)


def close_run(
    tx: Tx,
    run: h.Run,
    status: int,
    event_type: int,
    attrs: Message,
    *,
    notify_parent: bool = True,
) -> None:
    """Close ``run``: its close event, its status, its parent's child event, its leftovers."""
    now = tx.store.clock.now()
    next_cron = None
    if run.cron_schedule and status in _CRON_GOES_ON and not getattr(attrs, "new_execution_run_id", ""):
        next_cron = h.new_run_id()
        attrs.new_execution_run_id = next_cron  # type: ignore[attr-defined]
        notify_parent = False
    close_id = h.append(tx, run.run_id, event_type, attrs, at=now)
    tx.execute(
        "UPDATE executions SET status = %s, close_time = %s, owner = NULL WHERE run_id = %s",
        (status, now, run.run_id),
    )
    tx.execute("DELETE FROM activity_tasks WHERE run_id = %s", (run.run_id,))
    _nexus_tasks.on_run_closed(tx, run, status, attrs)  # its operations; a workflow-run operation's caller
    records.on_close(tx, run, status, attrs)
    if run.schedule_id is not None:
        assert on_schedule_run_closed is not None  # (dbosify._engine sets it on import)
        on_schedule_run_closed(tx, run, status, attrs)
    # Updates that never reached a handler go on to the run this one continues into (continue-as-
    # new, a retry, the next cron run), as on Temporal; its first workflow task delivers them and
    # their callers follow them ('continued' names the new run). Without a new run they fail like
    # on Temporal; those a handler accepted but did not finish fail with Temporal's
    # AcceptedUpdateCompletedWorkflow ('aborted': answered like a completed one, but not one an
    # update-with-start attaches to).
    successor = getattr(attrs, "new_execution_run_id", "")
    if successor:
        carried = tx.all(
            "SELECT update_id, request FROM updates WHERE run_id = %s AND state IN ('requested', 'delivered')",
            (run.run_id,),
        )
        for update_id, request in carried:
            tx.execute(
                "INSERT INTO updates (run_id, update_id, state, request) VALUES (%s, %s, 'requested', %s)",
                (successor, update_id, request),
            )
            tx.execute(
                "UPDATE updates SET state = 'continued', outcome = %s WHERE run_id = %s AND update_id = %s",
                (successor.encode(), run.run_id, update_id),
            )
    tx.execute(
        "UPDATE updates SET state = 'closed' WHERE run_id = %s AND state IN ('requested', 'delivered')",
        (run.run_id,),
    )
    tx.execute(
        "UPDATE updates SET state = 'aborted', outcome = %s WHERE run_id = %s AND state = 'accepted'",
        (_ACCEPTED_UPDATE_OUTCOME, run.run_id),
    )
    # Queries still pending are answered by a worker replaying the closed run. (A query arriving
    # now waits for this transaction's row lock and then sees the run closed; see query_workflow.)
    if tx.one("SELECT 1 FROM queries WHERE run_id = %s AND state = 'pending' LIMIT 1", (run.run_id,)):
        tx.notify(f"q-tq:{run.task_queue}")
    # A small close event travels with the wake-up: a client waiting for the result needs no read.
    close_event = hist.HistoryEvent(event_id=close_id or 0)
    close_event.event_time.FromNanoseconds(int(now * 1e9))
    h.set_attrs(close_event, event_type, attrs)
    data = close_event.SerializeToString()
    tx.notify(with_value(f"closed:{run.run_id}", data))
    tx.notify(with_value(f"closed-wf:{run.workflow_id}", run.run_id.encode() + b"\x00" + data))
    tx.notify(f"upd-run:{run.run_id}")
    tx.notify(f"qr-run:{run.run_id}")
    if run.parent_run_id and status != h.CONTINUED_AS_NEW and notify_parent:
        _notify_parent(tx, run, status, attrs)
    if next_cron is not None:
        _start_next_cron_run(tx, run, status, attrs, next_cron)


_ACCEPTED_UPDATE_OUTCOME = upd_pb.Outcome(
    failure=failure_pb.Failure(
        message="Workflow Update failed because the Workflow completed before the Update completed.",
        application_failure_info=failure_pb.ApplicationFailureInfo(
            type="AcceptedUpdateCompletedWorkflow", non_retryable=True
        ),
    )
).SerializeToString()

_CRON_GOES_ON = {h.COMPLETED, h.FAILED, h.TIMED_OUT}  # a cancel or terminate ends the chain


def cron_delay(cron_schedule: str, now: float) -> float:
    """Seconds from ``now`` to the cron string's next time (in UTC unless it names a zone)."""
    from temporalio.api.schedule.v1 import message_pb2 as sched

    from dbosify._engine import schedule_spec

    spec = schedule_spec.compile_spec(sched.ScheduleSpec(cron_string=[cron_schedule]))
    nxt = spec.next_after(now)
    if nxt is None:
        raise ServiceError.invalid(f"invalid CronSchedule {cron_schedule!r}: it never fires")
    return nxt - now


def _start_next_cron_run(tx: Tx, run: h.Run, status: int, attrs: Message, run_id: str) -> None:
    """The next run of a cron chain, at the next cron time, as Temporal continues one."""
    first = h.load_events(tx, run.run_id, 0)[0][0].workflow_execution_started_event_attributes
    nxt = hist.WorkflowExecutionStartedEventAttributes()
    nxt.CopyFrom(first)
    nxt.attempt = 1
    nxt.initiator = wfenums.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
    nxt.continued_execution_run_id = run.run_id
    nxt.original_execution_run_id = ""
    nxt.ClearField("first_workflow_task_backoff")
    nxt.ClearField("continued_failure")
    deployments.inherit_pin(tx, run.run_id, nxt)
    if status == h.COMPLETED:
        nxt.last_completion_result.CopyFrom(attrs.result)  # type: ignore[attr-defined]
    elif status == h.FAILED:
        nxt.continued_failure.CopyFrom(attrs.failure)  # type: ignore[attr-defined]
    parent = (run.parent_namespace or tx.namespace, run.parent_workflow_id or "", run.parent_run_id,
              run.parent_seq or 0) if run.parent_run_id else None
    start_run(
        tx, workflow_id=run.workflow_id, workflow_type=run.workflow_type, task_queue=run.task_queue,
        started=nxt, run_id=run_id, parent=parent, identity=first.identity,  # type: ignore[arg-type]
        schedule_id=run.schedule_id, cron_schedule=run.cron_schedule or "",
        delay=cron_delay(run.cron_schedule or "", tx.store.clock.now()),
    )


def _notify_parent(tx: Tx, run: h.Run, status: int, attrs: Message) -> None:
    assert run.parent_run_id is not None
    parent = h.get_run(tx, run.parent_run_id, lock=True)
    if parent is None or not parent.running:
        return
    wexec = common.WorkflowExecution(workflow_id=run.workflow_id, run_id=run.run_id)
    wtype = common.WorkflowType(name=run.workflow_type)
    ns = tx.namespace
    child: Message
    if status == h.COMPLETED:
        assert isinstance(attrs, hist.WorkflowExecutionCompletedEventAttributes)
        child = hist.ChildWorkflowExecutionCompletedEventAttributes(
            result=attrs.result, namespace=ns, workflow_execution=wexec, workflow_type=wtype
        )
        etype = et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED
    elif status == h.FAILED:
        assert isinstance(attrs, hist.WorkflowExecutionFailedEventAttributes)
        child = hist.ChildWorkflowExecutionFailedEventAttributes(
            failure=attrs.failure, namespace=ns, workflow_execution=wexec, workflow_type=wtype,
            retry_state=attrs.retry_state,
        )
        etype = et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED
    elif status == h.CANCELED:
        assert isinstance(attrs, hist.WorkflowExecutionCanceledEventAttributes)
        child = hist.ChildWorkflowExecutionCanceledEventAttributes(
            details=attrs.details, namespace=ns, workflow_execution=wexec, workflow_type=wtype
        )
        etype = et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED
    elif status == h.TERMINATED:
        child = hist.ChildWorkflowExecutionTerminatedEventAttributes(
            namespace=ns, workflow_execution=wexec, workflow_type=wtype
        )
        etype = et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED
    else:
        child = hist.ChildWorkflowExecutionTimedOutEventAttributes(
            namespace=ns, workflow_execution=wexec, workflow_type=wtype
        )
        etype = et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT
    initiated = tx.one(
        "SELECT event_id FROM history WHERE run_id = %s AND seq = %s AND event_type = %s",
        (parent.run_id, run.parent_seq, et.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED),
    )
    if initiated is not None:
        child.initiated_event_id = int(initiated[0])  # type: ignore[attr-defined]
    h.append(tx, parent.run_id, etype, child, seq=run.parent_seq, dedup=f"child-done:{run.parent_seq}")


def terminate(tx: Tx, run: h.Run, reason: str, identity: str, details: common.Payloads | None = None) -> None:
    attrs = hist.WorkflowExecutionTerminatedEventAttributes(reason=reason, identity=identity)
    if details is not None:
        attrs.details.CopyFrom(details)
    close_run(tx, run, h.TERMINATED, et.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, attrs)


def request_cancel(tx: Tx, run: h.Run, reason: str, identity: str) -> None:
    attrs = hist.WorkflowExecutionCancelRequestedEventAttributes(cause=reason, identity=identity)
    h.append(tx, run.run_id, et.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED, attrs)


def signal(
    tx: Tx,
    run: h.Run,
    name: str,
    payloads: common.Payloads | None,
    header: common.Header | None,
    identity: str,
    request_id: str = "",
) -> None:
    attrs = hist.WorkflowExecutionSignaledEventAttributes(
        signal_name=name, identity=identity, request_id=request_id
    )
    if payloads is not None:
        attrs.input.CopyFrom(payloads)
    if header is not None:
        attrs.header.CopyFrom(header)
    h.append(
        tx,
        run.run_id,
        et.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        attrs,
        dedup=f"signal:{request_id}" if request_id else None,
    )
