"""What some of a workflow task's commands do beyond their own events, in the task's transaction
(`commands` applies each command and calls these): an update's response recorded and its
caller woken; a child workflow started; another run signalled; the run closed by a failure
that its retry policy retries (a new run of the chain), or continued as new.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify._engine import activity_tasks as acts
from dbosify._engine import deployments, search_attributes
from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._engine.errors import ServiceError
from dbosify._store import Tx

if TYPE_CHECKING:
    from dbosify._worker.interfaces import Driver

E = et


def _apply_update_response(
    d: Driver, tx: Tx, ur: wc.UpdateResponse, wft_id: int, ts: float, delivered: dict[str, upd_pb.Request]
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
    d: Driver, tx: Tx, run: h.Run, sc: wc.StartChildWorkflowExecution, wft_id: int, ts: float,
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
    if not sc.task_queue or sc.task_queue == run.task_queue:
        deployments.inherit_pin(tx, rid, started)
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
    d: Driver, tx: Tx, se: wc.SignalExternalWorkflowExecution, wft_id: int, ts: float
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
    d: Driver, tx: Tx, run: h.Run, failure: failure_pb.Failure, wft_id: int) -> None:
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
    deployments.inherit_pin(tx, d.run_id, nxt)
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
    d: Driver, tx: Tx, run: h.Run, can: wc.ContinueAsNewWorkflowExecution, wft_id: int
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
    started = hist.WorkflowExecutionStartedEventAttributes()
    pinned = deployments.continued_pin(
        tx, d.run_id, attrs.task_queue.name == run.task_queue, int(can.initial_versioning_behavior), started
    )
    _runs.close_run(tx, run, h.CONTINUED_AS_NEW, E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW, attrs)
    started.MergeFrom(hist.WorkflowExecutionStartedEventAttributes(
        continued_execution_run_id=d.run_id, initiator=1, identity=d.core.identity, attempt=1,  # type: ignore
        first_execution_run_id=run.first_execution_run_id,
    ))
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
        delay=backoff, schedule_id=run.schedule_id, pinned_version=pinned,
    )
