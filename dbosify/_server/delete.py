"""DeleteWorkflowExecution, answered by `dbosify._engine.delete.delete_run` in one transaction
(a running run is terminated first; the run is gone when the call returns)."""

from __future__ import annotations

from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine.delete import delete_run
from dbosify._store import Store


async def delete_workflow_execution(
    store: Store, req: rr.DeleteWorkflowExecutionRequest
) -> rr.DeleteWorkflowExecutionResponse:
    ex = req.workflow_execution
    await store.transact(
        req.namespace, lambda tx: delete_run(tx, ex.workflow_id, ex.run_id or None, "")
    )
    return rr.DeleteWorkflowExecutionResponse()
