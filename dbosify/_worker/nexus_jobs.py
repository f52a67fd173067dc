"""A Nexus caller's activation jobs: Core's ResolveNexusOperationStart and ResolveNexusOperation
for the NexusOperationStarted and outcome events of its history (`activations.jobs_for`)."""

from __future__ import annotations

from temporalio.api.enums.v1 import event_type_pb2 as E
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.nexus import nexus_pb2 as core_nx
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa

from dbosify._engine import nexus_tasks as tasks

INPUT_EVENT_TYPES = frozenset({E.EVENT_TYPE_NEXUS_OPERATION_STARTED, *tasks.OUTCOMES})


def jobs(event: hist.HistoryEvent, seq: int, started: set[int]) -> list[wa.WorkflowActivationJob]:
    """Core's jobs for one Nexus event. ``started``: the operations whose start was resolved
    (kept by the caller across activations; updated here)."""
    t = event.event_type
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
