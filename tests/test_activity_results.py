"""Activity results that finish together are group-committed; histories stay exact.

A burst of completions (many parallel activities in several runs) goes through the batched
recording path (dbosify/_worker/results.py, _activity_tasks.finish_batch). Each run's history
must still be Temporal's: contiguous event ids, one started and one completed event per
activity, results in the workflow, and a clean replay.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Replayer, Worker

from dbosify._store import get_store

FANOUT = 30
RUNS = 6


@activity.defn
async def square(n: int) -> int:
    return n * n


@activity.defn
async def fails_once(n: int) -> int:
    if activity.info().attempt == 1:
        raise RuntimeError("first attempt fails")
    return n


@activity.defn
async def counts_up() -> int:
    """Heartbeats, then fails until the details it finds on retry add up."""
    info = activity.info()
    count = (int(info.heartbeat_details[0]) if info.heartbeat_details else 0) + 9
    activity.heartbeat(count)
    if count < 30:
        raise RuntimeError("again")
    return count


@workflow.defn
class CountsUp:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(
            counts_up, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=1), maximum_attempts=4),
        )


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, n: int) -> list[int]:
        opts = {"start_to_close_timeout": timedelta(seconds=30)}
        squares = await asyncio.gather(
            *(workflow.execute_activity(square, i, **opts) for i in range(n))  # type: ignore[arg-type]
        )
        # A retried attempt in the same burst takes the one-by-one path inside the batch.
        again = await workflow.execute_activity(fails_once, n, **opts)  # type: ignore[arg-type]
        return [*squares, again]


async def test_burst_of_results(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[FanOut], activities=[square, fails_once]):
        handles = [
            await client.start_workflow(FanOut.run, FANOUT, id=f"fan-{uuid.uuid4().hex[:8]}", task_queue=tq)
            for _ in range(RUNS)
        ]
        results = await asyncio.gather(*(h.result() for h in handles))
    assert all(r == [i * i for i in range(FANOUT)] + [FANOUT] for r in results)
    for h in handles:
        history = await h.fetch_history()
        ids = [e.event_id for e in history.events]
        assert ids == list(range(1, len(ids) + 1)), "event ids are not contiguous"
        kinds = [e.event_type for e in history.events]
        assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == FANOUT + 1
        assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED) == FANOUT + 1
        assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) == FANOUT + 1
        await Replayer(workflows=[FanOut]).replay_workflow(history)
    # Nothing is left behind in the activity queue.
    store = get_store(client.service_client.config.target_host)
    left = await store.transact(client.namespace, lambda tx: tx.all("SELECT run_id FROM activity_tasks"))
    assert left == []


async def test_failure_recorded_after_the_last_heartbeat(client: Client) -> None:
    """A heartbeat just before a failure is durable before the failure schedules the retry:
    each attempt sees the previous one's last details (results and heartbeats commit on
    different store lanes)."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[CountsUp], activities=[counts_up]):
        for _ in range(5):
            h = await client.start_workflow(CountsUp.run, id=f"cu-{uuid.uuid4().hex[:8]}", task_queue=tq)
            assert await h.result() == 36
