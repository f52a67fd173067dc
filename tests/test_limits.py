"""Temporal's frontend limits: ids, names, payloads and history, refused or enforced as Temporal does.

The messages are those a Temporal dev server (temporal CLI 1.9.1) returns for the same requests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import (
    AsyncActivityCancelledError,
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryFailedError,
)
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ServerError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from dbosify._store import get_store, resolve_url
from dbosify._store.limits import Limits

# The dev server's answers (INVALID_ARGUMENT), by what was too long or too large.
WORKFLOW_ID_2000 = "WorkflowId exceeds maximum allowed length (2000/1000)"
WORKFLOW_ID_1002 = "WorkflowId exceeds maximum allowed length (1002/1000)"  # 501 two-byte characters
TASK_QUEUE = "taskQueue length exceeds limit"
WORKFLOW_TYPE = "WorkflowType length exceeds limit."
SIGNAL_NAME = "SignalName length exceeds limit."
SIGNAL_WITH_START_NAME = "signal name exceeds maximum allowed length (2000/1000)"
UPDATE_ID = "UpdateId length exceeds limit."
BLOB = "Blob data size exceeds limit."
MEMO = "Memo size exceeds limit."
FAILURE_TOO_LARGE = "Failure exceeds size limit."
HISTORY_COUNT = "Workflow history count exceeds limit."
HISTORY_SIZE = "Workflow history size exceeds limit."

LONG = "a" * 2000
BIG = "x" * (3 * 1024 * 1024)


@activity.defn
async def sized(n: int) -> str:
    return "r" * n


@activity.defn
async def failing(n: int) -> str:
    raise RuntimeError("f" * n)


@workflow.defn
class Waiting:
    def __init__(self) -> None:
        self.signals = 0

    @workflow.run
    async def run(self, arg: str) -> int:
        await workflow.wait_condition(lambda: self.signals >= 1_000_000)
        return self.signals

    @workflow.signal
    def sig(self, arg: str) -> None:
        self.signals += 1

    @workflow.query
    def count(self, arg: str) -> int:
        return self.signals

    @workflow.update
    def bump(self, arg: str) -> int:
        self.signals += 1
        return self.signals


@workflow.defn
class CallsActivity:
    @workflow.run
    async def run(self, kind: str, n: int) -> str:
        return await workflow.execute_activity(
            sized if kind == "result" else failing, n, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


TOKENS: list[bytes] = []


@activity.defn
async def completes_later() -> str:
    TOKENS.append(activity.info().task_token)
    activity.raise_complete_async()


@workflow.defn
class CallsAsyncActivity:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(completes_later, start_to_close_timeout=timedelta(seconds=30),
                                               retry_policy=RetryPolicy(maximum_attempts=1))


@workflow.defn
class LongActivityType:
    @workflow.run
    async def run(self) -> str:
        return str(await workflow.execute_activity("a" * 2000, start_to_close_timeout=timedelta(seconds=10)))


def _limits(client: Client, db_url: str, **kw: int) -> None:
    """Lower this test namespace's limits (a namespace's own, as a dev server's dynamic config)."""
    get_store(resolve_url(db_url)).namespace_limits[client.namespace] = Limits(**kw)


@asynccontextmanager
async def _worker(client: Client) -> AsyncIterator[str]:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Waiting, CallsActivity, LongActivityType, CallsAsyncActivity],
                      activities=[sized, failing, completes_later]):
        yield tq


async def _refused(aw: object, message: str) -> None:
    with pytest.raises(RPCError) as err:
        await aw  # type: ignore[misc]
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert err.value.message == message


