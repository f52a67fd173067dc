"""A due timer costs its run two transactions, not three: the one that appends TimerFired ends
with the look that the next workflow task needs (as a workflow task's own transaction does),
instead of a separate read after it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from dbosify._worker import driver as driver_mod


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self, n: int) -> int:
        for _ in range(n):
            await workflow.sleep(timedelta(milliseconds=200))
        return n


async def test_timer_fire_reads_what_follows(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    looks: list[int] = []
    load = driver_mod.RunDriver._load

    async def counting(self: driver_mod.RunDriver, after: int) -> driver_mod.Snapshot:
        looks.append(after)
        return await load(self, after)

    monkeypatch.setattr(driver_mod.RunDriver, "_load", counting)
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Sleeper]):
        assert await client.execute_workflow(Sleeper.run, 5, id=f"s-{uuid.uuid4().hex[:8]}", task_queue=tq) == 5
    # The first look of the claimed run, and none after each of the five timers.
    assert len(looks) <= 2, looks
