"""Durable execution features through the unmodified temporalio API, on Postgres and SQLite."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.common import RetryPolicy, WorkflowIDConflictPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

ATTEMPTS: dict[str, list[int]] = {}


@activity.defn
async def greet(name: str) -> str:
    return f"Hello, {name}!"


@activity.defn
def greet_sync(name: str) -> str:
    return f"Hi, {name}!"


@activity.defn
async def flaky(key: str) -> int:
    attempt = activity.info().attempt
    ATTEMPTS.setdefault(key, []).append(attempt)
    if attempt < 3:
        raise ApplicationError(f"attempt {attempt} failed")
    return attempt


@activity.defn
async def fails_hard(key: str) -> None:
    ATTEMPTS.setdefault(key, []).append(activity.info().attempt)
    raise ApplicationError("bad input", type="BadInput", non_retryable=True)


@activity.defn
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slow done"


@activity.defn
async def wait_cancel() -> str:
    while True:
        activity.heartbeat()
        await asyncio.sleep(0.05)


@workflow.defn
class GreetingWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        a = await workflow.execute_activity(greet, name, start_to_close_timeout=timedelta(seconds=10))
        b = await workflow.execute_activity(greet_sync, name, start_to_close_timeout=timedelta(seconds=10))
        return a + " " + b


@workflow.defn
class RetryWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            flaky, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50)),
        )


@workflow.defn
class NonRetryableWorkflow:
    @workflow.run
    async def run(self, key: str) -> None:
        await workflow.execute_activity(
            fails_hard, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50)),
        )


@workflow.defn
class TimeoutWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            slow, 5.0, start_to_close_timeout=timedelta(milliseconds=300),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@workflow.defn
class SignalQueryUpdateWorkflow:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.done = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.items

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def count(self) -> int:
        return len(self.items)

    @workflow.update
    async def add_and_count(self, item: str) -> int:
        await workflow.sleep(0.01)
        self.items.append(item)
        return len(self.items)

    @add_and_count.validator
    def _validate(self, item: str) -> None:
        if not item:
            raise ValueError("empty item")


@workflow.defn
class TimerWorkflow:
    @workflow.run
    async def run(self) -> list[float]:
        t0 = workflow.now()
        await workflow.sleep(0.3)
        t1 = workflow.now()
        hit = await workflow.wait_condition(lambda: False, timeout=0.2) if False else None
        try:
            await workflow.wait_condition(lambda: False, timeout=0.2)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        assert hit is None and timed_out
        workflow.random().random()
        workflow.uuid4()
        return [(t1 - t0).total_seconds()]


@workflow.defn
class ChildWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        return n * 2


@workflow.defn
class ParentWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        return await workflow.execute_child_workflow(ChildWorkflow.run, n, id=workflow.info().workflow_id + "-child")


@workflow.defn
class ContinueWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        if n < 3:
            workflow.continue_as_new(n + 1)
        return n


@workflow.defn
class CancelWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            wait_cancel, start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=5),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )


@workflow.defn
class WaitForeverWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn
class RetriedWorkflow:
    @workflow.run
    async def run(self) -> int:
        if workflow.info().attempt < 3:
            raise ApplicationError(f"attempt {workflow.info().attempt}")
        return workflow.info().attempt


@workflow.defn
class RandomWorkflow:
    def __init__(self) -> None:
        self.value = ""

    @workflow.run
    async def run(self) -> str:
        self.value = str(workflow.uuid4())
        return self.value

    @workflow.query
    def current(self) -> str:
        return self.value


@workflow.defn(name="GreetingWorkflow")
class ChangedGreeting:
    """GreetingWorkflow's code changed incompatibly: replaying old histories must fail."""

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.sleep(1)
        return name


RACE_STARTED: dict[str, threading.Event] = {}


@activity.defn
async def race_activity(key: str) -> str:
    RACE_STARTED[key].set()
    await asyncio.sleep(0.3)
    return "completed"


@activity.defn
async def heartbeat_then_stall() -> None:
    activity.heartbeat("last words")
    await asyncio.sleep(5)


