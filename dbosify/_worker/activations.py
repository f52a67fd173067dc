"""History events -> activation jobs, the translation Temporal's Rust core does.

Jobs are ordered like core orders them: initialize, patches, signals and updates,
then every other resolution in history order.
"""

from __future__ import annotations

import hashlib
from typing import Any

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import failed_cause_pb2 as failed_cause
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.child_workflow import child_workflow_pb2 as cw
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa

from dbosify._worker import nexus_jobs as nexus

# How a workflow's activity is cancelled (temporalio's ActivityCancellationType).
ACTIVITY_CANCEL_TRY = 0
ACTIVITY_CANCEL_WAIT = 1
ACTIVITY_CANCEL_ABANDON = 2

E = et

INPUT_EVENT_TYPES = {
    E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    E.EVENT_TYPE_TIMER_FIRED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED,
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
    E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED,
    E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
    E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
    E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
    E.EVENT_TYPE_NEXUS_OPERATION_STARTED,
    E.EVENT_TYPE_NEXUS_OPERATION_COMPLETED,
    E.EVENT_TYPE_NEXUS_OPERATION_FAILED,
    E.EVENT_TYPE_NEXUS_OPERATION_CANCELED,
    E.EVENT_TYPE_NEXUS_OPERATION_TIMED_OUT,
    # Jobs only for WAIT_REQUESTED operations (`nexus.quiet`).
    E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED,
    E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_FAILED,
}

RESET_WORKFLOW = failed_cause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW

LOCAL_ACTIVITY_MARKER = "core_local_activity"
PATCH_MARKER = "core_patch"


def is_reset_point(event: hist.HistoryEvent) -> bool:
    """The workflow task a reset failed: the new run's workflow gets a new random seed there."""
    return (
        event.event_type == E.EVENT_TYPE_WORKFLOW_TASK_FAILED
        and event.workflow_task_failed_event_attributes.cause == RESET_WORKFLOW
    )


def is_input(event: hist.HistoryEvent) -> bool:
    if event.event_type in INPUT_EVENT_TYPES or is_reset_point(event):
        return True
    return (
        event.event_type == E.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER
    )


