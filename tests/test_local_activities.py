"""Local activities run once: a local activity whose result is recorded while a workflow task for
other input (a signal) is running is not started again when that task ends, although the workflow
has not consumed its marker yet. On Postgres and SQLite.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

# Per workflow id: how many times the local activity ran; and the signal handler's "I am running".
RUNS: dict[str, int] = {}
IN_SIGNAL: dict[str, threading.Event] = {}


@activity.defn
async def finish_during_signal() -> str:
    wid = activity.info().workflow_id
    RUNS[wid] = RUNS.get(wid, 0) + 1
    # Return while the signal's workflow task is still running (its handler blocks below).
    deadline = time.monotonic() + 10
    while not IN_SIGNAL[wid].is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return "done"


@workflow.defn
class LocalThenSignal:
    def __init__(self) -> None:
        self.signals = 0

    @workflow.run
    async def run(self) -> str:
        got = await workflow.execute_local_activity(
            finish_during_signal, start_to_close_timeout=timedelta(seconds=20)
        )
        await workflow.wait_condition(lambda: self.signals > 0)
        return got

    @workflow.signal
    def poke(self) -> None:
        self.signals += 1
        IN_SIGNAL[workflow.info().workflow_id].set()
        # Hold the task long enough for the local activity's marker to be written meanwhile.
        time.sleep(0.5)


async def test_local_activity_recorded_during_another_task_runs_once(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    wid = f"la-{uuid.uuid4().hex[:8]}"
    IN_SIGNAL[wid] = threading.Event()
    async with Worker(
        client, task_queue=tq, workflows=[LocalThenSignal], activities=[finish_during_signal],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        h = await client.start_workflow(LocalThenSignal.run, id=wid, task_queue=tq)
        for _ in range(200):
            if RUNS.get(wid):
                break
            await asyncio.sleep(0.02)
        assert RUNS.get(wid) == 1
        await h.signal(LocalThenSignal.poke)
        assert await h.result() == "done"
        # Another start of the activity would have run by now (it returns at once).
        await asyncio.sleep(0.3)
    assert RUNS[wid] == 1
    markers = [e for e in (await h.fetch_history()).events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert len(markers) == 1