@workflow.defn
class HeartbeatTimeoutWorkflow:
    @workflow.run
    async def run(self) -> list[str]:
        try:
            await workflow.execute_activity(
                heartbeat_then_stall,
                start_to_close_timeout=timedelta(seconds=10),
                heartbeat_timeout=timedelta(seconds=1),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            assert isinstance(err.cause, TimeoutError)
            return [str(d) for d in err.cause.last_heartbeat_details]
        return []


@workflow.defn
class QueuedTooLongWorkflow:
    """Two activities, one slot: the second waits in the queue past its schedule-to-start."""

    @workflow.run
    async def run(self) -> str:
        # The first is older, so it is claimed first, however late (a loaded machine): only the
        # second can time out in the queue.
        first = workflow.start_activity(
            slow, 2.5, schedule_to_start_timeout=timedelta(seconds=30), start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.sleep(0.5)
        try:
            await workflow.execute_activity(
                slow, 0.1, schedule_to_start_timeout=timedelta(seconds=1), start_to_close_timeout=timedelta(seconds=10)
            )
        except ActivityError as err:
            assert isinstance(err.cause, TimeoutError)
            await first
            return err.cause.type.name
        return "no timeout"


@activity.defn
async def slow_first_attempt_fails() -> str:
    if activity.info().attempt == 1:
        await asyncio.sleep(1.2)
        raise ApplicationError("first attempt fails")
    return "retried"


@workflow.defn
class RetryQueuedTooLongWorkflow:
    """The retry, not the first attempt, waits in the queue past its schedule-to-start."""

    @workflow.run
    async def run(self) -> str:
        flaky_one = workflow.start_activity(
            slow_first_attempt_fails,
            schedule_to_start_timeout=timedelta(seconds=1),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=0.1)),
        )
        await workflow.sleep(0.3)
        # Queued behind the first attempt; takes the only slot when that attempt ends.
        blocker = workflow.start_activity(slow, 3.0, start_to_close_timeout=timedelta(seconds=10))
        try:
            await flaky_one
        except ActivityError as err:
            assert isinstance(err.cause, TimeoutError)
            await blocker
            return err.cause.type.name
        return "no timeout"


@workflow.defn
class CancelRaceWorkflow:
    """Cancels its activity after that activity has finished, within one workflow task."""

    def __init__(self) -> None:
        self.handle: workflow.ActivityHandle[str] | None = None

    @workflow.run
    async def run(self, key: str) -> str:
        self.handle = workflow.start_activity(
            race_activity, key, start_to_close_timeout=timedelta(seconds=10)
        )
        try:
            return await self.handle
        except ActivityError as err:
            return type(err.cause).__name__

    @workflow.signal
    def cancel_late(self) -> None:
        import time

        time.sleep(1.0)  # the activity completes while this workflow task runs
        assert self.handle is not None
        self.handle.cancel()