async def _not_found(client: Client, workflow_id: str) -> None:
    with pytest.raises(RPCError) as err:
        await client.get_workflow_handle(workflow_id).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_ids_and_names_over_1000_bytes_are_refused(client: Client) -> None:
    tq = "tq-limits"
    await _refused(client.start_workflow(Waiting.run, "a", id=LONG, task_queue=tq), WORKFLOW_ID_2000)
    await _refused(client.start_workflow(Waiting.run, "a", id="é" * 501, task_queue=tq), WORKFLOW_ID_1002)
    wid = f"w-{uuid.uuid4()}"
    await _refused(client.start_workflow(Waiting.run, "a", id=wid, task_queue=LONG), TASK_QUEUE)
    await _refused(client.start_workflow(LONG, "a", id=wid, task_queue=tq), WORKFLOW_TYPE)
    await _refused(client.start_workflow(Waiting.run, "a", id=wid, task_queue=tq, start_signal=LONG),
                   SIGNAL_WITH_START_NAME)
    await _not_found(client, wid)  # nothing was written
    # 1,000 bytes is within the limit.
    handle = await client.start_workflow(Waiting.run, "a", id="w" * 1000, task_queue=tq)
    await _refused(handle.signal(LONG), SIGNAL_NAME)
    await _refused(handle.execute_update(Waiting.bump, "a", id=LONG), UPDATE_ID)
    assert not [e for e in (await handle.fetch_history()).events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]


async def test_nul_in_an_id_or_name_is_invalid_argument(client: Client) -> None:
    message = "WorkflowId contains a NUL character, which cannot be stored."
    await _refused(client.start_workflow(Waiting.run, "a", id="a\x00b", task_queue="tq"), message)
    await _refused(client.get_workflow_handle("a\x00b").describe(), message)
    await _refused(client.get_workflow_handle("a\x00b").signal("s"), message)
    await _refused(client.start_workflow(Waiting.run, "a", id="ok", task_queue="t\x00q"),
                   "Name contains a NUL character, which cannot be stored.")
    await _not_found(client, "ok")


async def test_payloads_over_the_blob_limit_are_refused(client: Client) -> None:
    wid = f"w-{uuid.uuid4()}"
    await _refused(client.start_workflow(Waiting.run, BIG, id=wid, task_queue="tq"), BLOB)
    await _refused(client.start_workflow(Waiting.run, "a", id=wid, task_queue="tq", memo={"m": BIG}), MEMO)
    await _refused(client.start_workflow(Waiting.run, "a", id=wid, task_queue="tq",
                                         start_signal="sig", start_signal_args=[BIG]), BLOB)
    await _not_found(client, wid)
    async with _worker(client) as tq:
        handle = await client.start_workflow(Waiting.run, "a", id=wid, task_queue=tq)
        await _refused(handle.signal(Waiting.sig, BIG), BLOB)
        await _refused(handle.execute_update(Waiting.bump, BIG), BLOB)
        with pytest.raises(WorkflowQueryFailedError) as err:
            await handle.query(Waiting.count, BIG)
        assert err.value.message == BLOB
        assert await handle.query(Waiting.count, "a") == 0  # neither the signal nor the update got in
    events = (await handle.fetch_history()).events
    assert max(e.event_id for e in events) < 10 and all(e.ByteSize() < 100_000 for e in events)


async def test_activity_outcomes_over_the_blob_limit_fail_the_activity(client: Client, db_url: str) -> None:
    _limits(client, db_url, blob_error=64 * 1024)
    async with _worker(client) as tq:
        with pytest.raises(WorkflowFailureError) as err:
            await client.execute_workflow(CallsActivity.run, args=["result", 100_000], id=f"r-{uuid.uuid4()}",
                                          task_queue=tq)
        assert isinstance(err.value.cause, ActivityError)
        cause = err.value.cause.cause
        assert isinstance(cause, ApplicationError) and cause.type == "PayloadsTooLarge"  # as Core does
        with pytest.raises(WorkflowFailureError) as err:
            await client.execute_workflow(CallsActivity.run, args=["failure", 100_000], id=f"f-{uuid.uuid4()}",
                                          task_queue=tq)
        assert isinstance(err.value.cause, ActivityError)
        cause = err.value.cause.cause
        assert isinstance(cause, ServerError) and cause.message == FAILURE_TOO_LARGE and cause.non_retryable
        # Below the limit, nothing changes.
        assert await client.execute_workflow(CallsActivity.run, args=["result", 1000], id=f"s-{uuid.uuid4()}",
                                             task_queue=tq) == "r" * 1000


