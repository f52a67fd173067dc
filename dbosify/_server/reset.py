"""ResetWorkflowExecution: the request checked and handed to `dbosify._engine.reset.reset_run`,
which makes the new run in one transaction (the rules of a reset are told there)."""

from __future__ import annotations

from google.protobuf.message import Message
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine.errors import ServiceError
from dbosify._engine.reset import exclude_types, reset_run
from dbosify._store import Store, Tx


async def reset_workflow_execution(
    store: Store, req: rr.ResetWorkflowExecutionRequest, identity: str = ""
) -> Message:
    ex = req.workflow_execution
    if not ex.workflow_id:
        raise ServiceError.invalid("WorkflowId is not set on request.")
    exclude = exclude_types(req.reset_reapply_exclude_types, req.reset_reapply_type)

    def fn(tx: Tx) -> str:
        return reset_run(
            tx, workflow_id=ex.workflow_id, run_id=ex.run_id or None,
            finish_event_id=req.workflow_task_finish_event_id, reason=req.reason,
            request_id=req.request_id, identity=req.identity or identity, exclude=exclude,
            post_reset_operations=list(req.post_reset_operations),
        )

    return rr.ResetWorkflowExecutionResponse(run_id=await store.transact(req.namespace, fn))