@workflow.defn
class CloseWithUpdateWorkflow:
    """Returns in the same activation in which an update handler finishes."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.done)
        return "closed"

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.update
    async def wait_done(self) -> str:
        await workflow.wait_condition(lambda: self.done)
        return "updated"


ALL_WORKFLOWS = [
    RetryQueuedTooLongWorkflow, QueuedTooLongWorkflow, HeartbeatTimeoutWorkflow, CloseWithUpdateWorkflow, CancelRaceWorkflow,
    GreetingWorkflow, RetryWorkflow, NonRetryableWorkflow, TimeoutWorkflow, SignalQueryUpdateWorkflow,
    TimerWorkflow, ChildWorkflow, ParentWorkflow, ContinueWorkflow, CancelWorkflow, WaitForeverWorkflow,
    RetriedWorkflow, RandomWorkflow,
]
ALL_ACTIVITIES = [slow_first_attempt_fails, heartbeat_then_stall, race_activity, greet, greet_sync, flaky, fails_hard, slow, wait_cancel]


def worker(client: Client, tq: str, *, sandbox: bool = False, **kw: object) -> Worker:
    """A worker with every workflow; unsandboxed unless asked (the sandbox costs ~2 s per start)."""
    from concurrent.futures import ThreadPoolExecutor

    if not sandbox:
        kw.setdefault("workflow_runner", UnsandboxedWorkflowRunner())
    return Worker(
        client, task_queue=tq, workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES,
        activity_executor=ThreadPoolExecutor(4), **kw,  # type: ignore[arg-type]
    )


def wid() -> str:
    return f"wf-{uuid.uuid4().hex[:10]}"


async def test_activities_async_and_sync(client: Client) -> None:
    tq = wid()
    async with worker(client, tq, sandbox=True):
        r = await client.execute_workflow(GreetingWorkflow.run, "World", id=wid(), task_queue=tq)
    assert r == "Hello, World! Hi, World!"


async def test_unsandboxed_runner(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        r = await client.execute_workflow(GreetingWorkflow.run, "X", id=wid(), task_queue=tq)
    assert r == "Hello, X! Hi, X!"


async def test_retry_with_backoff(client: Client) -> None:
    tq, key = wid(), wid()
    async with worker(client, tq):
        r = await client.execute_workflow(RetryWorkflow.run, key, id=wid(), task_queue=tq)
    assert r == 3
    assert ATTEMPTS[key] == [1, 2, 3]


async def test_non_retryable_failure_chain(client: Client) -> None:
    tq, key = wid(), wid()
    async with worker(client, tq):
        with pytest.raises(WorkflowFailureError) as info:
            await client.execute_workflow(NonRetryableWorkflow.run, key, id=wid(), task_queue=tq)
    assert ATTEMPTS[key] == [1]
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "BadInput" and cause.cause.non_retryable
    assert cause.cause.message == "bad input"


async def test_start_to_close_timeout(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        with pytest.raises(WorkflowFailureError) as info:
            await client.execute_workflow(TimeoutWorkflow.run, id=wid(), task_queue=tq)
    assert isinstance(info.value.cause, ActivityError)
    assert isinstance(info.value.cause.cause, TimeoutError)
    assert info.value.cause.message == "Activity task timed out"  # Core's wording (a failure: "failed")


async def test_signal_query_update(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(SignalQueryUpdateWorkflow.run, id=wid(), task_queue=tq)
        await handle.signal(SignalQueryUpdateWorkflow.add, "a")
        await handle.signal(SignalQueryUpdateWorkflow.add, "b")
        assert await handle.query(SignalQueryUpdateWorkflow.count) == 2
        assert await handle.execute_update(SignalQueryUpdateWorkflow.add_and_count, "c") == 3
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(SignalQueryUpdateWorkflow.add_and_count, "")
        await handle.signal(SignalQueryUpdateWorkflow.finish)
        assert await handle.result() == ["a", "b", "c"]
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.COMPLETED
        # A query does not write to the run's history.
        events = [e async for e in handle.fetch_history_events()]
        assert not any(e.HasField("workflow_task_failed_event_attributes") for e in events)
        with pytest.raises(RPCError) as err:
            await handle.signal(SignalQueryUpdateWorkflow.add, "late")
        assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_signals_before_worker_are_buffered(client: Client) -> None:
    tq = wid()
    handle = await client.start_workflow(SignalQueryUpdateWorkflow.run, id=wid(), task_queue=tq)
    await handle.signal(SignalQueryUpdateWorkflow.add, "early")
    await handle.signal(SignalQueryUpdateWorkflow.finish)
    async with worker(client, tq):
        assert await handle.result() == ["early"]


async def test_timers_and_determinism(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        (elapsed,) = await client.execute_workflow(TimerWorkflow.run, id=wid(), task_queue=tq)
    assert 0.3 <= elapsed < 2.0


async def test_child_workflow(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        assert await client.execute_workflow(ParentWorkflow.run, 21, id=wid(), task_queue=tq) == 42


async def test_continue_as_new_result_follows_runs(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(ContinueWorkflow.run, 0, id=wid(), task_queue=tq)
        assert await handle.result() == 3


async def test_cancel_workflow_and_activity(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(CancelWorkflow.run, id=wid(), task_queue=tq)
        await asyncio.sleep(0.5)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        assert isinstance(info.value.cause, CancelledError)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_terminate_keeps_reason(client: Client) -> None:
    tq = wid()
    handle = await client.start_workflow(WaitForeverWorkflow.run, id=wid(), task_queue=tq)
    await handle.terminate(reason="enough")
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, TerminatedError)
    assert info.value.cause.message == "enough"


async def test_already_started_and_conflict_policy(client: Client) -> None:
    tq, id_ = wid(), wid()
    h1 = await client.start_workflow(WaitForeverWorkflow.run, id=id_, task_queue=tq)
    with pytest.raises(WorkflowAlreadyStartedError):
        await client.start_workflow(WaitForeverWorkflow.run, id=id_, task_queue=tq)
    h2 = await client.start_workflow(
        WaitForeverWorkflow.run, id=id_, task_queue=tq,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    assert h2.result_run_id == h1.result_run_id
    await h1.terminate()


async def test_not_found_errors(client: Client) -> None:
    handle = client.get_workflow_handle("does-not-exist")
    with pytest.raises(RPCError) as err:
        await handle.describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as err:
        await handle.signal("x")
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_signal_with_start(client: Client) -> None:
    tq, id_ = wid(), wid()
    async with worker(client, tq):
        handle = await client.start_workflow(
            SignalQueryUpdateWorkflow.run, id=id_, task_queue=tq,
            start_signal="add", start_signal_args=["first"],
        )
        await handle.signal(SignalQueryUpdateWorkflow.finish)
        assert await handle.result() == ["first"]


async def test_unknown_workflow_type_is_a_task_failure(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow("NoSuchWorkflow", id=wid(), task_queue=tq)
        for _ in range(50):
            events = [e async for e in handle.fetch_history_events()]
            if any(e.HasField("workflow_task_failed_event_attributes") for e in events):
                break
            await asyncio.sleep(0.1)
        failed = [e for e in events if e.HasField("workflow_task_failed_event_attributes")]
        assert failed and "NoSuchWorkflow" in failed[0].workflow_task_failed_event_attributes.failure.message
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.terminate()


async def test_unserialisable_argument_fails_at_start(client: Client) -> None:
    with pytest.raises(TypeError):
        await client.start_workflow(GreetingWorkflow.run, object(), id=wid(), task_queue="x")  # type: ignore[arg-type]


async def test_bad_database_url_names_host_not_password() -> None:
    with pytest.raises(RuntimeError) as err:
        await Client.connect("postgresql://alice:s3cret@127.0.0.1:1/nodb")
    assert "127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)


async def test_query_after_completion_replays_the_run(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(SignalQueryUpdateWorkflow.run, id=wid(), task_queue=tq)
        await handle.signal(SignalQueryUpdateWorkflow.add, "x")
        await handle.signal(SignalQueryUpdateWorkflow.finish)
        assert await handle.result() == ["x"]
        assert await handle.query(SignalQueryUpdateWorkflow.count) == 1


async def test_replayer_accepts_own_history_and_detects_nondeterminism(client: Client) -> None:
    from temporalio.worker import Replayer
    from temporalio.workflow import NondeterminismError

    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(GreetingWorkflow.run, "R", id=wid(), task_queue=tq)
        await handle.result()
        child = await client.start_workflow(ParentWorkflow.run, 2, id=wid(), task_queue=tq)
        await child.result()
    history = await handle.fetch_history()
    await Replayer(workflows=[GreetingWorkflow], workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(history)
    await Replayer(workflows=[ParentWorkflow], workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(
        await child.fetch_history()
    )
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[ChangedGreeting], workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(history)


async def test_workflow_retry_policy_runs_new_attempts(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(
            RetriedWorkflow.run, id=wid(), task_queue=tq,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=5),
        )
        assert await handle.result() == 3


async def test_start_delay(client: Client) -> None:
    import time as _time

    tq = wid()
    async with worker(client, tq):
        t0 = _time.monotonic()
        handle = await client.start_workflow(
            GreetingWorkflow.run, "D", id=wid(), task_queue=tq, start_delay=timedelta(seconds=0.5)
        )
        assert await handle.result() == "Hello, D! Hi, D!"
        assert _time.monotonic() - t0 >= 0.5


async def test_cancel_closed_is_noop_and_count_group_by(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(GreetingWorkflow.run, "C", id=wid(), task_queue=tq)
        await handle.result()
        await handle.cancel()  # accepted, does nothing
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    other = await client.start_workflow(WaitForeverWorkflow.run, id=wid(), task_queue=tq)
    count = await client.count_workflows(f"TaskQueue = '{tq}' GROUP BY ExecutionStatus")
    assert count.count == 2
    assert sorted((g.group_values[0], g.count) for g in count.groups) == [("Completed", 1), ("Running", 1)]
    assert [w.id async for w in client.list_workflows(f"WorkflowId = '{other.id}'")] == [other.id]
    await other.terminate()


async def test_unknown_query_and_update_names_fail_clearly(client: Client) -> None:
    from temporalio.client import WorkflowQueryFailedError

    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(SignalQueryUpdateWorkflow.run, id=wid(), task_queue=tq)
        with pytest.raises(WorkflowQueryFailedError) as q:
            await handle.query("no_such_query")
        assert "no_such_query" in str(q.value)
        with pytest.raises(WorkflowUpdateFailedError) as u:
            await handle.execute_update("no_such_update")
        assert "no_such_update" in str(u.value.cause)
        await handle.terminate()
        with pytest.raises(RPCError) as closed:
            await handle.execute_update(SignalQueryUpdateWorkflow.add_and_count, "late")
        assert closed.value.status == RPCStatusCode.NOT_FOUND


async def test_activity_runs_on_any_worker_polling_its_queue(client: Client) -> None:
    tq = wid()
    workflows_only = Worker(
        client, task_queue=tq, workflows=[GreetingWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    )
    from concurrent.futures import ThreadPoolExecutor

    activities_only = Worker(
        client, task_queue=tq, activities=[greet, greet_sync], activity_executor=ThreadPoolExecutor(2)
    )
    async with workflows_only, activities_only:
        r = await client.execute_workflow(GreetingWorkflow.run, "Q", id=wid(), task_queue=tq)
    assert r == "Hello, Q! Hi, Q!"


async def test_several_workers_started_and_stopped_repeatedly(client: Client) -> None:
    queues = [wid(), wid()]
    for _ in range(3):
        workers = [worker(client, q) for q in queues]
        for w in workers:
            await w.__aenter__()
        try:
            results = await asyncio.gather(
                *(client.execute_workflow(GreetingWorkflow.run, q, id=wid(), task_queue=q) for q in queues)
            )
        finally:
            for w in workers:
                await w.__aexit__(None, None, None)
        assert results == [f"Hello, {q}! Hi, {q}!" for q in queues]


async def test_namespaces_are_isolated(client: Client, db_url: str) -> None:
    from conftest import new_namespace  # not at the top: sandboxed workflows re-import this module

    other = await Client.connect(db_url, namespace=new_namespace(db_url, "other"))
    handle = await client.start_workflow(WaitForeverWorkflow.run, id=wid(), task_queue=wid())
    with pytest.raises(RPCError) as err:
        await other.get_workflow_handle(handle.id).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND
    await handle.terminate()


async def test_randomness_differs_between_runs_and_replays_identically(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        h1 = await client.start_workflow(RandomWorkflow.run, id=wid(), task_queue=tq)
        h2 = await client.start_workflow(RandomWorkflow.run, id=wid(), task_queue=tq)
        v1, v2 = await h1.result(), await h2.result()
        assert v1 != v2
        # A query on the closed run replays it: the same seed gives the same value.
        assert await h1.query(RandomWorkflow.current) == v1


async def test_waiting_runs_do_not_poll_the_database(client: Client, db_url: str) -> None:
    """Runs waiting for a signal cost nothing while idle; a signal still wakes each one.

    On SQLite, where other processes cannot notify us, one watcher per process reads the
    notices table; the waiting runs themselves must not re-read their history on a timer.
    """
    if not db_url.startswith("sqlite"):
        pytest.skip("statement tracing is SQLite's; Postgres waits were push-only before this")
    from dbosify._store import get_store

    tq = wid()
    async with worker(client, tq):
        handles = [
            await client.start_workflow(SignalQueryUpdateWorkflow.run, id=wid(), task_queue=tq)
            for _ in range(20)
        ]
        for h in handles:  # each has run its first workflow task and is now waiting
            assert await h.query(SignalQueryUpdateWorkflow.count) == 0
        # A driver takes one more look after answering a query; let those finish under load.
        await asyncio.sleep(0.5)
        conn, _lock = get_store(db_url)._sqlite_conns[client.namespace]
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        try:
            await asyncio.sleep(1.0)
        finally:
            conn.set_trace_callback(None)
        history_reads = [s for s in statements if "history" in s]
        assert history_reads == [], f"{len(history_reads)} history reads by idle runs"
        for h in handles:
            await h.signal(SignalQueryUpdateWorkflow.finish)
        assert [await h.result() for h in handles] == [[]] * 20


async def test_try_cancel_wins_over_a_result_that_raced_in(client: Client) -> None:
    """Core resolves a TRY_CANCEL activity as cancelled at once, even if its result raced in."""
    tq = wid()
    async with worker(client, tq):
        key = wid()
        RACE_STARTED[key] = threading.Event()
        handle = await client.start_workflow(CancelRaceWorkflow.run, key, id=wid(), task_queue=tq)
        assert await asyncio.to_thread(RACE_STARTED[key].wait, 10)
        await handle.signal(CancelRaceWorkflow.cancel_late)
        assert await handle.result() == "CancelledError"
        history = await handle.fetch_history()
        assert any(e.HasField("activity_task_completed_event_attributes") for e in history.events)
        # The history replays to the same outcome, with no nondeterminism.
        from temporalio.worker import Replayer

        replayed = await Replayer(
            workflows=[CancelRaceWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
        ).replay_workflow(history)
        assert replayed.replay_failure is None


async def test_close_event_is_last_even_if_an_update_finishes_with_it(client: Client) -> None:
    """As in Core, a closing command goes after the commands sent with it; result() then returns."""
    from temporalio.client import WorkflowUpdateStage

    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(CloseWithUpdateWorkflow.run, id=wid(), task_queue=tq)
        upd = await handle.start_update(
            CloseWithUpdateWorkflow.wait_done, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await handle.signal(CloseWithUpdateWorkflow.finish)
        assert await asyncio.wait_for(handle.result(), 20) == "closed"
        assert await upd.result() == "updated"
        events = [e async for e in handle.fetch_history_events()]
        assert events[-1].HasField("workflow_execution_completed_event_attributes")
        assert any(e.HasField("workflow_execution_update_completed_event_attributes") for e in events)
        from temporalio.worker import Replayer

        replayed = await Replayer(
            workflows=[CloseWithUpdateWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
        ).replay_workflow(await handle.fetch_history())
        assert replayed.replay_failure is None


async def test_each_start_local_environment_is_its_own_server(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two start_local() environments on one configured database do not see each other's work,
    as two dev servers would not; a Postgres environment's schemas go when it shuts down."""
    from temporalio.testing import WorkflowEnvironment

    monkeypatch.setenv("DBOSIFY_DATABASE_URL", db_url)
    tq = wid()
    async with await WorkflowEnvironment.start_local() as e1:
        async with await WorkflowEnvironment.start_local() as e2:
            async with worker(e1.client, tq):
                handle = await e2.client.start_workflow(
                    GreetingWorkflow.run, "x", id=wid(), task_queue=tq
                )
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(handle.result(), 1.5)
                assert await e1.client.execute_workflow(
                    GreetingWorkflow.run, "World", id=wid(), task_queue=tq
                ) == "Hello, World! Hi, World!"
        target = e1.client.service_client.config.target_host
    if db_url.startswith("postgresql"):
        import psycopg

        server = target.rsplit("dbosify_server=", 1)[1]
        with psycopg.connect(db_url) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", (f"dbosify_{server}_%",)
            ).fetchone()
        assert left == (0,)