@pytest.mark.parametrize(("lowered", "reason", "arg"), [
    ({"history_count_error": 30}, HISTORY_COUNT, "s"),
    ({"history_size_error": 20_000}, HISTORY_SIZE, "s" * 2000),
])
async def test_history_past_its_limit_terminates_the_run(
    client: Client, db_url: str, lowered: dict[str, int], reason: str, arg: str
) -> None:
    _limits(client, db_url, **lowered)
    async with _worker(client) as tq:
        handle = await client.start_workflow(Waiting.run, "a", id=f"h-{uuid.uuid4()}", task_queue=tq)
        for _ in range(40):
            try:
                await handle.signal(Waiting.sig, arg)
            except RPCError:
                break  # terminated meanwhile
            await asyncio.sleep(0.01)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 10)
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
    events = (await handle.fetch_history()).events
    last = events[-1].workflow_execution_terminated_event_attributes
    assert (last.reason, last.identity) == (reason, "history-service")
    failed = [e.workflow_task_failed_event_attributes for e in events
              if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert failed[-1].cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND
    assert failed[-1].identity == "history-service"


def test_limits_from_the_environment() -> None:
    from dbosify._store.limits import from_env

    limits = from_env({"DBOSIFY_LIMITS": "limit.blobSize.error=4194304, limit.historyCount.error=100"})
    assert (limits.blob_error, limits.history_count_error, limits.max_id_length) == (4194304, 100, 1000)
    with pytest.raises(ValueError, match="limit.blobSize.error"):
        from_env({"DBOSIFY_LIMITS": "limit.nope=1"})


async def test_start_local_takes_the_limits_from_dynamic_config(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from temporalio.testing import WorkflowEnvironment

    monkeypatch.setenv("DBOSIFY_DATABASE_URL", db_url)
    async with await WorkflowEnvironment.start_local(dev_server_extra_args=[
        "--dynamic-config-value", "limit.maxIDLength=10",
        "--dynamic-config-value", "limit.blobSize.error=1000",
    ]) as env:
        await _refused(env.client.start_workflow(Waiting.run, "a", id="w" * 11, task_queue="tq"),
                       "WorkflowId exceeds maximum allowed length (11/10)")
        await _refused(env.client.start_workflow(Waiting.run, "b" * 1000, id="w", task_queue="tq"), BLOB)


async def test_an_activity_type_over_1000_bytes_fails_the_workflow_task(client: Client) -> None:
    async with _worker(client) as tq:
        handle = await client.start_workflow(LongActivityType.run, id=f"a-{uuid.uuid4()}", task_queue=tq)
        failed: list[object] = []
        for _ in range(200):
            failed = [e.workflow_task_failed_event_attributes for e in (await handle.fetch_history()).events
                      if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
            if failed:
                break
            await asyncio.sleep(0.05)
        await handle.terminate()
    attrs = failed[0]
    assert attrs.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES  # type: ignore[attr-defined]
    assert attrs.failure.message == (  # type: ignore[attr-defined]
        "BadScheduleActivityAttributes: activityType exceeds length limit. Length=2000 Limit=1000")


@pytest.mark.parametrize(("how", "message"), [
    ("complete", "Complete result exceeds size limit."),
    ("heartbeat", "Heartbeat details exceed size limit."),
    ("fail", FAILURE_TOO_LARGE),
])
async def test_by_token_outcomes_over_the_blob_limit_fail_the_activity(
    client: Client, db_url: str, how: str, message: str
) -> None:
    """As a dev server answers: the call succeeds (a heartbeat answers "cancelled"), the attempt
    fails with a non-retryable server failure."""
    _limits(client, db_url, blob_error=64 * 1024)
    big = "b" * 100_000
    TOKENS.clear()
    async with _worker(client) as tq:
        handle = await client.start_workflow(CallsAsyncActivity.run, id=f"t-{uuid.uuid4()}", task_queue=tq)
        while not TOKENS:
            await asyncio.sleep(0.02)
        token = client.get_async_activity_handle(task_token=TOKENS.pop())
        if how == "complete":
            await token.complete(big)
        elif how == "fail":
            await token.fail(RuntimeError(big))
        else:
            with pytest.raises(AsyncActivityCancelledError):
                await token.heartbeat(big)
        with pytest.raises(WorkflowFailureError) as err:
            await asyncio.wait_for(handle.result(), 10)
    assert isinstance(err.value.cause, ActivityError)
    cause = err.value.cause.cause
    assert isinstance(cause, ServerError) and cause.message == message and cause.non_retryable
