"""WorkflowEnvironment.start_time_skipping() on dbosify: a virtual clock, no test server.

Each test starts its own environment (an isolated store, on embedded SQLite and on Postgres),
so the clocks of the tests never mix.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgres"])
async def env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkflowEnvironment]:
    if request.param == "postgres":
        url = str(request.getfixturevalue("_pg_session_url"))
    else:
        url = "sqlite:///" + str(tmp_path_factory.mktemp("ts"))
    monkeypatch.setenv("DBOSIFY_DATABASE_URL", url)
    started = time.monotonic()
    e = await WorkflowEnvironment.start_time_skipping()
    # No download, no subprocess: only the store's setup (see test_env_start_sets_up_the_store),
    # which takes a second or two; the bound is loose for a loaded machine.
    assert time.monotonic() - started < 30.0
    assert e.supports_time_skipping
    try:
        yield e
    finally:
        await e.shutdown()


def worker(env: WorkflowEnvironment, *workflows: type, activities: list[object] | None = None) -> Worker:
    return Worker(
        env.client,
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        workflows=list(workflows),
        activities=list(activities or []),  # type: ignore[arg-type]
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


async def virtual_now(env: WorkflowEnvironment) -> float:
    return (await env.get_current_time()).timestamp()


# -- workflows ------------------------------------------------------------------------------------


@workflow.defn
class SleepsForDays:
    @workflow.run
    async def run(self, days: float) -> float:
        start = workflow.now()
        await workflow.sleep(timedelta(days=days))
        return (workflow.now() - start).total_seconds()


@workflow.defn
class TimerWithStatus:
    def __init__(self) -> None:
        self.fired = False

    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        self.fired = True
        await workflow.wait_condition(lambda: False)  # stays open for queries
        return "unreachable"

    @workflow.query
    def status(self) -> tuple[bool, float]:
        return self.fired, workflow.now().timestamp()

    @workflow.signal
    def poke(self) -> None:
        pass


@workflow.defn
class WaitsForSignal:
    def __init__(self) -> None:
        self.got: str | None = None

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.wait_condition(lambda: self.got is not None, timeout=timedelta(days=1))
        except asyncio.TimeoutError:
            return "timed out"
        return f"signalled: {self.got}"

    @workflow.signal
    def deliver(self, value: str) -> None:
        self.got = value


@workflow.defn
class UpdatableTimer:
    """Sleeps until a wake-up time that signals can move (in the spirit of Temporal's sample)."""

    def __init__(self) -> None:
        self.wake_up_at = 0.0
        self.updated = False

    @workflow.run
    async def run(self, wake_up_at: float) -> float:
        if not self.wake_up_at:  # a signal may have come with the start
            self.wake_up_at = wake_up_at
        while True:
            self.updated = False
            delay = self.wake_up_at - workflow.now().timestamp()
            if delay <= 0:
                return workflow.now().timestamp()
            try:
                await workflow.wait_condition(lambda: self.updated, timeout=delay)
            except asyncio.TimeoutError:
                return workflow.now().timestamp()

    @workflow.signal
    def update_wake_up_time(self, wake_up_at: float) -> None:
        self.wake_up_at = wake_up_at
        self.updated = True

    @workflow.query
    def get_wake_up_time(self) -> float:
        return self.wake_up_at


CHARGES: dict[str, list[float]] = {}


@activity.defn
async def charge(customer: str) -> float:
    CHARGES.setdefault(customer, []).append(activity.info().current_attempt_scheduled_time.timestamp())
    return 9.99


@workflow.defn
class Subscription:
    """Bills a customer once per period, then ends (samples-python style, days between bills)."""

    def __init__(self) -> None:
        self.billed = 0
        self.total = 0.0

    @workflow.run
    async def run(self, customer: str, periods: int, period_days: float) -> float:
        for _ in range(periods):
            self.total += await workflow.execute_activity(
                charge, customer, start_to_close_timeout=timedelta(seconds=30)
            )
            self.billed += 1
            await workflow.sleep(timedelta(days=period_days))
        return round(self.total, 2)

    @workflow.query
    def billed_periods(self) -> int:
        return self.billed


class EnvSleeper:
    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env = env

    @activity.defn
    async def sleep_past_heartbeat_timeout(self) -> str:
        timeout = activity.info().heartbeat_timeout
        assert timeout is not None
        await self.env.sleep(timeout.total_seconds() * 3)
        return "finished"


@workflow.defn
class HeartbeatTimesOut:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity_method(
            EnvSleeper.sleep_past_heartbeat_timeout,
            schedule_to_close_timeout=timedelta(days=10),
            heartbeat_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


FLAKY: dict[str, list[float]] = {}


@activity.defn
async def fails_twice(key: str) -> int:
    FLAKY.setdefault(key, []).append(time.monotonic())
    if activity.info().attempt < 3:
        raise RuntimeError("not yet")
    return activity.info().attempt


@workflow.defn
class RetriesHourly:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            fails_twice, key, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(hours=1), backoff_coefficient=1.0),
        )


