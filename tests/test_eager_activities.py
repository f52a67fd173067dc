"""Eager activity dispatch (granted when DBOSIFY_EAGER_ACTIVITIES=1): a workflow task that schedules an activity on its own worker's task
queue hands the attempt to that worker in the same transaction, as Core asks of Temporal (up to
`max_eager_activity_reservations_per_workflow_task`, 3 by default, while the worker has free
slots); the attempt is never claimed through the queue. `disable_eager_activity_execution`,
another task queue, or a worker without activities go through the queue as before.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Replayer, Worker

from dbosify._engine import activity_tasks as acts


@activity.defn
async def double(n: int) -> int:
    return 2 * n


@workflow.defn
class Fan:
    @workflow.run
    async def run(self, n: int, task_queue: str) -> list[int]:
        return list(await asyncio.gather(*(
            workflow.execute_activity(
                double, i, start_to_close_timeout=timedelta(seconds=30), task_queue=task_queue or None
            )
            for i in range(n)
        )))


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The workflow activity attempts handed out through the queue (`acts.claim`)."""
    monkeypatch.setenv("DBOSIFY_EAGER_ACTIVITIES", "1")
    got: list[tuple[str, int]] = []
    claim = acts.claim

    def counting(*a: Any, **kw: Any) -> Any:
        out = claim(*a, **kw)
        if isinstance(out, acts.Claimed):
            got.append((out.run_id, out.seq))
        return out

    monkeypatch.setattr(acts, "claim", counting)
    return got


async def _run(client: Client, n: int, *, other_queue: bool = False, **worker_kw: Any) -> list[int]:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    other = f"{tq}-acts" if other_queue else ""
    async with Worker(client, task_queue=tq, workflows=[Fan], activities=[double], **worker_kw):
        async with Worker(client, task_queue=other or f"{tq}-unused", activities=[double]):
            h = await client.start_workflow(Fan.run, args=[n, other], id=f"fan-{uuid.uuid4().hex[:8]}", task_queue=tq)
            result = await h.result()
    history = await h.fetch_history()
    assert [e.event_id for e in history.events] == list(range(1, len(history.events) + 1))
    await Replayer(workflows=[Fan]).replay_workflow(history)
    return result


async def test_own_queue_activities_are_handed_over(client: Client, claims: list[tuple[str, int]]) -> None:
    assert await _run(client, 2) == [0, 2]
    assert claims == []


async def test_at_most_three_per_workflow_task(client: Client, claims: list[tuple[str, int]]) -> None:
    assert await _run(client, 5) == [0, 2, 4, 6, 8]
    assert len(claims) == 2


async def test_disabled_or_other_queue_goes_through_the_queue(
    client: Client, claims: list[tuple[str, int]]
) -> None:
    assert await _run(client, 2, disable_eager_activity_execution=True) == [0, 2]
    assert len(claims) == 2
    claims.clear()
    assert await _run(client, 2, other_queue=True) == [0, 2]
    assert len(claims) == 2


async def test_not_granted_unless_enabled(
    client: Client, claims: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBOSIFY_EAGER_ACTIVITIES")
    assert await _run(client, 2) == [0, 2]
    assert len(claims) == 2