def randomness_seed(run_id: str) -> int:
    """Deterministic per run and different across runs (run ids share their time prefix)."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "little")


def initialize_job(run_id: str, started: hist.HistoryEvent, patches: list[str]) -> wa.InitializeWorkflow:
    a = started.workflow_execution_started_event_attributes
    init = wa.InitializeWorkflow(
        workflow_type=a.workflow_type.name,
        workflow_id=a.workflow_id,
        identity=a.identity,
        first_execution_run_id=a.first_execution_run_id,
        continued_from_execution_run_id=a.continued_execution_run_id,
        continued_initiator=a.initiator,
        attempt=a.attempt or 1,
        cron_schedule=a.cron_schedule,
        original_execution_run_id=a.original_execution_run_id,
        # From the original run id, as Core does: a reset run replays its base run's random
        # choices up to the reset point, then gets a new seed (see `is_reset_point`).
        randomness_seed=randomness_seed(a.original_execution_run_id or run_id),
    )
    init.arguments.extend(a.input.payloads)
    for k, v in a.header.fields.items():
        init.headers[k].CopyFrom(v)
    for f in (
        "workflow_execution_timeout",
        "workflow_run_timeout",
        "workflow_task_timeout",
        "continued_failure",
        "last_completion_result",
        "retry_policy",
        "workflow_execution_expiration_time",
        "memo",
        "search_attributes",
        "priority",
    ):
        if a.HasField(f):
            getattr(init, f).CopyFrom(getattr(a, f))
    init.start_time.CopyFrom(started.event_time)
    if a.HasField("parent_workflow_execution"):
        init.parent_workflow_info.namespace = a.parent_workflow_namespace
        init.parent_workflow_info.workflow_id = a.parent_workflow_execution.workflow_id
        init.parent_workflow_info.run_id = a.parent_workflow_execution.run_id
    if a.HasField("root_workflow_execution"):
        init.root_workflow.CopyFrom(a.root_workflow_execution)
    return init


def _activity_failure(
    cause: failure_pb.Failure, seq: int, scheduled_event_id: int, activity: Any, retry_state: int,
    message: str = "Activity task failed",
) -> failure_pb.Failure:
    f = failure_pb.Failure(message=message)
    info = f.activity_failure_info
    info.scheduled_event_id = scheduled_event_id
    info.activity_id = activity.activity_id if activity is not None else str(seq)
    if activity is not None:
        info.activity_type.CopyFrom(activity.activity_type)
    info.retry_state = retry_state  # type: ignore[assignment]
    f.cause.CopyFrom(cause)
    return f


_ACTIVITY_OUTCOMES = (
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
)


def is_activity_outcome(event: hist.HistoryEvent) -> bool:
    return event.event_type in _ACTIVITY_OUTCOMES


def cancelled_activity_resolution(
    seq: int, scheduled_event_id: int, activity: Any, details: Any = None
) -> wa.ResolveActivity:
    job = wa.ResolveActivity(seq=seq)
    cause = failure_pb.Failure(message="Activity cancelled")
    cause.canceled_failure_info.SetInParent()
    if details is not None and details.payloads:
        cause.canceled_failure_info.details.CopyFrom(details)  # what the activity reported
    job.result.cancelled.failure.CopyFrom(
        _activity_failure(cause, seq, scheduled_event_id, activity, 0, "Activity cancelled")
    )
    return job


def jobs_for(
    run_id: str,
    events: list[tuple[hist.HistoryEvent, int | None]],
    updates: list[Any],
    patches: list[str],
    scheduled: dict[int, Any],
    cancelled: frozenset[int] | set[int] = frozenset(),
    nexus_state: nexus.CallerState | None = None,
) -> list[wa.WorkflowActivationJob]:
    """The jobs of one activation: its input events and the updates delivered with it.

    ``scheduled`` maps activity seq -> its ActivityTaskScheduled attributes.
    ``cancelled``: activities the workflow cancelled without waiting (TRY_CANCEL, ABANDON). Like
    Core, which resolves those as cancelled at once, an outcome that raced in after the workflow
    task started resolves them as cancelled.
    ``updates`` are (update.v1.Request, run_validator) pairs.
    ``nexus_state``: the Nexus caller's state across activations (updated here; see `nexus.jobs`).
    """
    if nexus_state is None:
        nexus_state = nexus.CallerState()
    first: list[wa.WorkflowActivationJob] = []
    middle: list[wa.WorkflowActivationJob] = []
    rest: list[wa.WorkflowActivationJob] = []
    for event, seq in events:
        t = event.event_type
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            first.append(wa.WorkflowActivationJob(initialize_workflow=initialize_job(run_id, event, patches)))
            for p in patches:
                first.append(wa.WorkflowActivationJob(notify_has_patch=wa.NotifyHasPatch(patch_id=p)))
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            a = event.workflow_execution_signaled_event_attributes
            s = wa.SignalWorkflow(
                signal_name=a.signal_name, identity=a.identity, originating_event_id=event.event_id
            )
            s.input.extend(a.input.payloads)
            for k, v in a.header.fields.items():
                s.headers[k].CopyFrom(v)
            middle.append(wa.WorkflowActivationJob(signal_workflow=s))
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            rest.append(
                wa.WorkflowActivationJob(
                    cancel_workflow=wa.CancelWorkflow(
                        reason=event.workflow_execution_cancel_requested_event_attributes.cause
                    )
                )
            )
        elif t == E.EVENT_TYPE_TIMER_FIRED:
            rest.append(wa.WorkflowActivationJob(fire_timer=wa.FireTimer(seq=seq or 0)))
        elif is_reset_point(event):
            new_run_id = event.workflow_task_failed_event_attributes.new_run_id
            rest.append(
                wa.WorkflowActivationJob(
                    update_random_seed=wa.UpdateRandomSeed(randomness_seed=randomness_seed(new_run_id))
                )
            )
        elif t in _ACTIVITY_OUTCOMES:
            assert seq is not None
            sched = scheduled.get(seq)
            job = wa.ResolveActivity(seq=seq)
            if t == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                done = event.activity_task_completed_event_attributes
                if done.result.payloads:
                    job.result.completed.result.CopyFrom(done.result.payloads[0])
                else:
                    job.result.completed.SetInParent()
            elif t == E.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                fa = event.activity_task_failed_event_attributes
                job.result.failed.failure.CopyFrom(
                    _activity_failure(fa.failure, seq, fa.scheduled_event_id, sched, fa.retry_state)
                )
            elif t == E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                ta = event.activity_task_timed_out_event_attributes
                job.result.failed.failure.CopyFrom(
                    _activity_failure(
                        ta.failure, seq, ta.scheduled_event_id, sched, ta.retry_state, "Activity task timed out"
                    )
                )
            else:
                ca = event.activity_task_canceled_event_attributes
                job = cancelled_activity_resolution(seq, ca.scheduled_event_id, sched, ca.details)
            if seq in cancelled and t != E.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
                sched_id = getattr(event, _child_attr(t)).scheduled_event_id
                job = cancelled_activity_resolution(seq, sched_id, sched)
            rest.append(wa.WorkflowActivationJob(resolve_activity=job))
        elif t == E.EVENT_TYPE_MARKER_RECORDED:
            m = event.marker_recorded_event_attributes
            job = wa.ResolveActivity(seq=seq or 0, is_local=True)
            if m.HasField("failure"):
                if m.failure.HasField("canceled_failure_info"):
                    job.result.cancelled.failure.CopyFrom(m.failure)
                else:
                    job.result.failed.failure.CopyFrom(m.failure)
            else:
                data = m.details.get("data")
                if data is not None and data.payloads:
                    job.result.completed.result.CopyFrom(data.payloads[0])
                else:
                    job.result.completed.SetInParent()
            rest.append(wa.WorkflowActivationJob(resolve_activity=job))
        elif t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            ca2 = event.child_workflow_execution_started_event_attributes
            rest.append(
                wa.WorkflowActivationJob(
                    resolve_child_workflow_execution_start=wa.ResolveChildWorkflowExecutionStart(
                        seq=seq or 0,
                        succeeded=wa.ResolveChildWorkflowExecutionStartSuccess(
                            run_id=ca2.workflow_execution.run_id
                        ),
                    )
                )
            )
        elif t == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED:
            fa2 = event.start_child_workflow_execution_failed_event_attributes
            rest.append(
                wa.WorkflowActivationJob(
                    resolve_child_workflow_execution_start=wa.ResolveChildWorkflowExecutionStart(
                        seq=seq or 0,
                        failed=wa.ResolveChildWorkflowExecutionStartFailure(
                            workflow_id=fa2.workflow_id,
                            workflow_type=fa2.workflow_type.name,
                            cause=1,  # type: ignore
                        ),
                    )
                )
            )
        elif t in (
            E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
            E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
            E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
            E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
            E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
        ):
            res = cw.ChildWorkflowResult()
            if t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
                ra = event.child_workflow_execution_completed_event_attributes
                if ra.result.payloads:
                    res.completed.result.CopyFrom(ra.result.payloads[0])
                else:
                    res.completed.SetInParent()
            else:
                attrs = getattr(event, _child_attr(t))
                cause: failure_pb.Failure
                if t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED:
                    cause = attrs.failure
                elif t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED:
                    cause = failure_pb.Failure(message="Workflow cancelled")
                    cause.canceled_failure_info.SetInParent()
                elif t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED:
                    cause = failure_pb.Failure(message="Workflow terminated")
                    cause.terminated_failure_info.SetInParent()
                else:
                    cause = failure_pb.Failure(message="Workflow timed out")
                    cause.timeout_failure_info.timeout_type = 1  # type: ignore[assignment]
                wrapped = failure_pb.Failure(message="Child Workflow execution failed")
                ci = wrapped.child_workflow_execution_failure_info
                ci.namespace = attrs.namespace
                ci.workflow_execution.CopyFrom(attrs.workflow_execution)
                ci.workflow_type.CopyFrom(attrs.workflow_type)
                if t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED:
                    ci.retry_state = attrs.retry_state
                wrapped.cause.CopyFrom(cause)
                if t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED:
                    res.cancelled.failure.CopyFrom(wrapped)
                else:
                    res.failed.failure.CopyFrom(wrapped)
            rest.append(
                wa.WorkflowActivationJob(
                    resolve_child_workflow_execution=wa.ResolveChildWorkflowExecution(
                        seq=seq or 0, result=res
                    )
                )
            )
        elif t in (
            E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED,
            E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
        ):
            rs = wa.ResolveSignalExternalWorkflow(seq=seq or 0)
            if t == E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED:
                rs.failure.message = "Unable to signal external workflow because it was not found"
                rs.failure.application_failure_info.type = "SignalExternalWorkflowExecutionFailed"
            rest.append(wa.WorkflowActivationJob(resolve_signal_external_workflow=rs))
        elif t in (
            E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
            E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
        ):
            rc = wa.ResolveRequestCancelExternalWorkflow(seq=seq or 0)
            if t == E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED:
                rc.failure.message = "Unable to cancel external workflow because it was not found"
                rc.failure.application_failure_info.type = "RequestCancelExternalWorkflowExecutionFailed"
            rest.append(wa.WorkflowActivationJob(resolve_request_cancel_external_workflow=rc))
        elif t in nexus.INPUT_EVENT_TYPES:
            rest.extend(nexus.jobs(event, seq or 0, nexus_state))
    for request, run_validator in updates:
        du = wa.DoUpdate(
            id=request.meta.update_id,
            protocol_instance_id=request.meta.update_id,
            name=request.input.name,
            run_validator=run_validator,
        )
        du.input.extend(request.input.args.payloads)
        for k, v in request.input.header.fields.items():
            du.headers[k].CopyFrom(v)
        du.meta.update_id = request.meta.update_id
        du.meta.identity = request.meta.identity
        middle.append(wa.WorkflowActivationJob(do_update=du))
    return first + middle + rest


def elide_unsent(commands: Any, kept: list[Any]) -> list[wa.WorkflowActivationJob]:
    """Append ``commands`` to ``kept``, dropping what Core never sends to the server.

    An activity or timer that is scheduled and cancelled within one workflow task is removed
    together with its cancel; a cancelled activity is resolved as cancelled at once (the jobs
    returned), exactly as Core does, so it leaves no trace in history.
    """
    local: list[wa.WorkflowActivationJob] = []
    for cmd in commands:
        kind = cmd.WhichOneof("variant")
        if kind == "request_cancel_activity":
            seq = cmd.request_cancel_activity.seq
            idx = next(
                (i for i, c in enumerate(kept) if c.HasField("schedule_activity") and c.schedule_activity.seq == seq),
                None,
            )
            if idx is not None:
                del kept[idx]
                local.append(
                    wa.WorkflowActivationJob(resolve_activity=cancelled_activity_resolution(seq, 0, None))
                )
                continue
        elif kind == "cancel_timer":
            seq = cmd.cancel_timer.seq
            idx = next(
                (i for i, c in enumerate(kept) if c.HasField("start_timer") and c.start_timer.seq == seq), None
            )
            if idx is not None:
                del kept[idx]
                continue
        kept.append(cmd)
    return local


def _child_attr(t: int) -> str:
    from dbosify._engine.history import ATTR_FIELD

    return ATTR_FIELD[t]


CLOSING_COMMANDS = (
    "complete_workflow_execution",
    "fail_workflow_execution",
    "cancel_workflow_execution",
    "continue_as_new_workflow_execution",
)


def closing_last(commands: Any) -> list[Any]:
    """A task's commands as Core sends them: the first closing command last, later ones dropped.

    Lang may add commands after the workflow returned (an update handler finishing in the same
    activation); Core honours them by moving the closing command to the end, so nothing is ever
    recorded after a run's close event.
    """
    rest: list[Any] = []
    closing: Any = None
    for cmd in commands:
        if cmd.WhichOneof("variant") in CLOSING_COMMANDS:
            if closing is None:
                closing = cmd
        else:
            rest.append(cmd)
    return rest if closing is None else [*rest, closing]