# -- tests -------------------------------------------------------------------------------------------


async def test_thirty_day_sleep_takes_seconds(env: WorkflowEnvironment) -> None:
    async with worker(env, SleepsForDays) as w:
        before = await virtual_now(env)
        assert abs(before - time.time()) < 5  # virtual time starts at the wall clock's
        started = time.monotonic()
        handle = await env.client.start_workflow(
            SleepsForDays.run, 30.0, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
        )
        slept = await handle.result()
        assert time.monotonic() - started < 5.0  # about 0.2 s on a quiet machine
        assert slept == pytest.approx(30 * DAY, abs=5)
        assert await virtual_now(env) - before == pytest.approx(30 * DAY, abs=10)
        # History shows virtual time: the timer fired 30 days after it started.
        times = {}
        async for ev in handle.fetch_history_events():
            times.setdefault(ev.event_type, ev.event_time.ToNanoseconds() / 1e9)
        fired = times[EventType.EVENT_TYPE_TIMER_FIRED] - times[EventType.EVENT_TYPE_TIMER_STARTED]
        assert fired == pytest.approx(30 * DAY, abs=5)


async def test_heartbeat_timeout_fires_on_virtual_time(env: WorkflowEnvironment) -> None:
    async with worker(env, HeartbeatTimesOut, activities=[EnvSleeper(env).sleep_past_heartbeat_timeout]) as w:
        started = time.monotonic()
        handle = await env.client.start_workflow(
            HeartbeatTimesOut.run, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
        )
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        assert time.monotonic() - started < 5
        assert isinstance(err.value.cause, ActivityError)
        assert isinstance(err.value.cause.cause, TimeoutError)
        assert err.value.cause.cause.type == TimeoutType.HEARTBEAT
        times = {}
        async for ev in handle.fetch_history_events():
            times.setdefault(ev.event_type, ev.event_time.ToNanoseconds() / 1e9)
        waited = times[EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT] - times[
            EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        assert waited == pytest.approx(3600, abs=30)  # the heartbeat timeout, not the sleep


async def test_signal_while_time_is_locked(env: WorkflowEnvironment) -> None:
    async with worker(env, WaitsForSignal) as w:
        before = await virtual_now(env)
        handle = await env.client.start_workflow(
            WaitsForSignal.run, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
        )
        # Locked (no result awaited yet): the day-long timeout cannot be skipped past.
        await asyncio.sleep(0.3)
        await handle.signal(WaitsForSignal.deliver, "hello")
        assert await handle.result() == "signalled: hello"
        assert await virtual_now(env) - before < 30


async def test_env_sleep_while_a_timer_is_pending(env: WorkflowEnvironment) -> None:
    async with worker(env, TimerWithStatus) as w:
        start = await virtual_now(env)
        handle = await env.client.start_workflow(
            TimerWithStatus.run, 3600.0, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
        )
        await env.sleep(600)
        await handle.signal(TimerWithStatus.poke)  # a workflow task: its now() is the virtual now
        fired, wf_now = await handle.query(TimerWithStatus.status)
        assert not fired
        assert wf_now - start == pytest.approx(600, abs=30)
        await env.sleep(3600)
        fired, _ = await handle.query(TimerWithStatus.status)
        assert fired
        assert await virtual_now(env) - start == pytest.approx(4200, abs=30)
        await handle.terminate()


async def test_two_environments_have_their_own_clocks(env: WorkflowEnvironment) -> None:
    async with await WorkflowEnvironment.start_time_skipping() as other:
        async with worker(env, SleepsForDays) as w1, worker(other, SleepsForDays) as w2:
            t1, t2 = await virtual_now(env), await virtual_now(other)
            r1, r2 = await asyncio.gather(
                env.client.execute_workflow(SleepsForDays.run, 3.0, id="same-id", task_queue=w1.task_queue),
                other.client.execute_workflow(SleepsForDays.run, 1.0, id="same-id", task_queue=w2.task_queue),
            )
            assert (r1, r2) == (pytest.approx(3 * DAY, abs=5), pytest.approx(DAY, abs=5))
            assert await virtual_now(env) - t1 == pytest.approx(3 * DAY, abs=30)
            assert await virtual_now(other) - t2 == pytest.approx(DAY, abs=30)
            await env.sleep(DAY)
            assert await virtual_now(other) - t2 == pytest.approx(DAY, abs=30)


async def test_auto_time_skipping_disabled_runs_in_real_time(env: WorkflowEnvironment) -> None:
    async with worker(env, SleepsForDays) as w:
        with env.auto_time_skipping_disabled():
            started = time.monotonic()
            slept = await env.client.execute_workflow(
                SleepsForDays.run, 1.0 / DAY, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
            )
            assert time.monotonic() - started >= 0.9
            assert slept == pytest.approx(1.0, abs=0.5)


async def test_subscription_bills_every_thirty_days(env: WorkflowEnvironment) -> None:
    customer = f"c-{uuid.uuid4().hex[:6]}"
    async with worker(env, Subscription, activities=[charge]) as w:
        started = time.monotonic()
        handle = await env.client.start_workflow(
            Subscription.run, args=[customer, 3, 30.0], id=f"sub-{customer}", task_queue=w.task_queue
        )
        assert await handle.result() == pytest.approx(29.97)
        assert time.monotonic() - started < 3
        bills = CHARGES[customer]
        assert [round((b - bills[0]) / DAY) for b in bills] == [0, 30, 60]
        assert await handle.query(Subscription.billed_periods) == 3  # a query after a long sleep


async def test_updatable_timer(env: WorkflowEnvironment) -> None:
    async with worker(env, UpdatableTimer) as w:
        start = await virtual_now(env)
        handle = await env.client.start_workflow(
            UpdatableTimer.run, start + 30 * DAY, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
        )
        await handle.signal(UpdatableTimer.update_wake_up_time, start + DAY)
        woke = await handle.result()
        assert woke - start == pytest.approx(DAY, abs=30)
        assert await handle.query(UpdatableTimer.get_wake_up_time) == start + DAY
        assert await virtual_now(env) - start < DAY + 60


async def test_query_after_a_long_sleep(env: WorkflowEnvironment) -> None:
    async with worker(env, TimerWithStatus) as w:
        start = await virtual_now(env)
        handle = await env.client.start_workflow(
            TimerWithStatus.run, 10 * DAY, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
        )
        await env.sleep(10 * DAY + 60)
        fired, wf_now = await handle.query(TimerWithStatus.status)
        assert fired
        assert wf_now - start == pytest.approx(10 * DAY, abs=30)
        await handle.terminate()


async def test_retry_backoff_and_timeouts_on_virtual_time(env: WorkflowEnvironment) -> None:
    key = uuid.uuid4().hex
    async with worker(env, RetriesHourly, SleepsForDays, activities=[fails_twice]) as w:
        start = await virtual_now(env)
        wall = time.monotonic()
        assert await env.client.execute_workflow(
            RetriesHourly.run, key, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue
        ) == 3
        assert time.monotonic() - wall < 3
        assert await virtual_now(env) - start == pytest.approx(2 * 3600, abs=60)
        # A run timeout of a day ends a workflow that sleeps for two.
        with pytest.raises(WorkflowFailureError) as err:
            await env.client.execute_workflow(
                SleepsForDays.run, 2.0, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue,
                run_timeout=timedelta(days=1),
            )
        assert isinstance(err.value.cause, TimeoutError)
        # A start delay of a week is skipped too.
        before = await virtual_now(env)
        handle = await env.client.start_workflow(
            SleepsForDays.run, 0.0, id=f"wf-{uuid.uuid4()}", task_queue=w.task_queue,
            start_delay=timedelta(days=7),
        )
        await handle.result()
        assert await virtual_now(env) - before == pytest.approx(7 * DAY, abs=60)


def _dbos_tables_exist(target: str) -> bool:
    """Whether DBOS's system table is in the environment's store, read over a fresh connection."""
    import sqlite3

    import psycopg

    from dbosify._store import get_store, resolve_url

    store = get_store(resolve_url(target))
    if store.is_sqlite:
        path = store.sqlite_path("default")
        if not path.exists():
            return False
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'workflow_status'").fetchone()
        return row is not None
    with psycopg.connect(store.pg_connect_args()["conninfo"], autocommit=True) as pg:
        row = pg.execute("SELECT to_regclass(%s)", (f'"{store.dbos_schema}".workflow_status',)).fetchone()
    return row is not None and row[0] is not None


@pytest.mark.parametrize("kind", ["time_skipping", "local"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_env_start_sets_up_the_store(
    kind: str, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A started environment is ready to serve, as a started test or dev server is: the first
    workflow start does not pay the store's setup (importing DBOS and its migrations, 0.4 s on a
    quiet machine and seconds on a busy one). Under time skipping that setup ran in real time
    while the clock waited for it, so a skipped 3 s sleep took longer than 3 s."""
    if backend == "postgres":
        url = str(request.getfixturevalue("_pg_session_url"))
    else:
        url = "sqlite:///" + str(tmp_path_factory.mktemp("ts"))
    monkeypatch.setenv("DBOSIFY_DATABASE_URL", url)
    if kind == "time_skipping":
        e = await WorkflowEnvironment.start_time_skipping()
    else:
        e = await WorkflowEnvironment.start_local()
    try:
        assert _dbos_tables_exist(e.client.service_client.config.target_host)
    finally:
        await e.shutdown()
