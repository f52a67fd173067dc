"""Eviction and dormant runs: `max_cached_workflows` bounds what a worker keeps in memory.

An evicted run gives up its claim and is dormant (unowned, not claimable) until it has work:
then any live worker of its task queue claims and replays it. Each kind of work is tested
on a run that was dormant when it arrived. Replays are counted by wrapping the driver's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eviction_app
import pytest
from eviction_app import Child, Steps, Waiter, gated
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from dbosify._store import get_store
from dbosify._worker.driver import RunDriver

APP = Path(__file__).with_name("eviction_app.py")


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Run ids, one per replay started in this process (a claimed run's driver starts with one)."""
    seen: list[str] = []
    original = RunDriver._replay_now

    async def counting(self: RunDriver, closed_ok: bool) -> None:
        seen.append(self.run_id)
        await original(self, closed_ok)

    monkeypatch.setattr(RunDriver, "_replay_now", counting)
    yield seen


async def run_row(client: Client, db_url: str, run_id: str) -> tuple[Any, ...]:
    store = get_store(db_url)
    row = await store.transact(
        client.namespace,
        lambda tx: tx.one(
            "SELECT owner, dormant, wake_at, status FROM executions WHERE run_id = %s", (run_id,)
        ),
    )
    assert row is not None
    return tuple(row)


async def until_dormant(client: Client, db_url: str, handle: WorkflowHandle[Any, Any]) -> None:
    run_id = handle.result_run_id or (await handle.describe()).run_id
    deadline = time.monotonic() + 20
    while True:
        owner, dormant, _, status = await run_row(client, db_url, run_id)
        if owner is None and dormant and status == 1:
            return
        assert time.monotonic() < deadline, f"run {run_id} never went dormant"
        await asyncio.sleep(0.05)


async def until_tasks(client: Client, db_url: str, run_id: str, n: int) -> None:
    """Until the run has completed ``n`` workflow tasks."""
    store = get_store(db_url)
    deadline = time.monotonic() + 20
    while True:
        row = await store.transact(client.namespace, lambda tx: tx.one(
            "SELECT count(*) FROM history WHERE run_id = %s AND event_type = 7", (run_id,)))
        if int(row[0]) >= n:
            return
        assert time.monotonic() < deadline, f"run {run_id} never completed {n} workflow tasks"
        await asyncio.sleep(0.05)


def worker(client: Client, tq: str, **kw: Any) -> Worker:
    return Worker(
        client, task_queue=tq, workflows=[Steps, Child, Waiter], activities=[gated],
        workflow_runner=UnsandboxedWorkflowRunner(), **kw,
    )


async def test_dormant_run_is_claimed_again_for_each_kind_of_work(
    client: Client, db_url: str, replays: list[str]
) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    eviction_app.release_activity = asyncio.Event()
    child_id = f"child-{uuid.uuid4()}"
    async with worker(client, tq, max_cached_workflows=0):
        handle = await client.start_workflow(Steps.run, child_id, id=f"s-{uuid.uuid4()}", task_queue=tq)
        run_id = handle.result_run_id
        assert run_id is not None

        def count() -> int:
            return replays.count(run_id)

        await until_dormant(client, db_url, handle)
        before = count()
        # A query replays the dormant run to answer, as on Temporal; it is evicted again after.
        assert await handle.query(Steps.steps) == []
        assert count() == before + 1
        await until_dormant(client, db_url, handle)

        await handle.signal(Steps.poke)
        await until_dormant(client, db_url, handle)
        assert count() == before + 2

        assert await handle.execute_update(Steps.bump) == 1
        await until_dormant(client, db_url, handle)
        assert count() == before + 3
        # Now asleep on a 1 s timer: dormant with its due time, claimed when it passes.
        _, _, wake_at, _ = await run_row(client, db_url, run_id)
        assert wake_at is not None

        # From here on nothing but the event itself may wake the run (no queries): each step
        # waits for the run's next workflow task, and for it to be dormant again.
        await until_tasks(client, db_url, run_id, 4)  # the timer fired
        await until_dormant(client, db_url, handle)  # waiting for its activity
        eviction_app.release_activity.set()
        await until_tasks(client, db_url, run_id, 6)  # its result; then the child's start
        await until_dormant(client, db_url, handle)  # waiting for its child
        child = client.get_workflow_handle(child_id)
        await until_dormant(client, db_url, child)
        await child.signal(Child.release)
        await until_tasks(client, db_url, run_id, 7)  # the child's result
        await until_dormant(client, db_url, handle)
        n = count()
        await handle.cancel()
        assert await handle.result() == ["signal", "update", "timer", "done", "child", "cancel"]
        assert count() == n + 1


