"""When a workflow's timer fires, measured as on a Temporal server.

A Temporal server never fires a timer sooner than about a second after the workflow task that
started it completed: its history service gives no timer task a fire time before the timer
queue's read level, which runs `history.timerProcessorMaxTimeShift` (1 s) ahead of the clock.
So `workflow.sleep(0.1)` takes about a second there (measured on the dev server: 0.97 to
1.0 s from TimerStarted to TimerFired, for 0, 0.01, 0.1 and 0.7 s timers; 1.3 s for 1.3 s).
A timer also counts from the moment the task's commands took effect, not from the start of a
task whose activation took long. The time-skipping test server has no such floor.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self, seconds: float) -> float:
        start = workflow.now()
        if seconds == 0:
            # A zero-delay timer: temporalio still sends a StartTimer command for it.
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0, fut.set_result, None)
            await fut
        else:
            await workflow.sleep(seconds)
        return (workflow.now() - start).total_seconds()


@workflow.defn
class SlowTaskThenSleep:
    @workflow.run
    async def run(self, busy: float, seconds: float) -> None:
        time.sleep(busy)  # a long activation (the sandbox's first one can take this long)
        await workflow.sleep(seconds)


@workflow.defn
class SleepThenWait:
    def __init__(self) -> None:
        self.signals = 0

    @workflow.run
    async def run(self, seconds: float) -> int:
        await workflow.sleep(seconds)
        await workflow.wait_condition(lambda: self.signals > 0)
        return self.signals

    @workflow.signal
    def poke(self) -> None:
        self.signals += 1


def _worker(client: Client, tq: str, **kw: object) -> Worker:
    return Worker(
        client, task_queue=tq, workflows=[Sleeper, SlowTaskThenSleep, SleepThenWait],
        workflow_runner=UnsandboxedWorkflowRunner(), **kw,  # type: ignore[arg-type]
    )


async def _times(handle: WorkflowHandle) -> list[tuple[int, float]]:
    events: list[HistoryEvent] = [e async for e in handle.fetch_history_events()]
    return [(e.event_type, e.event_time.ToNanoseconds() / 1e9) for e in events]


def _first(times: list[tuple[int, float]], event_type: int) -> float:
    return next(t for et, t in times if et == event_type)


@pytest.mark.parametrize("seconds", [0, 0.1, 0.5])
async def test_a_short_timer_fires_a_second_after_it_started(client: Client, seconds: float) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with _worker(client, tq):
        handle = await client.start_workflow(Sleeper.run, seconds, id=f"wf-{uuid.uuid4()}", task_queue=tq)
        elapsed = await handle.result()
    times = await _times(handle)
    started = _first(times, EventType.EVENT_TYPE_TIMER_STARTED)
    fired = _first(times, EventType.EVENT_TYPE_TIMER_FIRED)
    assert 1.0 <= fired - started < 3.0
    assert 1.0 <= elapsed < 3.0


async def test_a_timer_counts_from_its_task_taking_effect(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with _worker(client, tq):
        handle = await client.start_workflow(
            SlowTaskThenSleep.run, args=[0.6, 1.2], id=f"wf-{uuid.uuid4()}", task_queue=tq
        )
        await handle.result()
    times = await _times(handle)
    task_started = _first(times, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)  # workflow.now()
    task_completed = _first(times, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    timer_started = _first(times, EventType.EVENT_TYPE_TIMER_STARTED)
    fired = _first(times, EventType.EVENT_TYPE_TIMER_FIRED)
    # As on Temporal: the task's completion and its commands are stamped when they took effect.
    assert task_completed - task_started >= 0.6
    assert timer_started == task_completed
    assert fired - timer_started >= 1.2
    assert fired - task_started >= 1.8


async def test_a_replayed_run_keeps_its_timer_floor(client: Client) -> None:
    # No cache: the run goes dormant after its first task; the signal makes another worker
    # look replay it while its 0.1 s timer is past due by its nominal time but not by the floor.
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with _worker(client, tq, max_cached_workflows=0):
        handle = await client.start_workflow(SleepThenWait.run, 0.1, id=f"wf-{uuid.uuid4()}", task_queue=tq)
        await asyncio.sleep(0.4)
        await handle.signal(SleepThenWait.poke)
        assert await handle.result() == 1
    times = await _times(handle)
    started = _first(times, EventType.EVENT_TYPE_TIMER_STARTED)
    fired = _first(times, EventType.EVENT_TYPE_TIMER_FIRED)
    signaled = _first(times, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    assert signaled < fired
    assert fired - started >= 1.0


@pytest.fixture
async def skipping_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkflowEnvironment]:
    monkeypatch.setenv("DBOSIFY_DATABASE_URL", "sqlite:///" + str(tmp_path_factory.mktemp("ts")))
    env = await WorkflowEnvironment.start_time_skipping()
    try:
        yield env
    finally:
        await env.shutdown()


async def test_time_skipping_timers_have_no_floor(skipping_env: WorkflowEnvironment) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with _worker(skipping_env.client, tq):
        elapsed = await skipping_env.client.execute_workflow(
            Sleeper.run, 0.1, id=f"wf-{uuid.uuid4()}", task_queue=tq
        )
    assert 0.1 <= elapsed < 0.5
