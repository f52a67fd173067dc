"""Applying a workflow task's commands: one applier per command kind, in one transaction.

The driver (`workflow_task.WorkflowTask._apply`) opens the workflow task's transaction, records its
scheduled/started/completed events, then hands each command to the applier for its kind
(`APPLIERS`). An applier appends the command's history events and performs its effect in that
same transaction (schedule an activity task, start a child, signal or cancel another run, close
the run), so a checkpoint and its effect never diverge.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import failed_cause_pb2 as WFT_CAUSE
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify._engine import activity_tasks as acts
from dbosify._engine import activity_timeouts as timeouts
from dbosify._engine import history as h
from dbosify._engine import limits, priorities, search_attributes
from dbosify._engine import runs as _runs
from dbosify._engine.errors import ServiceError
from dbosify._worker import activations as A
from dbosify._worker import nexus
from dbosify._worker.activations import (
    ACTIVITY_CANCEL_ABANDON,
    ACTIVITY_CANCEL_TRY,
    ACTIVITY_CANCEL_WAIT,
)
from dbosify._worker.applying import Applying, BadCommand

if TYPE_CHECKING:
    pass
from dbosify._worker.command_effects import (
    _apply_update_response,
    _continue_as_new,
    _fail_or_retry,
    _signal_external,
    _start_child,
)

__all__ = ["APPLIERS", "Applying", "BadCommand", "apply"]

E = et



def apply(a: Applying, cmd: wc.WorkflowCommand) -> None:
    """Apply one command (a kind with no applier needs nothing in the database)."""
    kind = cmd.WhichOneof("variant")
    a.meta = cmd.user_metadata if cmd.HasField("user_metadata") else None
    applier = APPLIERS.get(kind or "")
    if applier is not None:
        applier(a, cmd)


def _start_timer(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    meta = a.meta
    t = cmd.start_timer
    attrs = hist.TimerStartedEventAttributes(
        timer_id=str(t.seq), workflow_task_completed_event_id=wft_id
    )
    attrs.start_to_fire_timeout.CopyFrom(t.start_to_fire_timeout)
    h.append(tx, rid, E.EVENT_TYPE_TIMER_STARTED, attrs, seq=t.seq, at=ts, metadata=meta)


def _cancel_timer(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    seq = cmd.cancel_timer.seq
    h.append(
        tx, rid, E.EVENT_TYPE_TIMER_CANCELED,
        hist.TimerCanceledEventAttributes(timer_id=str(seq), workflow_task_completed_event_id=wft_id),
        seq=seq, at=ts,
    )


def _schedule_activity(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    run = a.run
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    meta = a.meta
    scheduled_now = a.scheduled_now
    sa = cmd.schedule_activity
    problem = limits.schedule_activity_problem(
        a.driver.store.limits_for(a.driver.ns), sa.activity_id, sa.activity_type, sa.task_queue)
    if problem is None and sa.HasField("priority"):
        problem = priorities.problem(sa.priority)
    if problem is not None:
        raise BadCommand(WFT_CAUSE.WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES, problem)
    a2 = hist.ActivityTaskScheduledEventAttributes(
        activity_id=sa.activity_id, workflow_task_completed_event_id=wft_id
    )
    a2.activity_type.name = sa.activity_type
    a2.task_queue.name = sa.task_queue or run.task_queue
    for k, v in sa.headers.items():
        a2.header.fields[k].CopyFrom(v)
    a2.input.payloads.extend(sa.arguments)
    for f in ("schedule_to_close_timeout", "schedule_to_start_timeout", "start_to_close_timeout",
              "heartbeat_timeout", "retry_policy", "priority"):
        if sa.HasField(f):
            getattr(a2, f).CopyFrom(getattr(sa, f))
    timeouts.normalize_timeouts(a2)
    eid = h.append(
        tx, rid, E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, a2, seq=sa.seq, at=ts, metadata=meta
    )
    assert eid is not None
    core = a.driver.core
    if len(a.eager) < a.eager_budget and not sa.do_not_eagerly_execute and a2.task_queue.name == core.tq:
        a.eager.append(acts.schedule_eager(tx, run, sa.seq, eid, a2, ts, core.id, core.ns))
    else:
        acts.schedule(tx, run, sa.seq, eid, a2.task_queue.name, ts, a2.priority if a2.HasField("priority") else None)
    scheduled_now[sa.seq] = a2


def _request_cancel_activity(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    st = a.driver.state
    seq = cmd.request_cancel_activity.seq
    ctype = st.activity_cancel_type.get(seq, ACTIVITY_CANCEL_TRY)
    row = tx.one(
        "SELECT state, owner, scheduled_event_id FROM activity_tasks WHERE run_id = %s AND seq = %s",
        (rid, seq),
    )
    if row is None:
        # Its outcome raced in after this workflow task started. Like Core, record the
        # request; the workflow sees the activity cancelled (`jobs_for(cancelled=...)`).
        sched = tx.one(
            "SELECT event_id FROM history WHERE run_id = %s AND seq = %s AND event_type = %s",
            (rid, seq, E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED),
        )
        if sched is not None:
            h.append(
                tx, rid, E.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
                hist.ActivityTaskCancelRequestedEventAttributes(
                    scheduled_event_id=int(sched[0]), workflow_task_completed_event_id=wft_id
                ),
                at=ts,
            )
        return
    state, owner, sched_id = row
    h.append(
        tx, rid, E.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
        hist.ActivityTaskCancelRequestedEventAttributes(
            scheduled_event_id=sched_id, workflow_task_completed_event_id=wft_id
        ),
        at=ts,
    )
    if state != "running" or ctype != ACTIVITY_CANCEL_WAIT:
        # Not started, or the workflow does not wait: resolve as cancelled now.
        h.append(
            tx, rid, E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
            hist.ActivityTaskCanceledEventAttributes(scheduled_event_id=sched_id),
            seq=seq, dedup=f"act-done:{seq}", at=ts,
        )
    if state != "running":
        tx.execute("DELETE FROM activity_tasks WHERE run_id = %s AND seq = %s", (rid, seq))
    elif ctype == ACTIVITY_CANCEL_ABANDON:
        tx.execute("DELETE FROM activity_tasks WHERE run_id = %s AND seq = %s", (rid, seq))
    else:
        if ctype == ACTIVITY_CANCEL_TRY:
            # Keep the row so the worker learns of the cancel, but the result no longer matters.
            pass
        tx.execute(
            "UPDATE activity_tasks SET cancel_requested = 1 WHERE run_id = %s AND seq = %s",
            (rid, seq),
        )
        tx.notify(f"actcancel:{owner}")


def _request_cancel_local_activity(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    ts = a.ts
    st = a.driver.state
    d = a.driver
    seq = cmd.request_cancel_local_activity.seq
    task = d.local_tasks.pop(seq, None)
    if task is not None:
        task.cancel()
    st.local_pending.pop(seq, None)
    if seq not in st.local_done:
        lf = failure_pb.Failure(message="Local activity cancelled")
        lf.canceled_failure_info.SetInParent()
        h.append(
            tx, rid, E.EVENT_TYPE_MARKER_RECORDED,
            hist.MarkerRecordedEventAttributes(marker_name=A.LOCAL_ACTIVITY_MARKER, failure=lf),
            seq=seq, dedup=f"la:{seq}", at=ts,
        )


def _set_patch_marker(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    pm = cmd.set_patch_marker
    m = hist.MarkerRecordedEventAttributes(
        marker_name=A.PATCH_MARKER, workflow_task_completed_event_id=wft_id
    )
    m.details["patch_data"].payloads.add(
        metadata={"encoding": b"json/plain"}, data=f'"{pm.patch_id}"'.encode()
    )
    m.details["deprecated"].payloads.add(
        metadata={"encoding": b"json/plain"}, data=b"true" if pm.deprecated else b"false"
    )
    h.append(tx, rid, E.EVENT_TYPE_MARKER_RECORDED, m, at=ts)


def _update_response(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    wft_id = a.wft_id
    ts = a.ts
    delivered = a.delivered
    d = a.driver
    _apply_update_response(d, tx, cmd.update_response, wft_id, ts, delivered)


def _upsert_workflow_search_attributes(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    u = hist.UpsertWorkflowSearchAttributesEventAttributes(workflow_task_completed_event_id=wft_id)
    u.search_attributes.CopyFrom(cmd.upsert_workflow_search_attributes.search_attributes)
    try:
        search_attributes.on_upsert(tx, rid, u.search_attributes)
    except ServiceError as err:
        raise BadCommand(WFT_CAUSE.WORKFLOW_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES, err.message) from None
    h.append(tx, rid, E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, u, at=ts)


def _modify_workflow_properties(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    p = hist.WorkflowPropertiesModifiedEventAttributes(workflow_task_completed_event_id=wft_id)
    p.upserted_memo.CopyFrom(cmd.modify_workflow_properties.upserted_memo)
    h.append(tx, rid, E.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED, p, at=ts)
    search_attributes.on_upsert_memo(tx, rid, p.upserted_memo)


def _start_child_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    run = a.run
    wft_id = a.wft_id
    ts = a.ts
    meta = a.meta
    d = a.driver
    sc = cmd.start_child_workflow_execution
    problem = priorities.problem(sc.priority) if sc.HasField("priority") else None
    if problem is not None:
        raise BadCommand(WFT_CAUSE.WORKFLOW_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES, problem)
    _start_child(d, tx, run, sc, wft_id, ts, meta)


def _cancel_child_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    st = a.driver.state
    d = a.driver
    seq = cmd.cancel_child_workflow_execution.child_workflow_seq
    wid = st.children.get(seq)
    if wid is not None:
        rc0 = hist.RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(
            workflow_task_completed_event_id=wft_id, namespace=d.ns, child_workflow_only=True,
            reason=cmd.cancel_child_workflow_execution.reason,
        )
        rc0.workflow_execution.workflow_id = wid
        h.append(tx, rid, E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED, rc0, at=ts)
        child = h.current_run(tx, wid, lock=True)
        if child is not None and child.running and child.parent_run_id == rid:
            _runs.request_cancel(tx, child, cmd.cancel_child_workflow_execution.reason, d.core.identity)


def _signal_external_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    wft_id = a.wft_id
    ts = a.ts
    d = a.driver
    _signal_external(d, tx, cmd.signal_external_workflow_execution, wft_id, ts)


def _request_cancel_external_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    rid = a.driver.run_id
    wft_id = a.wft_id
    ts = a.ts
    d = a.driver
    rc = cmd.request_cancel_external_workflow_execution
    target_exec = common.WorkflowExecution(
        workflow_id=rc.workflow_execution.workflow_id, run_id=rc.workflow_execution.run_id
    )
    ini = hist.RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(
        workflow_task_completed_event_id=wft_id, namespace=d.ns, reason=rc.reason,
        workflow_execution=target_exec,
    )
    ini_id = h.append(
        tx, rid, E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED, ini, at=ts
    ) or 0
    target = h.find_run(tx, rc.workflow_execution.workflow_id, rc.workflow_execution.run_id or None, lock=True)
    if target is not None and target.running:
        _runs.request_cancel(tx, target, rc.reason, d.core.identity)
        h.append(
            tx, rid, E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
            hist.ExternalWorkflowExecutionCancelRequestedEventAttributes(
                workflow_execution=target_exec, initiated_event_id=ini_id
            ),
            seq=rc.seq, at=ts,
        )
    else:
        h.append(
            tx, rid, E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
            hist.RequestCancelExternalWorkflowExecutionFailedEventAttributes(
                workflow_execution=target_exec, cause=1, initiated_event_id=ini_id,  # type: ignore[arg-type]
            ),
            seq=rc.seq, at=ts,
        )


def _complete_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    run = a.run
    wft_id = a.wft_id
    c = hist.WorkflowExecutionCompletedEventAttributes(workflow_task_completed_event_id=wft_id)
    if cmd.complete_workflow_execution.HasField("result"):
        c.result.payloads.add().CopyFrom(cmd.complete_workflow_execution.result)
    _runs.close_run(tx, run, h.COMPLETED, E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, c)


def _fail_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    run = a.run
    wft_id = a.wft_id
    d = a.driver
    _fail_or_retry(d, tx, run, cmd.fail_workflow_execution.failure, wft_id)


def _cancel_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    run = a.run
    wft_id = a.wft_id
    c2 = hist.WorkflowExecutionCanceledEventAttributes(workflow_task_completed_event_id=wft_id)
    _runs.close_run(tx, run, h.CANCELED, E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, c2)


def _continue_as_new_workflow_execution(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tx = a.tx
    run = a.run
    wft_id = a.wft_id
    d = a.driver
    _continue_as_new(d, tx, run, cmd.continue_as_new_workflow_execution, wft_id)




APPLIERS: dict[str, Callable[[Applying, wc.WorkflowCommand], None]] = {
    "start_timer": _start_timer,
    "cancel_timer": _cancel_timer,
    "schedule_activity": _schedule_activity,
    "request_cancel_activity": _request_cancel_activity,
    # schedule_local_activity: nothing to write; run in-process after the commit; its marker is the checkpoint
    "request_cancel_local_activity": _request_cancel_local_activity,
    # respond_to_query: nothing to write; legacy queries are never in a recorded activation
    "set_patch_marker": _set_patch_marker,
    "update_response": _update_response,
    "upsert_workflow_search_attributes": _upsert_workflow_search_attributes,
    "modify_workflow_properties": _modify_workflow_properties,
    "start_child_workflow_execution": _start_child_workflow_execution,
    "cancel_child_workflow_execution": _cancel_child_workflow_execution,
    "signal_external_workflow_execution": _signal_external_workflow_execution,
    "request_cancel_external_workflow_execution": _request_cancel_external_workflow_execution,
    # cancel_signal_workflow: nothing to write; signals are delivered in the same transaction: nothing left to cancel
    "complete_workflow_execution": _complete_workflow_execution,
    "fail_workflow_execution": _fail_workflow_execution,
    "cancel_workflow_execution": _cancel_workflow_execution,
    "continue_as_new_workflow_execution": _continue_as_new_workflow_execution,
    "schedule_nexus_operation": nexus.schedule,
    "request_cancel_nexus_operation": nexus.request_cancel,
}