async def test_cache_bounds_the_workflows_in_memory(client: Client, db_url: str) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    runs = 24
    async with worker(client, tq, max_cached_workflows=5) as w:
        handles = [
            await client.start_workflow(Waiter.run, id=f"w-{uuid.uuid4()}", task_queue=tq)
            for _ in range(runs)
        ]
        store = get_store(db_url)

        def counts(tx: Any) -> tuple[int, int]:
            row = tx.one(
                "SELECT count(*) FILTER (WHERE dormant = 1), count(*) FILTER (WHERE owner IS NOT NULL)"
                " FROM executions WHERE task_queue = %s AND status = 1" if not store.is_sqlite else
                "SELECT sum(dormant = 1), sum(owner IS NOT NULL) FROM executions"
                " WHERE task_queue = %s AND status = 1",
                (tq,),
            )
            return int(row[0] or 0), int(row[1] or 0)

        deadline = time.monotonic() + 30
        while True:
            dormant, owned = await store.transact(client.namespace, counts)
            if dormant == runs - 5:
                break
            assert time.monotonic() < deadline, (dormant, owned)
            await asyncio.sleep(0.05)
        assert owned == 5
        # temporalio drops an evicted instance when it handles the eviction job, a moment after
        # the run went dormant in the database.
        instances = w._workflow_worker._running_workflows  # type: ignore[union-attr]
        while len(instances) > 5:
            assert time.monotonic() < deadline, len(instances)
            await asyncio.sleep(0.05)
        # Every run still gets its signal, dormant or not, and the cache stays bounded.
        for i, h in enumerate(handles):
            await h.signal(Waiter.give, f"v{i}")
        for i, h in enumerate(handles):
            assert await h.result() == f"v{i}"
        assert len(instances) <= 5


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


async def test_sigkill_leaves_idle_runs_dormant(
    client: Client, db_url: str, replays: list[str], spawned: list[subprocess.Popen[bytes]]
) -> None:
    """A new worker serves a signal to one of a killed worker's idle runs, replaying only it."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DBOSIFY_ACTIVATE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(APP), "worker", db_url, client.namespace, tq],
        env=env, stdout=subprocess.PIPE,
    )
    spawned.append(proc)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.strip() == b"ready"
    n = 12
    handles = [
        await client.start_workflow(Waiter.run, id=f"k-{uuid.uuid4()}", task_queue=tq) for _ in range(n)
    ]
    store = get_store(db_url)

    def started(tx: Any) -> int:
        row = tx.one(
            "SELECT count(*) FROM executions e WHERE e.task_queue = %s AND e.status = 1"
            " AND e.owner IS NOT NULL AND EXISTS (SELECT 1 FROM history h WHERE h.run_id = e.run_id"
            " AND h.event_type = 7)",  # WorkflowTaskCompleted: the run waits for its signal
            (tq,),
        )
        return int(row[0])

    deadline = time.monotonic() + 30
    while await store.transact(client.namespace, started) < n:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    proc.kill()
    proc.wait()
    async with worker(client, tq):
        # Its runs are released at once (its process is gone) and, idle, go dormant.
        for h in handles:
            await until_dormant(client, db_url, h)
        await handles[3].signal(Waiter.give, "hello")
        assert await asyncio.wait_for(handles[3].result(), 30) == "hello"
        assert replays == [handles[3].result_run_id]
