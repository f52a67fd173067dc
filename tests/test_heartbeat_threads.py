"""A heartbeat sent from a thread of the activity's own (with its own event loop) is recorded, and
the attempt's outcome waits for it instead of hanging."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker


@activity.defn
async def beats_from_a_thread() -> str:
    if activity.info().attempt == 1:
        context = activity._Context.current()

        def in_thread() -> None:
            async def beat() -> None:
                assert context.heartbeat is not None
                context.heartbeat("from a thread")

            asyncio.run(beat())  # this loop ends right after the heartbeat call

        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        raise RuntimeError("first attempt fails")
    return f"details: {activity.info().heartbeat_details[0]}"


@workflow.defn
class CallsIt:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            beats_from_a_thread, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=10)),
        )


async def test_heartbeat_from_another_threads_loop(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[CallsIt], activities=[beats_from_a_thread],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        result = await asyncio.wait_for(
            client.execute_workflow(CallsIt.run, id=f"w-{uuid.uuid4()}", task_queue=tq), 20)
    assert result == "details: from a thread"
