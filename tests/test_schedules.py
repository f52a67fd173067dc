"""Schedules and cron workflows on Postgres and SQLite: exactly-once firing across processes and
crashes, catch-up after downtime, overlap buffers, pause, updates, cron chains, and an idle
database left alone."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.workflowservice.v1 import DescribeScheduleRequest, UpdateScheduleRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    WorkflowExecutionStatus,
)
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from dbosify._engine import scheduler
from dbosify._store import get_store, resolve_url

APP = Path(__file__).with_name("schedule_app.py")


@workflow.defn
class Tick:  # the same workflow as schedule_app.py's
    @workflow.run
    async def run(self) -> str:
        return workflow.info().workflow_id


@workflow.defn
class Waits:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.go)

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn
class Counts:
    @workflow.run
    async def run(self) -> int:
        last = workflow.get_last_completion_result(type_hint=int)
        return (last or 0) + 1


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Tick, Waits, Counts],
                  workflow_runner=UnsandboxedWorkflowRunner())


def _every(seconds: float) -> ScheduleSpec:
    return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=seconds))])


def _schedule(workflow_run: Any, tq: str, spec: ScheduleSpec, **policy: Any) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(workflow_run, id=f"act-{uuid.uuid4().hex[:6]}", task_queue=tq),
        spec=spec, policy=SchedulePolicy(**policy),
    )


async def _eventually(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await fn()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def _started_by(client: Client, schedule_id: str) -> list[str]:
    return sorted([w.id async for w in client.list_workflows(f"TemporalScheduledById = '{schedule_id}'")])


def _nominal(workflow_id: str) -> int:
    return calendar.timegm(time.strptime(workflow_id[-20:], "%Y-%m-%dT%H:%M:%SZ"))


def _assert_one_per_second(ids: list[str]) -> None:
    """Workflow ids end in their nominal time: each second from the first to the last, once."""
    stamps = [_nominal(i) for i in ids]
    assert len(set(ids)) == len(ids)
    assert stamps == [stamps[0] + k for k in range(len(stamps))], ids


class Processes:
    def __init__(self, url: str, namespace: str, tq: str, tmp: Path) -> None:
        self.url, self.ns, self.tq, self.tmp = url, namespace, tq, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self, **env: str) -> subprocess.Popen[bytes]:
        environ = {**os.environ, "DBOSIFY_ACTIVATE": "1", "PYTHONUNBUFFERED": "1", **env}
        environ.pop("DBOSIFY_DATABASE_URL", None)
        proc = subprocess.Popen([sys.executable, str(APP), self.url, self.ns, self.tq], env=environ,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def processes(client: Client, db_url: str, tmp_path: Path) -> Iterator[Processes]:
    p = Processes(db_url, client.namespace, f"tq-{uuid.uuid4().hex[:8]}", tmp_path)
    yield p
    p.close()


async def test_two_worker_processes_take_each_action_once(client: Client, processes: Processes) -> None:
    processes.worker()
    processes.worker()
    sid = f"s-{uuid.uuid4().hex[:8]}"
    handle = await client.create_schedule(sid, _schedule(Tick.run, processes.tq, _every(1),
                                                         overlap=ScheduleOverlapPolicy.ALLOW_ALL))
    await _eventually(lambda: _count_at_least(client, sid, 5))
    await handle.pause()
    ids = await _started_by(client, sid)
    desc = await handle.describe()
    assert desc.info.num_actions == len(ids) >= 5
    _assert_one_per_second(ids)
    for wid in ids:
        assert await client.get_workflow_handle(wid).result() == wid


async def _count_at_least(client: Client, sid: str, n: int) -> bool:
    return len(await _started_by(client, sid)) >= n


async def test_worker_killed_between_deciding_and_recording(client: Client, processes: Processes) -> None:
    marker = processes.tmp / "in-fire"
    doomed = processes.worker(DBOSIFY_FAULT_PAUSE_BEFORE_SCHEDULE_COMMIT=f"0.8:{marker}")
    sid = f"s-{uuid.uuid4().hex[:8]}"
    created = time.time()
    handle = await client.create_schedule(sid, _schedule(Tick.run, processes.tq, _every(1),
                                                         overlap=ScheduleOverlapPolicy.ALLOW_ALL))
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, "the worker never started to fire"
        await asyncio.sleep(0.01)
    os.kill(doomed.pid, signal.SIGKILL)  # inside the firing transaction, its workflow started
    doomed.wait()
    processes.worker()
    await _eventually(lambda: _count_at_least(client, sid, 4))
    await handle.pause()
    ids = await _started_by(client, sid)
    _assert_one_per_second(ids)
    first = _nominal(ids[0])
    assert first <= math.floor(created) + 2  # the killed worker's action was taken, by the other, once
    assert (await handle.describe()).info.num_actions == len(ids)


async def test_downtime_catches_up_inside_the_window_and_counts_the_rest(client: Client, db_url: str) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    sid = f"s-{uuid.uuid4().hex[:8]}"
    handle = await client.create_schedule(sid, _schedule(
        Tick.run, tq, _every(2), overlap=ScheduleOverlapPolicy.ALLOW_ALL, catchup_window=timedelta(seconds=11.8)))
    while not 0.05 <= time.time() % 2 < 0.5:  # ages of the due times then fall clear of the window's edge
        await asyncio.sleep(0.02)
    base = math.floor(time.time() / 2) * 2
    store = get_store(resolve_url(db_url))
    # No process ran for nine due times (base-16 ... base): as if all had been down since then.
    await store.transact(client.namespace, lambda tx: tx.execute(
        "UPDATE schedules SET processed_until = %s, next_due = %s WHERE schedule_id = %s",
        (base - 17, base - 16, sid)))
    async with _worker(client, tq):
        await _eventually(lambda: _count_at_least(client, sid, 6))
        desc = await handle.describe()
    assert desc.info.num_actions == 6  # ages under 11.8 s: base-10 ... base
    assert desc.info.num_actions_missed_catchup_window == 3  # base-16, base-14, base-12


@pytest.mark.parametrize("policy, started, skipped", [
    (ScheduleOverlapPolicy.BUFFER_ONE, 2, 1), (ScheduleOverlapPolicy.BUFFER_ALL, 3, 0)])
async def test_buffered_starts_wait_for_the_running_action(
    client: Client, policy: ScheduleOverlapPolicy, started: int, skipped: int
) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    handle = await client.create_schedule(f"s-{uuid.uuid4().hex[:8]}", _schedule(Waits.run, tq, ScheduleSpec(), overlap=policy))
    async with _worker(client, tq):
        for _ in range(3):
            await handle.trigger()
        desc = await handle.describe()
        assert desc.info.num_actions == 1 and len(desc.info.running_actions) == 1
        assert desc.info.num_actions_skipped_overlap == skipped
        for n in range(1, started + 1):
            running = (await handle.describe()).info.running_actions
            assert len(running) == 1, f"action {n}: {running}"
            await client.get_workflow_handle(running[0].workflow_id).signal(Waits.proceed)
            await client.get_workflow_handle(running[0].workflow_id).result()

            async def next_started(n: int = n) -> bool:
                d = await handle.describe()
                return d.info.num_actions == min(n + 1, started) and (n == started or len(d.info.running_actions) == 1)

            assert await _eventually(next_started), (await handle.describe()).info
        assert (await handle.describe()).info.num_actions == started


async def test_pause_unpause_and_a_stale_update(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    sid = f"s-{uuid.uuid4().hex[:8]}"
    handle = await client.create_schedule(sid, _schedule(Tick.run, tq, _every(1), overlap=ScheduleOverlapPolicy.ALLOW_ALL))
    async with _worker(client, tq):
        await _eventually(lambda: _count_at_least(client, sid, 1))
        await handle.pause(note="maintenance")
        paused_at = len(await _started_by(client, sid))
        await asyncio.sleep(2.5)
        desc = await handle.describe()
        assert desc.schedule.state.paused and desc.schedule.state.note == "maintenance"
        assert len(await _started_by(client, sid)) == paused_at
        await handle.unpause()
        await _eventually(lambda: _count_at_least(client, sid, paused_at + 1))
        assert len(await _started_by(client, sid)) <= paused_at + 2  # paused time is not caught up

    # temporalio's update() sends no conflict token; a raw request with a stale one is ignored.
    ns = client.namespace
    desc_raw = await client.workflow_service.describe_schedule(DescribeScheduleRequest(namespace=ns, schedule_id=sid))
    token = desc_raw.conflict_token
    for note in ("first", "stale"):
        changed = desc_raw.schedule
        changed.state.notes = note
        await client.workflow_service.update_schedule(UpdateScheduleRequest(
            namespace=ns, schedule_id=sid, schedule=changed, conflict_token=token))
    assert (await handle.describe()).schedule.state.note == "first"
    await handle.update(lambda i: ScheduleUpdate(dataclasses.replace(i.description.schedule, state=ScheduleState(note="sdk"))))
    assert (await handle.describe()).schedule.state.note == "sdk"
    await handle.delete()
    with pytest.raises(Exception, match="not found"):
        await handle.describe()


async def test_cron_schedule_runs_continue_with_the_last_result(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with _worker(client, tq):
        handle = await client.start_workflow(Counts.run, id=f"cron-{uuid.uuid4().hex[:6]}", task_queue=tq,
                                             cron_schedule="@every 1s")

        async def three_runs() -> list[Any]:
            runs = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
            return runs if len(runs) >= 3 else []

        await _eventually(three_runs)
        await handle.terminate("enough")
        runs = sorted([w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")], key=lambda w: w.start_time)
    results = []
    for run in runs:
        if run.status == WorkflowExecutionStatus.COMPLETED:
            history = await client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
            done = history.events[-1].workflow_execution_completed_event_attributes
            assert done.new_execution_run_id  # each completed run names the next
            results.append(done.result.payloads[0].data)
    assert results[:2] == [b"1", b"2"]
    assert runs[-1].status == WorkflowExecutionStatus.TERMINATED
    second = await client.get_workflow_handle(handle.id, run_id=runs[1].run_id).fetch_history()
    started = second.events[0].workflow_execution_started_event_attributes
    assert started.cron_schedule == "@every 1s" and started.initiator == 3  # CRON_SCHEDULE
    await asyncio.sleep(1.5)
    assert len([w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]) == len(runs)


async def test_idle_schedules_cost_no_polling(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    spec = _every(60)
    spec.start_at = None
    for i in range(100):
        s = _schedule(Tick.run, tq, dataclasses.replace(spec, start_at=_in_an_hour(i)))
        await client.create_schedule(f"idle-{i}", s)
    calls: list[float] = []
    real = scheduler.fire_due

    def counted(tx: Any, limit: int = scheduler.FIRE_BATCH) -> tuple[int, float | None]:
        calls.append(time.monotonic())
        return real(tx, limit)

    monkeypatch.setattr(scheduler, "fire_due", counted)
    async with _worker(client, tq):
        await asyncio.sleep(5)
    assert 1 <= len(calls) <= 5, calls  # at most one a second; in fact one, then sleep an hour


def _in_an_hour(i: int) -> Any:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(time.time() + 3600 + i, timezone.utc)
