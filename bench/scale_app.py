"""The workflow of `bench.scale` and its worker.

``ScaleWaiter(due)`` sleeps on a durable timer until ``due`` (a Unix time; none for runs that
only wait on a signal), then waits for the ``give`` signal and returns its value; the ``given``
query answers what the signal gave so far. `worker` runs
one worker with temporalio's defaults (sandboxed workflows, a cache of 1,000 runs) and prints
``ready`` once it polls. Written against the ``temporalio`` API only, and kept apart from the
bench's own module: temporalio's sandbox runs a workflow's module again for every workflow
instance, so the module holds nothing else.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow


@workflow.defn(name="ScaleWaiter")
class ScaleWaiter:
    def __init__(self) -> None:
        self.got: str | None = None

    @workflow.run
    async def run(self, due: float | None) -> str:
        if due is not None:
            delay = due - workflow.now().timestamp()
            if delay > 0:
                await workflow.sleep(delay)
        await workflow.wait_condition(lambda: self.got is not None)
        assert self.got is not None
        return self.got

    @workflow.signal
    def give(self, value: str) -> None:
        self.got = value

    @workflow.query
    def given(self) -> str | None:
        return self.got


async def worker(
    url: str, namespace: str, task_queue: str, sandboxed: bool, max_cached: int | None = None
) -> None:
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client = await Client.connect(url, namespace=namespace)
    kw: dict[str, Any] = {} if sandboxed else {"workflow_runner": UnsandboxedWorkflowRunner()}
    if max_cached is not None:
        kw["max_cached_workflows"] = max_cached
    async with Worker(client, task_queue=task_queue, workflows=[ScaleWaiter], **kw):
        print("ready", flush=True)
        await asyncio.Event().wait()