async def test_heartbeat_timeout_carries_the_last_heartbeat_details(client: Client) -> None:
    tq = wid()
    async with worker(client, tq):
        details = await client.execute_workflow(HeartbeatTimeoutWorkflow.run, id=wid(), task_queue=tq)
    assert details == ["last words"]


async def test_schedule_to_start_timeout_of_a_queued_activity(client: Client) -> None:
    tq = wid()
    async with worker(client, tq, max_concurrent_activities=1):
        kind = await client.execute_workflow(QueuedTooLongWorkflow.run, id=wid(), task_queue=tq)
    assert kind == "SCHEDULE_TO_START"


async def test_schedule_to_start_timeout_of_a_queued_retry(client: Client) -> None:
    """Schedule-to-start applies to each attempt, also to a retry queued after a long first one."""
    tq = wid()
    async with worker(client, tq, max_concurrent_activities=1):
        kind = await client.execute_workflow(RetryQueuedTooLongWorkflow.run, id=wid(), task_queue=tq)
    assert kind == "SCHEDULE_TO_START"


async def test_history_long_poll_sees_events_the_driver_writes(client: Client) -> None:
    """Following a run's history (wait_new_event) wakes for every event, the close event included,
    although a driver does not wake itself for what it writes."""
    tq = wid()
    async with worker(client, tq):
        handle = await client.start_workflow(SignalQueryUpdateWorkflow.run, id=wid(), task_queue=tq)

        async def follow() -> list[str]:
            seen = []
            async for e in handle.fetch_history_events(wait_new_event=True):
                seen.append(e.WhichOneof("attributes"))
                if e.HasField("workflow_execution_completed_event_attributes"):
                    break
            return seen

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.3)  # the follower waits now
        await handle.signal(SignalQueryUpdateWorkflow.finish)
        seen = await asyncio.wait_for(follower, 10)
    assert seen[-1] == "workflow_execution_completed_event_attributes"
    assert "workflow_task_completed_event_attributes" in seen
