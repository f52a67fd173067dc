"""Standalone activities (started by a client, not a workflow) on Postgres and SQLite: start and
result, id policies, cancel and terminate, retries and timeouts, list and count filters, and a
worker killed in the middle of an attempt."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import new_namespace
from temporalio import activity
from temporalio.client import (
    ActivityExecutionCount,
    ActivityExecutionCountAggregationGroup,
    ActivityExecutionStatus,
    ActivityFailureError,
    Client,
    PendingActivityState,
)
from temporalio.common import (
    ActivityIDConflictPolicy,
    ActivityIDReusePolicy,
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import (
    ActivityAlreadyStartedError,
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    TimeoutType,
)
from temporalio.worker import Worker

APP = Path(__file__).with_name("standalone_app.py")
WAIT = 30.0  # no single step of these tests should take this long: a hang fails instead
KEYWORD = SearchAttributeKey.for_keyword("CustomKeywordField")  # registered in every namespace


@pytest.fixture
async def ns_client(db_url: str) -> AsyncIterator[Client]:
    yield await Client.connect(db_url, namespace=new_namespace(db_url, "sa"))


def _ids() -> tuple[str, str]:
    return f"act-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"


@activity.defn
async def add_one(x: int) -> int:
    return x + 1


FLAKY_CALLS: dict[str, int] = {}


@activity.defn
async def flaky(key: str) -> str:
    FLAKY_CALLS[key] = FLAKY_CALLS.get(key, 0) + 1
    if activity.info().attempt < 3:
        raise ApplicationError(f"attempt {activity.info().attempt} fails")
    return f"ok on attempt {activity.info().attempt}"


@activity.defn
async def fails_for_good() -> None:
    raise ApplicationError("no", non_retryable=True)


STARTED: dict[str, asyncio.Event] = {}
SEEN_CANCEL: dict[str, bool] = {}


@activity.defn
async def heartbeats(key: str) -> str:
    STARTED.setdefault(key, asyncio.Event()).set()
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        SEEN_CANCEL[key] = True
        raise


@activity.defn
async def sleeps_past_timeout(key: str) -> str:
    if activity.info().attempt == 1:
        await asyncio.sleep(5)
    return f"attempt {activity.info().attempt}"


ALL = [add_one, flaky, fails_for_good, heartbeats, sleeps_past_timeout]


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, activities=ALL)


async def _result(handle: Any) -> Any:
    return await asyncio.wait_for(handle.result(), WAIT)


async def test_start_result_describe_and_execute(ns_client: Client) -> None:
    aid, tq = _ids()
    handle = await ns_client.start_activity(
        add_one, 41, id=aid, task_queue=tq, start_to_close_timeout=timedelta(seconds=10)
    )
    desc = await handle.describe()
    assert desc.status == ActivityExecutionStatus.RUNNING
    assert desc.run_state == PendingActivityState.SCHEDULED
    assert desc.attempt == 1 and desc.task_queue == tq and desc.activity_type == "add_one"
    assert desc.retry_policy is not None and desc.retry_policy.initial_interval == timedelta(seconds=1)
    async with _worker(ns_client, tq):
        assert await _result(handle) == 42
        # A handle by id alone finds the latest run.
        assert await _result(ns_client.get_activity_handle(aid, result_type=int)) == 42
        result = await asyncio.wait_for(
            ns_client.execute_activity(
                add_one, 1, id=f"{aid}-x", task_queue=tq, schedule_to_close_timeout=timedelta(seconds=10)
            ),
            WAIT,
        )
        assert result == 2
    desc = await handle.describe(include_input=True, include_outcome=True)
    assert desc.status == ActivityExecutionStatus.COMPLETED
    assert desc.close_time is not None and desc.last_started_time is not None
    assert await desc.input([int]) == [41]
    assert await desc.result(int) == 42
    assert desc.run_state is None


async def test_retries_follow_the_policy_and_a_final_failure_is_the_outcome(ns_client: Client) -> None:
    aid, tq = _ids()
    policy = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)
    async with _worker(ns_client, tq):
        handle = await ns_client.start_activity(
            flaky, aid, id=aid, task_queue=tq, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=policy,
        )
        assert await _result(handle) == "ok on attempt 3"
        assert FLAKY_CALLS[aid] == 3
        desc = await handle.describe(include_last_failure=True)
        assert desc.attempt == 3
        assert str(await desc.last_failure()) == "attempt 2 fails"

        failing = await ns_client.start_activity(
            fails_for_good, id=f"{aid}-f", task_queue=tq, start_to_close_timeout=timedelta(seconds=10)
        )
        with pytest.raises(ActivityFailureError) as err:
            await _result(failing)
        assert isinstance(err.value.cause, ApplicationError) and str(err.value.cause) == "no"
        assert (await failing.describe()).status == ActivityExecutionStatus.FAILED


async def test_timeouts(ns_client: Client) -> None:
    aid, tq = _ids()
    async with _worker(ns_client, tq):  # its sweep times out the activity nobody polls for
        nobody = await ns_client.start_activity(
            add_one, 1, id=aid, task_queue=f"{tq}-nobody", schedule_to_close_timeout=timedelta(seconds=1)
        )
        with pytest.raises(ActivityFailureError) as err:
            await _result(nobody)
        assert isinstance(err.value.cause, TimeoutError)
        assert err.value.cause.type == TimeoutType.SCHEDULE_TO_CLOSE
        assert (await nobody.describe()).status == ActivityExecutionStatus.TIMED_OUT

        # A start-to-close timeout fails the attempt; the next one succeeds.
        retried = await ns_client.start_activity(
            sleeps_past_timeout, aid, id=f"{aid}-r", task_queue=tq,
            start_to_close_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
        )
        assert await _result(retried) == "attempt 2"


async def test_id_conflict_and_reuse_policies(ns_client: Client) -> None:
    aid, tq = _ids()
    opts: dict[str, Any] = {"task_queue": tq, "start_to_close_timeout": timedelta(seconds=10)}
    first = await ns_client.start_activity(add_one, 1, id=aid, **opts)
    with pytest.raises(ActivityAlreadyStartedError) as err:
        await ns_client.start_activity(add_one, 1, id=aid, **opts)
    assert err.value.activity_id == aid and err.value.run_id == first.run_id
    same = await ns_client.start_activity(
        add_one, 1, id=aid, id_conflict_policy=ActivityIDConflictPolicy.USE_EXISTING, **opts
    )
    assert same.run_id == first.run_id
    async with _worker(ns_client, tq):
        assert await _result(first) == 2
    with pytest.raises(ActivityAlreadyStartedError):
        await ns_client.start_activity(
            add_one, 1, id=aid, id_reuse_policy=ActivityIDReusePolicy.REJECT_DUPLICATE, **opts
        )
    with pytest.raises(ActivityAlreadyStartedError):  # the last run completed: not a failure
        await ns_client.start_activity(
            add_one, 1, id=aid,
            id_reuse_policy=ActivityIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, **opts,
        )
    second = await ns_client.start_activity(add_one, 5, id=aid, **opts)  # ALLOW_DUPLICATE
    assert second.run_id != first.run_id
    await second.terminate(reason="done with it")
    third = await ns_client.start_activity(
        add_one, 7, id=aid, id_reuse_policy=ActivityIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, **opts
    )
    async with _worker(ns_client, tq):
        assert await _result(third) == 8
    # Each run keeps its own outcome.
    assert await _result(ns_client.get_activity_handle(aid, run_id=first.run_id)) == 2


async def test_cancel_and_terminate(ns_client: Client) -> None:
    aid, tq = _ids()
    opts: dict[str, Any] = {"task_queue": tq, "start_to_close_timeout": timedelta(seconds=30)}
    # Not started yet: cancelled at once.
    queued = await ns_client.start_activity(add_one, 1, id=f"{aid}-q", **opts)
    await queued.cancel(reason="not needed")
    with pytest.raises(ActivityFailureError) as err:
        await _result(queued)
    assert isinstance(err.value.cause, CancelledError)
    desc = await queued.describe()
    assert desc.status == ActivityExecutionStatus.CANCELED and desc.canceled_reason == "not needed"

    async with _worker(ns_client, tq):
        # Running and heartbeating: the attempt is cancelled and reports it.
        running = await ns_client.start_activity(
            heartbeats, f"{aid}-c", id=f"{aid}-c", heartbeat_timeout=timedelta(seconds=5), **opts
        )
        await asyncio.wait_for(STARTED.setdefault(f"{aid}-c", asyncio.Event()).wait(), WAIT)
        await running.cancel()
        with pytest.raises(ActivityFailureError) as err:
            await _result(running)
        assert isinstance(err.value.cause, CancelledError)
        assert SEEN_CANCEL.get(f"{aid}-c")
        desc = await running.describe()
        assert desc.status == ActivityExecutionStatus.CANCELED and desc.total_heartbeat_count > 0

        # Terminated: closed at once; the attempt learns at its next heartbeat.
        doomed = await ns_client.start_activity(
            heartbeats, f"{aid}-t", id=f"{aid}-t", heartbeat_timeout=timedelta(seconds=5), **opts
        )
        await asyncio.wait_for(STARTED.setdefault(f"{aid}-t", asyncio.Event()).wait(), WAIT)
        await doomed.terminate(reason="stop now")
        with pytest.raises(ActivityFailureError) as err:
            await _result(doomed)
        assert isinstance(err.value.cause, TerminatedError)
        assert (await doomed.describe()).status == ActivityExecutionStatus.TERMINATED
        deadline = time.monotonic() + WAIT
        while not SEEN_CANCEL.get(f"{aid}-t"):
            assert time.monotonic() < deadline, "the terminated attempt was never cancelled"
            await asyncio.sleep(0.05)


async def test_list_and_count_filters(ns_client: Client) -> None:
    aid, tq = _ids()
    opts: dict[str, Any] = {"task_queue": tq, "start_to_close_timeout": timedelta(seconds=10)}
    tagged = TypedSearchAttributes([SearchAttributePair(KEYWORD, "blue")])
    done = [
        await ns_client.start_activity(add_one, i, id=f"{aid}-done-{i}", search_attributes=tagged, **opts)
        for i in range(3)
    ]
    async with _worker(ns_client, tq):
        for h in done:
            await _result(h)
    for i in range(2):
        await ns_client.start_activity(
            heartbeats, "x", id=f"{aid}-open-{i}", task_queue=f"{tq}-idle",
            start_to_close_timeout=timedelta(seconds=10),
        )

    async def ids(query: str) -> set[str]:
        return {e.activity_id async for e in ns_client.list_activities(query)}

    assert await ids("") == {f"{aid}-done-{i}" for i in range(3)} | {f"{aid}-open-{i}" for i in range(2)}
    assert await ids("ActivityType = 'add_one'") == {f"{aid}-done-{i}" for i in range(3)}
    assert await ids("ExecutionStatus = 'Running'") == {f"{aid}-open-{i}" for i in range(2)}
    assert await ids(f"TaskQueue = '{tq}' AND CustomKeywordField = 'blue'") == {
        f"{aid}-done-{i}" for i in range(3)
    }
    assert await ids(f"ActivityId STARTS_WITH '{aid}-open'") == {f"{aid}-open-{i}" for i in range(2)}
    assert await ids("CloseTime IS NULL") == {f"{aid}-open-{i}" for i in range(2)}
    listed = [e async for e in ns_client.list_activities(f"ActivityId = '{aid}-done-0'")]
    assert len(listed) == 1 and listed[0].status == ActivityExecutionStatus.COMPLETED
    assert listed[0].typed_search_attributes.get(KEYWORD) == "blue"
    # Paging walks every row once.
    paged = [e.activity_id async for e in ns_client.list_activities("", page_size=2)]
    assert sorted(paged) == sorted(await ids(""))

    assert (await ns_client.count_activities("ActivityType = 'heartbeats'")).count == 2
    grouped = await ns_client.count_activities("GROUP BY ExecutionStatus")
    assert grouped == ActivityExecutionCount(
        count=5,
        groups=[
            ActivityExecutionCountAggregationGroup(count=2, group_values=["Running"]),
            ActivityExecutionCountAggregationGroup(count=3, group_values=["Completed"]),
        ],
    )
    # Workflows and activities are listed apart.
    assert [w async for w in ns_client.list_workflows("")] == []
    with pytest.raises(Exception, match="not a valid search attribute"):
        await ids("WorkflowType = 'x'")


# -- a worker killed in the middle of an attempt -------------------------------------------------


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


async def test_a_killed_workers_attempt_runs_again_on_another_worker(
    db_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    namespace = new_namespace(db_url, "sa")
    aid, tq = _ids()
    marker = tmp_path / "marker.log"
    marker.touch()
    env = dict(os.environ, DBOSIFY_ACTIVATE="1", PYTHONUNBUFFERED="1", DBOSIFY_HOME=str(tmp_path / "home"))
    env.pop("DBOSIFY_DATABASE_URL", None)
    logs = []
    for i in range(2):
        log = tmp_path / f"worker-{i}.log"
        logs.append(log)
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, str(APP), db_url, namespace, tq, str(marker)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            ))

    async def until(cond: Any, what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while not (got := cond()):
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
                raise AssertionError(f"timed out waiting for {what}; marker: {marker.read_text()}\n{tails}")
            await asyncio.sleep(0.05)
        return got

    for p, log in zip(procs, logs, strict=True):
        await until(lambda p=p, log=log: f"worker {p.pid} running" in log.read_text(), f"worker {p.pid}")

    def marks(phase: str) -> list[tuple[int, int]]:
        lines = marker.read_text().splitlines()
        return [(int(a), int(pid)) for ph, a, pid in (ln.split(":") for ln in lines) if ph == phase]

    client = await Client.connect(db_url, namespace=namespace)
    handle = await client.start_activity(
        "slow", 3.0, id=aid, task_queue=tq, start_to_close_timeout=timedelta(seconds=60),
        heartbeat_timeout=timedelta(seconds=30),
    )
    first = await until(lambda: marks("start"), "the first attempt to start")
    assert first[0][0] == 1
    victim = next(p for p in procs if p.pid == first[0][1])
    survivor = next(p for p in procs if p is not victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    killed = time.monotonic()
    assert await _result(handle) == "slept 3.0 in attempt 2"
    # A dead local worker is seen by PID at once, not after the 5 s liveness expiry.
    assert time.monotonic() - killed < 15
    assert marks("start") == [(1, victim.pid), (2, survivor.pid)]
    assert marks("done") == [(2, survivor.pid)]
    desc = await handle.describe()
    assert desc.status == ActivityExecutionStatus.COMPLETED and desc.attempt == 2
