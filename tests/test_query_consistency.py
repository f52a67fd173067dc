"""A query sees every signal sent before it, even when both arrive while the run's driver is
reading its inputs: the driver reads pending queries before events, so nothing committed ahead
of a query can be missing from the events it applies before answering.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from dbosify._engine import history as _history


@workflow.defn
class Latest:
    def __init__(self) -> None:
        self.value = "none"

    @workflow.signal
    def set(self, value: str) -> None:
        self.value = value

    @workflow.query
    def get(self) -> str:
        return self.value

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


async def test_query_after_signal_sees_it(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    original = _history.load_events
    slow = threading.Event()

    def load_events_then_pause(tx: Any, run_id: str, after: int = 0) -> Any:
        events = original(tx, run_id, after)
        if slow.is_set():
            slow.clear()
            time.sleep(0.4)  # the rest of this read happens after what the test sends meanwhile
        return events

    monkeypatch.setattr(_history, "load_events", load_events_then_pause)
    async with Worker(client, task_queue=tq, workflows=[Latest]):
        h = await client.start_workflow(Latest.run, id=f"q-{uuid.uuid4().hex[:8]}", task_queue=tq)
        assert await h.query(Latest.get) == "none"  # running and waiting
        slow.set()
        first = asyncio.create_task(h.query(Latest.get))  # wakes the driver, which reads slowly
        await asyncio.sleep(0.1)
        await h.signal(Latest.set, "new")
        assert await h.query(Latest.get) == "new"
        assert await first in ("none", "new")
