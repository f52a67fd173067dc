"""Activity results that finish together are group-committed; histories stay exact.

A burst of completions (many parallel activities in several runs) goes through the batched
recording path (dbosify/_worker/results.py, _activity_tasks.finish_batch). Each run's history
must still be Temporal's: contiguous event ids, one started and one completed event per
activity, results in the workflow, and a clean replay.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio import activity, converter, workflow
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Replayer, Worker

from dbosify._engine import activity_tasks as acts
from dbosify._store import get_store
from dbosify._store.store import FACT

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
        # HistorySizeBytes counts the batched events too (estimated envelopes: within 10%).
        size = (await h.describe()).raw_description.workflow_execution_info.history_size_bytes
        exact = sum(e.ByteSize() for e in history.events)
        assert abs(size - exact) <= exact / 10, (size, exact)
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


@workflow.defn
class OneSquare:
    @workflow.run
    async def run(self, n: int) -> int:
        return await workflow.execute_activity(
            square, n, start_to_close_timeout=timedelta(seconds=30)  # type: ignore[arg-type]
        )


async def test_batch_records_only_the_current_attempt(client: Client) -> None:
    """In one batch (coalesced on Postgres), a stale attempt's result is refused and the
    current attempt's is recorded; the same result again is refused."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    store = get_store(client.service_client.config.target_host)
    ns = client.namespace
    async with Worker(client, task_queue=tq, workflows=[OneSquare]):  # nobody runs the activity
        h = await client.start_workflow(OneSquare.run, 7, id=f"one-{uuid.uuid4().hex[:8]}", task_queue=tq)
        run_id = h.result_run_id
        assert run_id
        rows: list[tuple[int, int, int]] = []
        for _ in range(200):
            rows = await store.transact(ns, lambda tx: tx.all(
                "SELECT seq, attempt, scheduled_event_id FROM activity_tasks WHERE run_id = %s", (run_id,)
            ))
            if rows:
                break
            await asyncio.sleep(0.05)
        [(seq, _, sched)] = rows
        # As if a worker had claimed the second attempt (the first one was taken over).
        await store.transact(ns, lambda tx: tx.execute(
            "UPDATE activity_tasks SET state = 'running', owner = 'someone', attempt = 2"
            " WHERE run_id = %s AND seq = %s", (run_id, seq),
        ))
        [payload] = converter.default().payload_converter.to_payloads([49])
        result = common.Payloads(payloads=[payload])

        def record(attempts: list[int]) -> list[bool]:
            outcomes: list[acts.Outcome] = [(run_id, seq, a, "completed", result) for a in attempts]
            return store.transact_sync(
                ns, lambda tx: acts.finish_batch(tx, outcomes, "test", [sched] * len(outcomes)),
                lane=FACT, coalesced=True,
            )

        assert await asyncio.to_thread(record, [1, 2, 3]) == [False, True, False]
        assert await asyncio.to_thread(record, [2]) == [False]
        assert await h.result() == 49
    history = await h.fetch_history()
    assert [e.event_id for e in history.events] == list(range(1, len(history.events) + 1))
    kinds = [e.event_type for e in history.events]
    assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED) == 1
    started = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    assert started.activity_task_started_event_attributes.attempt == 2


async def test_completions_go_straight_from_the_event_loop(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Postgres a completed attempt is recorded from the worker's event loop in one
    statement: the results lane's threads are not needed (each hand-off to a thread costs a
    wait for the interpreter lock under load, and widens the window in which a crash re-runs
    a finished activity)."""
    store = get_store(client.service_client.config.target_host)
    if store.is_sqlite:
        pytest.skip("SQLite records results on the results lane")
    submit = store.submit
    lanes: list[str] = []

    def watched(lane: str, fn: Callable[[], None]) -> None:
        lanes.append(lane)
        submit(lane, fn)

    monkeypatch.setattr(store, "submit", watched)
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[OneSquare], activities=[square]):
        handles = [
            await client.start_workflow(OneSquare.run, i, id=f"direct-{uuid.uuid4().hex[:8]}", task_queue=tq)
            for i in range(20)
        ]
        assert await asyncio.gather(*(h.result() for h in handles)) == [i * i for i in range(20)]
    assert FACT not in lanes, "a completed result went to the results lane's threads"
    for h in handles[:3]:
        history = await h.fetch_history()
        assert [e.event_id for e in history.events] == list(range(1, len(history.events) + 1))
        await Replayer(workflows=[OneSquare]).replay_workflow(history)


@pytest.mark.parametrize("event_id", [1, 127, 128, 300, 16383, 16384, 2097151, 2097152, 2**28 - 1])
def test_event_id_field_appended_in_sql(_pg_session_url: str, event_id: int) -> None:
    """The statement appends each event's id as protobuf field 1; it reads back exactly."""
    import psycopg

    from dbosify._engine.completed_results import varint_field_sql

    event = hist.HistoryEvent(event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    event.event_time.FromNanoseconds(1_700_000_000_123_456_789)
    with psycopg.connect(_pg_session_url) as conn:
        row = conn.execute(
            f"SELECT b || {varint_field_sql('x')} FROM (SELECT %s::bytea AS b, %s::bigint AS x) v",
            (event.SerializeToString(), event_id),
        ).fetchone()
    assert row is not None
    parsed = hist.HistoryEvent.FromString(bytes(row[0]))
    assert parsed.event_id == event_id
    event.event_id = event_id
    assert parsed == event
    assert len(row[0]) == len(event.SerializeToString())
