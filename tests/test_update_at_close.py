"""An update a handler accepted but never finished fails when its run closes, as on Temporal."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker


@workflow.defn
class EndsUnderAnUpdate:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.done)
        return "closed"

    @workflow.update
    async def never_finishes(self) -> str:
        await workflow.wait_condition(lambda: False)
        return "unreachable"

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def test_accepted_update_fails_when_the_run_closes(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[EndsUnderAnUpdate],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(EndsUnderAnUpdate.run, id=f"w-{uuid.uuid4()}", task_queue=tq)
        update = await handle.start_update(EndsUnderAnUpdate.never_finishes,
                                           wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        await handle.signal(EndsUnderAnUpdate.finish)
        assert await handle.result() == "closed"
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await asyncio.wait_for(update.result(), 10)  # before the fix: waited forever
        cause = err.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "AcceptedUpdateCompletedWorkflow"
        assert cause.non_retryable


async def test_update_with_start_does_not_attach_to_an_aborted_update(client: Client) -> None:
    from temporalio.client import WithStartWorkflowOperation
    from temporalio.common import WorkflowIDConflictPolicy

    tq = f"tq-{uuid.uuid4().hex[:8]}"
    wid = f"w-{uuid.uuid4()}"
    async with Worker(client, task_queue=tq, workflows=[EndsUnderAnUpdate],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        first = await client.start_workflow(EndsUnderAnUpdate.run, id=wid, task_queue=tq)
        await first.start_update(EndsUnderAnUpdate.never_finishes, id="u1",
                                 wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        await first.signal(EndsUnderAnUpdate.finish)
        await first.result()
        # The closed run's update never completed: an update-with-start with its id starts anew.
        op = WithStartWorkflowOperation(EndsUnderAnUpdate.run, id=wid, task_queue=tq,
                                        id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        await client.start_update_with_start_workflow(
            EndsUnderAnUpdate.never_finishes, id="u1", start_workflow_operation=op,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        second = await op.workflow_handle()
        assert second.result_run_id != first.result_run_id
        await second.signal(EndsUnderAnUpdate.finish)
        await second.result()
