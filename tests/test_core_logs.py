"""Core's logs forwarded through temporalio's Runtime, and payload size limits on workflow tasks."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, PayloadLimitsConfig, WorkflowFailureError
from temporalio.exceptions import TerminatedError
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from dbosify._store import get_store, resolve_url


@workflow.defn
class Output:
    @workflow.run
    async def run(self, size: int) -> str:
        return "x" * size


@workflow.defn
class Broken:
    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("task bug")  # not a workflow failure: the task fails and is retried


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def forwarded() -> Iterator[tuple[Runtime, Captured]]:
    log = logging.getLogger(f"fwd-{uuid.uuid4().hex[:6]}")
    log.setLevel(logging.DEBUG)
    handler = Captured()
    log.addHandler(handler)
    runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=LogForwardingConfig(logger=log))))
    yield runtime, handler
    log.removeHandler(handler)


async def _client(db_url: str, ns: str, runtime: Runtime, **kw: object) -> Client:
    return await Client.connect(db_url, namespace=ns, runtime=runtime, **kw)  # type: ignore[arg-type]


def _worker(client: Client, tq: str, **kw: object) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Output, Broken],
                  workflow_runner=UnsandboxedWorkflowRunner(), **kw)  # type: ignore[arg-type]


async def test_failing_task_and_test_lines_are_forwarded_by_level(
    client: Client, db_url: str, forwarded: tuple[Runtime, Captured]
) -> None:
    runtime, captured = forwarded
    runtime._core_runtime.write_test_info_log("below the filter", "x")  # core_level is WARN
    c = await _client(db_url, client.namespace, runtime)
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    async with _worker(c, tq):
        handle = await c.start_workflow(Broken.run, id=f"b-{uuid.uuid4()}", task_queue=tq)
        for _ in range(100):
            if any("Failing workflow task" in r.getMessage() for r in captured.records):
                break
            await asyncio.sleep(0.05)
        await handle.terminate()
    record = next(r for r in captured.records if "Failing workflow task" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert record.name.endswith("-sdk_core::temporalio_sdk_core::worker::workflow")
    assert record.temporal_log.fields["run_id"] == handle.result_run_id  # type: ignore[attr-defined]
    assert not any("below the filter" in r.getMessage() for r in captured.records)


async def test_payload_warning_and_error_limits(
    client: Client, db_url: str, forwarded: tuple[Runtime, Captured]
) -> None:
    runtime, captured = forwarded
    c = await _client(db_url, client.namespace, runtime,
                      payload_limits=PayloadLimitsConfig(payloads_warn_size=1024, memo_warn_size=64))
    store = get_store(resolve_url(db_url))
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    async with _worker(c, tq):
        assert await c.execute_workflow(Output.run, 2048, id=f"o-{uuid.uuid4()}", task_queue=tq,
                                        memo={"k": "m" * 100}) == "x" * 2048
    messages = [r.getMessage() for r in captured.records]
    assert any("exceeded the warning limit" in m and "payloads" in m for m in messages)
    assert any("upload memo with size that exceeded the warning limit" in m for m in messages)

    saved, store.blob_size_limit = store.blob_size_limit, 4096
    try:
        async with _worker(c, tq):
            handle = await c.start_workflow(Output.run, 8192, id=f"e-{uuid.uuid4()}", task_queue=tq,
                                            execution_timeout=timedelta(seconds=2))
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        history = await handle.fetch_history()
        assert any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                   and e.workflow_task_failed_event_attributes.cause
                   == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_PAYLOADS_TOO_LARGE
                   for e in history.events)
        assert any(r.levelno == logging.ERROR and "exceeded the error limit" in r.getMessage()
                   for r in captured.records)
        async with _worker(c, tq, disable_payload_error_limit=True):
            with pytest.raises(WorkflowFailureError) as err:
                await c.execute_workflow(Output.run, 8192, id=f"d-{uuid.uuid4()}", task_queue=tq)
        assert isinstance(err.value.cause, TerminatedError)
        assert err.value.cause.message == (
            "BadCompleteWorkflowExecutionAttributes: CompleteWorkflowExecutionCommandAttributes.Result exceeds size limit.")
    finally:
        store.blob_size_limit = saved
