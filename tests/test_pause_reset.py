"""Activity pause, unpause and reset, and workflow reset, on real databases."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import (
    EventType,
    PendingActivityState,
    ResetReapplyType,
    WorkflowTaskFailedCause,
)
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.api.workflowservice.v1 import (
    PauseActivityRequest,
    ResetActivityRequest,
    ResetWorkflowExecutionRequest,
    UnpauseActivityRequest,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def pending(handle: WorkflowHandle[Any, Any], activity_id: str) -> PendingActivityInfo:
    desc = await handle.describe()
    for pa in desc.raw_description.pending_activities:
        if pa.activity_id == activity_id:
            return pa
    raise AssertionError(f"no pending activity {activity_id!r}")


def execution(handle: WorkflowHandle[Any, Any]) -> WorkflowExecution:
    return WorkflowExecution(workflow_id=handle.id, run_id=handle.result_run_id or "")


# -- pause and unpause ------------------------------------------------------------------------

started_attempts: list[int] = []
cancel_details: list[activity.ActivityCancellationDetails | None] = []


@activity.defn
async def works_until_paused() -> str:
    started_attempts.append(activity.info().attempt)
    if activity.info().attempt > 1:
        return f"done on attempt {activity.info().attempt}"
    try:
        while True:
            activity.heartbeat("working")
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        cancel_details.append(activity.cancellation_details())
        raise


@workflow.defn
class PausedActivityWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            works_until_paused,
            activity_id="pausable",
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=2),
        )


async def test_pause_then_unpause_an_activity(client: Client) -> None:
    started_attempts.clear()
    cancel_details.clear()
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[PausedActivityWorkflow],
                      activities=[works_until_paused], workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(PausedActivityWorkflow.run, id=f"w-{uuid.uuid4()}", task_queue=tq)

        async def running() -> PendingActivityInfo:
            pa = await pending(handle, "pausable")
            assert pa.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            return pa

        await eventually(running)
        await client.workflow_service.pause_activity(PauseActivityRequest(
            namespace=client.namespace, execution=execution(handle), id="pausable",
            identity="operator", reason="maintenance",
        ))
        # Pausing twice is refused, as on Temporal.
        with pytest.raises(RPCError) as again:
            await client.workflow_service.pause_activity(PauseActivityRequest(
                namespace=client.namespace, execution=execution(handle), id="pausable",
            ))
        assert again.value.status == RPCStatusCode.FAILED_PRECONDITION

        # The running attempt is cancelled at its next heartbeat, as paused; the next attempt waits.
        async def waiting() -> PendingActivityInfo:
            pa = await pending(handle, "pausable")
            assert pa.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED, pa
            return pa

        pa = await eventually(waiting)
        assert cancel_details == [activity.ActivityCancellationDetails(paused=True)]
        assert pa.paused and pa.attempt == 2
        assert pa.pause_info.manual.identity == "operator"
        assert pa.pause_info.manual.reason == "maintenance"
        assert pa.heartbeat_details.payloads  # the attempt's last details are kept
        await asyncio.sleep(1.5)  # well past the retry interval: still no new attempt
        assert started_attempts == [1]

        await client.workflow_service.unpause_activity(UnpauseActivityRequest(
            namespace=client.namespace, execution=execution(handle), id="pausable",
        ))
        assert await asyncio.wait_for(handle.result(), 15) == "done on attempt 2"
        assert started_attempts == [1, 2]


async def test_pause_of_an_unknown_activity_is_not_found(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[SignalledWorkflow],
                      activities=[count_calls], workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(SignalledWorkflow.run, id=f"w-{uuid.uuid4()}", task_queue=tq)
        with pytest.raises(RPCError) as err:
            await client.workflow_service.pause_activity(PauseActivityRequest(
                namespace=client.namespace, execution=execution(handle), id="nope",
            ))
        assert err.value.status == RPCStatusCode.NOT_FOUND
        await handle.terminate("done")


# -- reset of an activity's attempts --------------------------------------------------------------

flaky_attempts: list[int] = []


@activity.defn
async def fails_once_more() -> str:
    flaky_attempts.append(activity.info().attempt)
    if len(flaky_attempts) < 2:
        raise ApplicationError("not yet")
    return f"done on attempt {activity.info().attempt}"


@workflow.defn
class RetryingWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            fails_once_more,
            activity_id="flaky",
            start_to_close_timeout=timedelta(seconds=30),
            # The second attempt would wait an hour: only a reset brings it on now.
            retry_policy=RetryPolicy(initial_interval=timedelta(hours=1)),
        )


async def test_reset_restarts_the_attempts(client: Client) -> None:
    flaky_attempts.clear()
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[RetryingWorkflow],
                      activities=[fails_once_more], workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(RetryingWorkflow.run, id=f"w-{uuid.uuid4()}", task_queue=tq)

        async def backing_off() -> None:
            pa = await pending(handle, "flaky")
            assert pa.attempt == 2 and pa.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
            assert pa.last_failure.message == "not yet"

        await eventually(backing_off)
        await client.workflow_service.reset_activity(ResetActivityRequest(
            namespace=client.namespace, execution=execution(handle), id="flaky",
        ))
        assert await asyncio.wait_for(handle.result(), 15) == "done on attempt 1"
        assert flaky_attempts == [1, 1]


# -- workflow reset ----------------------------------------------------------------------------

activity_calls: list[str] = []


@activity.defn
async def count_calls(name: str) -> str:
    activity_calls.append(name)
    return f"hello {name}"


@workflow.defn
class SignalledWorkflow:
    def __init__(self) -> None:
        self.signals: list[str] = []

    @workflow.run
    async def run(self) -> dict[str, Any]:
        greeting = await workflow.execute_activity(
            count_calls, "world", start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.wait_condition(lambda: len(self.signals) >= 2)
        info = workflow.info()
        return {
            "greeting": greeting,
            "signals": self.signals,
            "run_id": info.run_id,
            "first_execution_run_id": info.first_execution_run_id,
        }

    @workflow.signal
    def sig(self, value: str) -> None:
        self.signals.append(value)

    @workflow.query
    def seen(self) -> list[str]:
        return self.signals


async def _after_activity_and_signal(client: Client, tq: str) -> tuple[WorkflowHandle[Any, Any], int]:
    """A run that has its activity's result and then signal "one"; the reset point between."""
    handle = await client.start_workflow(SignalledWorkflow.run, id=f"w-{uuid.uuid4()}", task_queue=tq)

    async def greeted() -> int:
        events = (await handle.fetch_history()).events
        done = [e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
        assert done
        tasks = [e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                 and e.event_id > done[0]]
        assert tasks
        return tasks[0]

    point = await eventually(greeted)
    await handle.signal(SignalledWorkflow.sig, "one")

    async def signalled() -> None:
        assert await handle.query(SignalledWorkflow.seen) == ["one"]

    await eventually(signalled)
    return handle, point


async def test_reset_to_a_workflow_task_reapplies_the_signal_after_it(client: Client) -> None:
    activity_calls.clear()
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[SignalledWorkflow],
                      activities=[count_calls], workflow_runner=UnsandboxedWorkflowRunner()):
        handle, point = await _after_activity_and_signal(client, tq)
        request = ResetWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=execution(handle), reason="bad deploy",
            workflow_task_finish_event_id=point, request_id=str(uuid.uuid4()),
        )
        new_run = (await client.workflow_service.reset_workflow_execution(request)).run_id
        assert new_run and new_run != handle.result_run_id
        # The same request again is the same reset.
        assert (await client.workflow_service.reset_workflow_execution(request)).run_id == new_run

        # The old run was terminated with the reset's reason.
        base = client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        old = await base.describe()
        assert old.status is not None and old.status.name == "TERMINATED"
        last = (await base.fetch_history()).events[-1]
        assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
        assert last.workflow_execution_terminated_event_attributes.reason == "bad deploy"

        current = client.get_workflow_handle(handle.id)
        assert (await current.describe()).run_id == new_run
        # The signal sent after the reset point was reapplied to the new run.
        async def reapplied() -> None:
            assert await current.query(SignalledWorkflow.seen) == ["one"]

        await eventually(reapplied)
        await current.signal(SignalledWorkflow.sig, "two")
        result = await asyncio.wait_for(current.result(), 15)
        assert result["signals"] == ["one", "two"]
        assert result["greeting"] == "hello world"
        assert result["run_id"] == new_run
        assert result["first_execution_run_id"] == handle.result_run_id
        assert activity_calls == ["world"]  # its result is before the reset point: not run again

        history = await client.get_workflow_handle(handle.id, run_id=new_run).fetch_history()
        failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
        assert len(failed) == 1 and failed[0].event_id == point
        a = failed[0].workflow_task_failed_event_attributes
        assert a.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
        assert (a.base_run_id, a.new_run_id) == (handle.result_run_id, new_run)
    # The reset run's history replays deterministically.
    await Replayer(workflows=[SignalledWorkflow]).replay_workflow(history)


