"""Applying a workflow task's commands: one applier per command kind, in one transaction.

The driver (`driver.RunDriver._apply`) opens the workflow task's transaction, records its
scheduled/started/completed events, then hands each command to the applier for its kind
(`APPLIERS`). An applier appends the command's history events and performs its effect in that
same transaction (schedule an activity task, start a child, signal or cancel another run, close
the run), so a checkpoint and its effect never diverge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import failed_cause_pb2 as WFT_CAUSE
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify import _activity_tasks as acts
from dbosify import _activity_timeouts as timeouts
from dbosify import _history as h
from dbosify import _runs
from dbosify._errors import ServiceError
from dbosify._server import limits, search_attributes
from dbosify._store import Tx
from dbosify._worker import activations as A
from dbosify._worker import nexus

if TYPE_CHECKING:
    from dbosify._worker.driver import RunDriver

E = et

ACTIVITY_CANCEL_TRY = 0
ACTIVITY_CANCEL_WAIT = 1
ACTIVITY_CANCEL_ABANDON = 2


@dataclass
class Applying:
    """One workflow task's transaction, as each command's applier sees it."""

    driver: RunDriver
    tx: Tx
    run: h.Run
    wft_id: int  # the WorkflowTaskCompleted event's id
    ts: float  # when the task takes effect (its WorkflowTaskCompleted event's time)
    delivered: dict[str, upd_pb.Request]  # updates this task delivered, by id
    scheduled_now: dict[int, Any]  # activities scheduled by this task: seq -> attributes
    meta: Any = None  # the current command's user metadata
    eager_budget: int = 0  # activities this task may hand straight to its worker
    eager: list[acts.Claimed] = field(default_factory=list)  # those it did


class BadCommand(Exception):
    """A command the server refuses: its workflow task fails with ``cause``, as on Temporal."""

    def __init__(self, cause: int, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


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
        acts.schedule(tx, run, sa.seq, eid, a2.task_queue.name, ts)
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
    _start_child(d, tx, run, cmd.start_child_workflow_execution, wft_id, ts, meta)


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


def _apply_update_response(
    d: RunDriver, tx: Tx, ur: wc.UpdateResponse, wft_id: int, ts: float, delivered: dict[str, upd_pb.Request]
) -> None:
    uid = ur.protocol_instance_id
    rid = d.run_id
    if ur.HasField("accepted"):
        req = delivered.get(uid)
        if req is None:
            row = tx.one("SELECT request FROM updates WHERE run_id = %s AND update_id = %s", (rid, uid))
            req = upd_pb.Request.FromString(bytes(row[0])) if row else upd_pb.Request()
        a = hist.WorkflowExecutionUpdateAcceptedEventAttributes(
            protocol_instance_id=uid, accepted_request_message_id=f"{uid}/request"
        )
        a.accepted_request.CopyFrom(req)
        h.append(tx, rid, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED, a, seq=wft_id, at=ts)
        tx.execute(
            "UPDATE updates SET state = 'accepted' WHERE run_id = %s AND update_id = %s", (rid, uid)
        )
    elif ur.HasField("rejected"):
        out = upd_pb.Outcome(failure=ur.rejected)
        tx.execute(
            "UPDATE updates SET state = 'rejected', outcome = %s WHERE run_id = %s AND update_id = %s",
            (out.SerializeToString(), rid, uid),
        )
    elif ur.HasField("completed"):
        out = upd_pb.Outcome()
        out.success.payloads.add().CopyFrom(ur.completed)
        c = hist.WorkflowExecutionUpdateCompletedEventAttributes(outcome=out)
        c.meta.update_id = uid
        h.append(tx, rid, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED, c, at=ts)
        tx.execute(
            "UPDATE updates SET state = 'completed', outcome = %s WHERE run_id = %s AND update_id = %s",
            (out.SerializeToString(), rid, uid),
        )
    tx.notify(f"upd:{rid}:{uid}")

def _start_child(
    d: RunDriver, tx: Tx, run: h.Run, sc: wc.StartChildWorkflowExecution, wft_id: int, ts: float,
    meta: Any = None,
) -> None:
    rid = d.run_id
    init = hist.StartChildWorkflowExecutionInitiatedEventAttributes(
        namespace=sc.namespace or d.ns, workflow_id=sc.workflow_id,
        workflow_task_completed_event_id=wft_id,
        parent_close_policy=sc.parent_close_policy, workflow_id_reuse_policy=sc.workflow_id_reuse_policy,  # type: ignore
    )
    init.workflow_type.name = sc.workflow_type
    init.task_queue.name = sc.task_queue or run.task_queue
    init.input.payloads.extend(sc.input)
    for f in ("workflow_execution_timeout", "workflow_run_timeout", "workflow_task_timeout",
              "retry_policy", "search_attributes", "priority"):
        if sc.HasField(f):
            getattr(init, f).CopyFrom(getattr(sc, f))
    for k, v in sc.headers.items():
        init.header.fields[k].CopyFrom(v)
    for k, v in sc.memo.items():
        init.memo.fields[k].CopyFrom(v)
    init_id = h.append(
        tx, rid, E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED, init, seq=sc.seq, at=ts,
        metadata=meta,
    )
    d.state.children[sc.seq] = sc.workflow_id
    started = hist.WorkflowExecutionStartedEventAttributes(
        parent_workflow_namespace=d.ns, identity=d.core.identity, attempt=1
    )
    started.parent_workflow_execution.workflow_id = run.workflow_id
    started.parent_workflow_execution.run_id = rid
    started.input.payloads.extend(sc.input)
    for k, v in sc.headers.items():
        started.header.fields[k].CopyFrom(v)
    for f in ("workflow_execution_timeout", "workflow_run_timeout", "workflow_task_timeout",
              "retry_policy", "search_attributes", "priority"):
        if sc.HasField(f):  # type: ignore[arg-type]
            getattr(started, f).CopyFrom(getattr(sc, f))
    for k, v in sc.memo.items():
        started.memo.fields[k].CopyFrom(v)
    started.root_workflow_execution.workflow_id = run.workflow_id
    started.root_workflow_execution.run_id = rid
    try:
        res = _runs.start_run(
            tx, workflow_id=sc.workflow_id, workflow_type=sc.workflow_type, metadata=meta,
            task_queue=sc.task_queue or run.task_queue, started=started,
            reuse_policy=sc.workflow_id_reuse_policy,
            parent=(d.ns, run.workflow_id, rid, sc.seq), identity=d.core.identity,
            cron_schedule=sc.cron_schedule,
            delay=_runs.cron_delay(sc.cron_schedule, ts) if sc.cron_schedule else 0.0,
        )
    except ServiceError:
        fa = hist.StartChildWorkflowExecutionFailedEventAttributes(
            namespace=d.ns, workflow_id=sc.workflow_id, cause=1,  # type: ignore
            workflow_task_completed_event_id=wft_id, initiated_event_id=init_id or 0,
        )
        fa.workflow_type.name = sc.workflow_type
        h.append(tx, rid, E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED, fa, seq=sc.seq, at=ts)
        return
    cs = hist.ChildWorkflowExecutionStartedEventAttributes(
        namespace=d.ns, initiated_event_id=init_id or 0
    )
    cs.workflow_execution.workflow_id = sc.workflow_id
    cs.workflow_execution.run_id = res.run_id
    cs.workflow_type.name = sc.workflow_type
    h.append(tx, rid, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED, cs, seq=sc.seq, at=ts)

def _signal_external(
    d: RunDriver, tx: Tx, se: wc.SignalExternalWorkflowExecution, wft_id: int, ts: float
) -> None:
    rid = d.run_id
    if se.HasField("child_workflow_id") or se.WhichOneof("target") == "child_workflow_id":
        wid, target_run = se.child_workflow_id, None
    else:
        wid, target_run = se.workflow_execution.workflow_id, se.workflow_execution.run_id or None
    ini = hist.SignalExternalWorkflowExecutionInitiatedEventAttributes(
        namespace=d.ns, signal_name=se.signal_name, workflow_task_completed_event_id=wft_id
    )
    ini.workflow_execution.workflow_id = wid
    ini.workflow_execution.run_id = target_run or ""
    ini.input.payloads.extend(se.args)
    ini_id = h.append(tx, rid, E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED, ini, at=ts) or 0
    target = h.find_run(tx, wid, target_run, lock=True)
    if target is not None and target.running:
        hdr = common.Header()
        for k, v in se.headers.items():
            hdr.fields[k].CopyFrom(v)
        pl = common.Payloads()
        pl.payloads.extend(se.args)
        _runs.signal(tx, target, se.signal_name, pl, hdr, d.core.identity)
        h.append(
            tx, rid, E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED,
            hist.ExternalWorkflowExecutionSignaledEventAttributes(
                workflow_execution=ini.workflow_execution, initiated_event_id=ini_id
            ),
            seq=se.seq, at=ts,
        )
    else:
        h.append(
            tx, rid, E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
            hist.SignalExternalWorkflowExecutionFailedEventAttributes(
                workflow_execution=ini.workflow_execution, cause=1,  # type: ignore
                initiated_event_id=ini_id,
            ),
            seq=se.seq, at=ts,
        )

def _fail_or_retry(
    d: RunDriver, tx: Tx, run: h.Run, failure: failure_pb.Failure, wft_id: int) -> None:
    """Fail the run, or start its next attempt when the workflow has a retry policy."""
    first = h.load_events(tx, d.run_id, 0)[0][0].workflow_execution_started_event_attributes
    delay = (
        acts._retry_delay(first.retry_policy, first.attempt or 1, failure)
        if first.HasField("retry_policy")
        else None
    )
    f = hist.WorkflowExecutionFailedEventAttributes(
        failure=failure, workflow_task_completed_event_id=wft_id,
        retry_state=2 if not first.HasField("retry_policy") else 3,  # type: ignore[arg-type]
    )
    if delay is None:
        _runs.close_run(tx, run, h.FAILED, E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, f)
        return
    new_run_id = h.new_run_id()
    f.new_execution_run_id = new_run_id
    f.retry_state = 1  # type: ignore[assignment]  # RETRY_STATE_IN_PROGRESS
    _runs.close_run(tx, run, h.FAILED, E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, f, notify_parent=False)
    nxt = hist.WorkflowExecutionStartedEventAttributes()
    nxt.CopyFrom(first)
    nxt.attempt = (first.attempt or 1) + 1
    nxt.initiator = 2  # type: ignore[assignment]  # CONTINUE_AS_NEW_INITIATOR_RETRY
    nxt.continued_execution_run_id = d.run_id
    nxt.continued_failure.CopyFrom(failure)
    nxt.original_execution_run_id = ""
    nxt.ClearField("workflow_execution_expiration_time")
    parent = (
        (run.parent_namespace or d.ns, run.parent_workflow_id or "", run.parent_run_id, run.parent_seq or 0)
        if run.parent_run_id
        else None
    )
    _runs.start_run(
        tx, workflow_id=run.workflow_id, workflow_type=run.workflow_type, task_queue=run.task_queue,
        started=nxt, run_id=new_run_id, parent=parent, identity=d.core.identity,  # type: ignore[arg-type]
        delay=delay, schedule_id=run.schedule_id, cron_schedule=run.cron_schedule or "",
    )

def _continue_as_new(
    d: RunDriver, tx: Tx, run: h.Run, can: wc.ContinueAsNewWorkflowExecution, wft_id: int
) -> None:
    first = h.load_events(tx, d.run_id, 0)[0][0].workflow_execution_started_event_attributes
    new_run_id = h.new_run_id()
    attrs = hist.WorkflowExecutionContinuedAsNewEventAttributes(
        new_execution_run_id=new_run_id, workflow_task_completed_event_id=wft_id
    )
    attrs.workflow_type.name = can.workflow_type or run.workflow_type
    attrs.task_queue.name = can.task_queue or run.task_queue
    attrs.input.payloads.extend(can.arguments)
    backoff = 0.0
    if can.HasField("backoff_start_interval"):
        attrs.backoff_start_interval.CopyFrom(can.backoff_start_interval)
        backoff = can.backoff_start_interval.ToNanoseconds() / 1e9
    _runs.close_run(tx, run, h.CONTINUED_AS_NEW, E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW, attrs)
    started = hist.WorkflowExecutionStartedEventAttributes(
        continued_execution_run_id=d.run_id, initiator=1, identity=d.core.identity, attempt=1,  # type: ignore
        first_execution_run_id=run.first_execution_run_id,
    )
    started.input.payloads.extend(can.arguments)
    for f in ("workflow_execution_timeout", "retry_policy", "parent_workflow_execution",
              "root_workflow_execution", "priority"):
        if first.HasField(f):
            getattr(started, f).CopyFrom(getattr(first, f))
    if can.HasField("retry_policy"):
        started.retry_policy.CopyFrom(can.retry_policy)
    if can.HasField("workflow_task_timeout"):
        started.workflow_task_timeout.CopyFrom(can.workflow_task_timeout)
    started.parent_workflow_namespace = first.parent_workflow_namespace
    if can.HasField("workflow_run_timeout"):
        started.workflow_run_timeout.CopyFrom(can.workflow_run_timeout)
    elif first.HasField("workflow_run_timeout"):
        started.workflow_run_timeout.CopyFrom(first.workflow_run_timeout)
    # Memo and search attributes carry over as they are now (with upserts), unless given anew.
    now_attrs, now_memo = search_attributes.current(tx, d.run_id)
    if can.memo:
        for k, v in can.memo.items():
            started.memo.fields[k].CopyFrom(v)
    elif now_memo.fields:
        started.memo.CopyFrom(now_memo)
    if can.headers:
        for k, v in can.headers.items():
            started.header.fields[k].CopyFrom(v)
    if can.HasField("search_attributes"):
        started.search_attributes.CopyFrom(can.search_attributes)
    elif now_attrs.indexed_fields:
        started.search_attributes.CopyFrom(now_attrs)
    parent = (
        (run.parent_namespace or d.ns, run.parent_workflow_id or "", run.parent_run_id, run.parent_seq or 0)
        if run.parent_run_id
        else None
    )
    _runs.start_run(
        tx, workflow_id=run.workflow_id, workflow_type=attrs.workflow_type.name,
        task_queue=attrs.task_queue.name, started=started, run_id=new_run_id,
        parent=parent, identity=d.core.identity,  # type: ignore[arg-type]
        delay=backoff, schedule_id=run.schedule_id,
    )


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
