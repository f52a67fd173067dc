"""Activity rate limits, on Postgres and SQLite: ``max_task_queue_activities_per_second`` holds
across every worker of the task queue (a token bucket taken in the claim's transaction), and
``max_activities_per_second`` per worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta

from queue_support import queued
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

STARTED: list[float] = []  # when each attempt started (monotonic)


@activity.defn
async def tick() -> None:
    STARTED.append(time.monotonic())


@workflow.defn
class Many:
    @workflow.run
    async def run(self, n: int, task_queue: str) -> None:
        await asyncio.gather(*(
            workflow.execute_activity(tick, task_queue=task_queue, start_to_close_timeout=timedelta(seconds=60))
            for _ in range(n)
        ))


def rate() -> float:
    """Starts per second, from the first start to the last."""
    return (len(STARTED) - 1) / (STARTED[-1] - STARTED[0])


async def test_task_queue_rate_holds_across_workers(client: Client, db_url: str) -> None:
    """20/s over three workers given the option, and a fourth that is not given it (on Temporal
    the queue's rate applies to every poller): 80 starts take about 4 s, not a moment."""
    tq, acts_tq = f"wf-{uuid.uuid4().hex[:8]}", f"act-{uuid.uuid4().hex[:8]}"
    STARTED.clear()
    async with Worker(client, task_queue=tq, workflows=[Many]):
        h = await client.start_workflow(Many.run, args=[80, acts_tq], id=f"many-{tq}", task_queue=tq)
        await queued(client, acts_tq, 80)
        async with AsyncExitStack() as stack:
            for i in range(4):
                other = await Client.connect(db_url, namespace=client.namespace)
                limit = {"max_task_queue_activities_per_second": 20.0} if i < 3 else {}
                await stack.enter_async_context(Worker(other, task_queue=acts_tq, activities=[tick], **limit))
            await h.result()
    assert len(STARTED) == 80
    assert 18.0 <= rate() <= 22.0, rate()


async def test_worker_rate(client: Client) -> None:
    """max_activities_per_second=20 on one worker: 60 starts at 20/s."""
    tq, acts_tq = f"wf-{uuid.uuid4().hex[:8]}", f"act-{uuid.uuid4().hex[:8]}"
    STARTED.clear()
    async with Worker(client, task_queue=tq, workflows=[Many]):
        h = await client.start_workflow(Many.run, args=[60, acts_tq], id=f"many-{tq}", task_queue=tq)
        await queued(client, acts_tq, 60)
        async with Worker(client, task_queue=acts_tq, activities=[tick], max_activities_per_second=20.0):
            await h.result()
    assert len(STARTED) == 60
    assert 18.0 <= rate() <= 22.0, rate()