async def test_reset_without_reapply_and_to_the_first_workflow_task(client: Client) -> None:
    activity_calls.clear()
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[SignalledWorkflow],
                      activities=[count_calls], workflow_runner=UnsandboxedWorkflowRunner()):
        handle, _ = await _after_activity_and_signal(client, tq)
        first_task = next(
            e.event_id for e in (await handle.fetch_history()).events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        )
        resp = await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=execution(handle), reason="again",
            workflow_task_finish_event_id=first_task, request_id=str(uuid.uuid4()),
            reset_reapply_type=ResetReapplyType.RESET_REAPPLY_TYPE_NONE,
        ))
        current = client.get_workflow_handle(handle.id, run_id=resp.run_id)
        await current.signal(SignalledWorkflow.sig, "two")
        await current.signal(SignalledWorkflow.sig, "three")
        result = await asyncio.wait_for(current.result(), 15)
        assert result["signals"] == ["two", "three"]  # "one" was not reapplied
        assert activity_calls == ["world", "world"]  # the first task scheduled it anew
        history = await current.fetch_history()
    await Replayer(workflows=[SignalledWorkflow]).replay_workflow(history)


async def test_reset_point_must_follow_a_workflow_task(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[SignalledWorkflow],
                      activities=[count_calls], workflow_runner=UnsandboxedWorkflowRunner()):
        handle, _ = await _after_activity_and_signal(client, tq)
        for bad in (1, 2, 10_000):  # the start, the first task's scheduling, beyond the history
            with pytest.raises(RPCError) as err:
                await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
                    namespace=client.namespace, workflow_execution=execution(handle), reason="x",
                    workflow_task_finish_event_id=bad, request_id=str(uuid.uuid4()),
                ))
            assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
        await handle.terminate("done")
