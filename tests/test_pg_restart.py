"""Postgres restarting mid-run: workers reconnect and carry on; nothing is lost.

Runs on a throwaway cluster of its own (tests/pg_throwaway.py), never on the shared server,
because it stops and restarts it. An in-process worker runs workflows that each execute several
short activities and a timer while the server is restarted (``pg_ctl restart -m fast``, which ends
every session), or stopped for a few seconds. Every workflow must complete with the right result
within a bounded time, the worker must still be running, and each activity must have run exactly
once, except an attempt in flight while the server was down, which may legitimately run twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from conftest import new_namespace
from pg_throwaway import ThrowawayPostgres, Unavailable
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

STEPS = 5
WORKFLOWS = 8
STEP_SECONDS = 0.1
TIMER_SECONDS = 1.0
RESULT_TIMEOUT = 30.0
OUTAGE_SECONDS = 3.0

# (workflow key, step) -> [(monotonic start, monotonic end, attempt)], counted in-process.
EXECUTIONS: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
_exec_lock = threading.Lock()


@activity.defn
async def step(key: str, i: int) -> str:
    start = time.monotonic()
    await asyncio.sleep(STEP_SECONDS)
    with _exec_lock:
        EXECUTIONS.setdefault((key, i), []).append((start, time.monotonic(), activity.info().attempt))
    return f"{key}:{i}"


@workflow.defn
class StepsWorkflow:
    @workflow.run
    async def run(self, key: str) -> list[str]:
        out = []
        for i in range(STEPS):
            out.append(
                await workflow.execute_activity(
                    step, args=[key, i], start_to_close_timeout=timedelta(seconds=20)
                )
            )
            if i == 1:
                await workflow.sleep(TIMER_SECONDS)
        return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayPostgres]:
    try:
        pg = ThrowawayPostgres.create()
    except Unavailable as why:
        pytest.skip(f"no throwaway Postgres cluster: {why}")
    with pg:
        yield pg
        from dbosify._store.store import _stores

        store = _stores.get(pg.url)
        if store is not None:
            store.close()  # ends its notification thread, which would keep reconnecting


async def _run_through_outage(
    cluster: ThrowawayPostgres, outage: str
) -> tuple[dict[str, float], list[str]]:
    """Start workflows, take the server down while they run, and check that all complete."""
    client = await Client.connect(cluster.url, namespace=new_namespace(cluster.url, "r"))
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    keys = [f"{outage}-{uuid.uuid4().hex[:8]}" for _ in range(WORKFLOWS)]
    worker = Worker(
        client, task_queue=tq, workflows=[StepsWorkflow], activities=[step],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    worker_task = asyncio.create_task(worker.run())
    timings: dict[str, float] = {}
    try:
        handles = [
            await client.start_workflow(StepsWorkflow.run, k, id=k, task_queue=tq) for k in keys
        ]
        results = asyncio.gather(*(h.result() for h in handles))

        # Wait until every workflow is under way (some in their timer, some in activities).
        deadline = time.monotonic() + 10
        while sum(1 for k, _ in list(EXECUTIONS) if k in keys) < WORKFLOWS:
            assert time.monotonic() < deadline, "workflows did not start running"
            await asyncio.sleep(0.02)

        # The server goes down while the worker keeps running on this event loop. pg_ctl runs on
        # a thread of its own: the default executor's threads are busy retrying transactions.
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pg_ctl:
            down = time.monotonic()
            if outage == "restart":
                await loop.run_in_executor(pg_ctl, cluster.restart)
            else:
                await loop.run_in_executor(pg_ctl, cluster.stop)
                await asyncio.sleep(OUTAGE_SECONDS)
                await loop.run_in_executor(pg_ctl, cluster.start)
            up = time.monotonic()
        timings["outage"] = up - down

        got = await asyncio.wait_for(results, RESULT_TIMEOUT)
        timings["complete_after_up"] = time.monotonic() - up
        assert got == [[f"{k}:{i}" for i in range(STEPS)] for k in keys]
        assert not worker_task.done(), "the worker stopped during the outage"
    finally:
        if not worker_task.done():
            await asyncio.wait_for(worker.shutdown(), 20)
        if not cluster.is_running():
            cluster.start()

    timings["in_flight_at_down"] = sum(
        1 for k in keys for i in range(STEPS) for s, e, _ in EXECUTIONS.get((k, i), []) if s < down < e
    )
    # Each activity ran once; an attempt in flight while the server was down may have run twice.
    ran_twice = []
    for k in keys:
        for i in range(STEPS):
            runs = EXECUTIONS.get((k, i), [])
            assert 1 <= len(runs) <= 2, f"{k} step {i} ran {len(runs)} times"
            if len(runs) == 2:
                first_start, first_end, _ = runs[0]
                assert first_start <= up and first_end >= down - STEP_SECONDS, (
                    f"{k} step {i} ran twice but its first run was not in flight during the outage"
                )
                ran_twice.append(f"{k}:{i}")
    return timings, ran_twice


async def test_restart_mid_run(cluster: ThrowawayPostgres) -> None:
    timings, twice = await _run_through_outage(cluster, "restart")
    print(f"restart: {timings}, ran twice: {twice}")


async def test_outage_of_seconds(cluster: ThrowawayPostgres) -> None:
    timings, twice = await _run_through_outage(cluster, "stop-start")
    print(f"outage: {timings}, ran twice: {twice}")


async def test_client_while_down_fails_clearly(cluster: ThrowawayPostgres) -> None:
    cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as err:  # noqa: B017 - temporalio wraps it in RuntimeError
            await asyncio.wait_for(
                Client.connect(cluster.url, namespace=f"r{uuid.uuid4().hex[:10]}"), 20
            )
        elapsed = time.monotonic() - started
        assert not isinstance(err.value, asyncio.TimeoutError), "Client.connect hung"
        message = str(err.value)
        assert f"127.0.0.1:{cluster.port}" in message, message
        assert elapsed < 15, f"took {elapsed:.1f} s to fail"
    finally:
        cluster.start()
