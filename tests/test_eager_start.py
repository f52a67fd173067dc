"""Eager workflow start: with a worker of the task queue in the starting process, the start
transaction hands the run to it (no claim round trip); without one the start is ordinary."""

from __future__ import annotations

import uuid

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker


@workflow.defn
class Hi:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"hi {name}"


async def test_eager_start_hands_the_run_to_the_local_worker(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    no_worker = await client.start_workflow(Hi.run, "x", id=f"n-{uuid.uuid4()}", task_queue="nobody",
                                            request_eager_start=True)
    assert not getattr(no_worker, "__temporal_eagerly_started")
    async with Worker(client, task_queue=tq, workflows=[Hi], workflow_runner=UnsandboxedWorkflowRunner(),
                      identity="eager-worker"):
        handle = await client.start_workflow(Hi.run, "ann", id=f"e-{uuid.uuid4()}", task_queue=tq,
                                             request_eager_start=True)
        # Set only when the start's own transaction claimed the run for this worker.
        assert getattr(handle, "__temporal_eagerly_started")
        assert await handle.result() == "hi ann"
    history = await handle.fetch_history()
    completed = [e for e in history.events if e.HasField("workflow_task_completed_event_attributes")]
    assert completed[0].workflow_task_completed_event_attributes.identity == "eager-worker"
