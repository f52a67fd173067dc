"""A Nexus caller's activation jobs: Core's ResolveNexusOperationStart and ResolveNexusOperation
for the NexusOperationStarted and outcome events of its history (`activations.jobs_for`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.api.enums.v1 import event_type_pb2 as E
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.nexus import nexus_pb2 as core_nx
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa

from dbosify._engine import nexus_tasks as tasks

INPUT_EVENT_TYPES = frozenset({
    E.EVENT_TYPE_NEXUS_OPERATION_STARTED, *tasks.OUTCOMES, *tasks.CANCEL_ANSWERS,
})
WAIT_CANCELLATION_REQUESTED = 3  # coresdk.nexus.NexusOperationCancellationType


@dataclass
class CallerState:
    """What the caller's side keeps across activations (live, and rebuilt on replay)."""

    started: set[int] = field(default_factory=set)  # operations whose start was resolved
    # Operations scheduled with WAIT_REQUESTED: seq -> (endpoint, service, operation).
    wait_requested: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    resolved: set[int] = field(default_factory=set)  # resolved before their outcome event


def quiet(state: CallerState, event: hist.HistoryEvent, seq: int | None) -> bool:
    """An input event that makes no job: an answer to a cancel request the workflow does not wait
    for, or the outcome of an operation already resolved. It starts no activation of its own."""
    t = event.event_type
    if t in tasks.CANCEL_ANSWERS:
        return seq not in state.wait_requested or seq in state.resolved
    return t in tasks.OUTCOMES and seq in state.resolved


def jobs(event: hist.HistoryEvent, seq: int, state: CallerState) -> list[wa.WorkflowActivationJob]:
    """Core's jobs for one Nexus event (``state`` updated here)."""
    started = state.started
    t = event.event_type
    if quiet(state, event, seq):
        return []
    if t in tasks.CANCEL_ANSWERS:
        # WAIT_REQUESTED: the handler answered the cancel request; the operation resolves now,
        # cancelled (or failed with the cancel handler's error), without waiting for its outcome
        # (which then makes no job).
        state.resolved.add(seq)
        endpoint, service, operation = state.wait_requested[seq]
        f = failure_pb.Failure(message=tasks.UNSUCCESSFUL)
        i = f.nexus_operation_execution_failure_info
        i.endpoint, i.service, i.operation = endpoint, service, operation
        result = core_nx.NexusOperationResult()
        if t == E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED:
            i.scheduled_event_id = event.nexus_operation_cancel_request_completed_event_attributes.scheduled_event_id
            f.cause.message = "operation canceled"
            f.cause.canceled_failure_info.SetInParent()
            result.cancelled.CopyFrom(f)
        else:
            refused = event.nexus_operation_cancel_request_failed_event_attributes
            i.scheduled_event_id = refused.scheduled_event_id
            f.cause.CopyFrom(refused.failure)
            result.failed.CopyFrom(f)
        return [wa.WorkflowActivationJob(resolve_nexus_operation=wa.ResolveNexusOperation(seq=seq, result=result))]
    if t == E.EVENT_TYPE_NEXUS_OPERATION_STARTED:
        started.add(seq)
        token = event.nexus_operation_started_event_attributes.operation_token
        return [wa.WorkflowActivationJob(
            resolve_nexus_operation_start=wa.ResolveNexusOperationStart(seq=seq, operation_token=token))]
    if t not in tasks.OUTCOMES:
        return []
    result = core_nx.NexusOperationResult()
    failure: failure_pb.Failure | None = None
    if t == E.EVENT_TYPE_NEXUS_OPERATION_COMPLETED:
        result.completed.CopyFrom(event.nexus_operation_completed_event_attributes.result)
    elif t == E.EVENT_TYPE_NEXUS_OPERATION_FAILED:
        failure = event.nexus_operation_failed_event_attributes.failure
        result.failed.CopyFrom(failure)
    elif t == E.EVENT_TYPE_NEXUS_OPERATION_CANCELED:
        failure = event.nexus_operation_canceled_event_attributes.failure
        result.cancelled.CopyFrom(failure)
    else:
        failure = event.nexus_operation_timed_out_event_attributes.failure
        result.timed_out.CopyFrom(failure)
    out: list[wa.WorkflowActivationJob] = []
    if seq not in started:
        started.add(seq)
        if failure is not None:
            # Failed before it started: the start's resolution is the failure, and nothing follows.
            return [wa.WorkflowActivationJob(
                resolve_nexus_operation_start=wa.ResolveNexusOperationStart(seq=seq, failed=failure))]
        out.append(wa.WorkflowActivationJob(
            resolve_nexus_operation_start=wa.ResolveNexusOperationStart(seq=seq, started_sync=True)))
    out.append(wa.WorkflowActivationJob(resolve_nexus_operation=wa.ResolveNexusOperation(seq=seq, result=result)))
    return out
