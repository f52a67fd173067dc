"""Workflows of tests/test_eviction.py, and a worker process it kills.

    python tests/eviction_app.py worker URL NAMESPACE TASK_QUEUE

runs a ``Worker`` for `Waiter` until it is killed (``DBOSIFY_ACTIVATE=1`` in its environment);
it prints ``ready`` once it polls.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from temporalio import activity, workflow

# Set by the test: activities wait for it, so the test sees their run dormant first.
release_activity: asyncio.Event | None = None


@activity.defn
async def gated() -> str:
    assert release_activity is not None
    await release_activity.wait()
    return "done"


@workflow.defn
class Waiter:
    """Waits for one signal, then returns it."""

    def __init__(self) -> None:
        self.got: str | None = None

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.got is not None)
        assert self.got is not None
        return self.got

    @workflow.signal
    def give(self, value: str) -> None:
        self.got = value


@workflow.defn
class Child:
    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "child"

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def release(self) -> None:
        self.go = True


@workflow.defn
class Steps:
    """One step per kind of work a dormant run can get; `done` lists the steps taken."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.signalled = False
        self.updated = False

    @workflow.run
    async def run(self, child_id: str) -> list[str]:
        await workflow.wait_condition(lambda: self.signalled)
        self.done.append("signal")
        await workflow.wait_condition(lambda: self.updated)
        self.done.append("update")
        await workflow.sleep(timedelta(seconds=1))
        self.done.append("timer")
        self.done.append(
            await workflow.execute_activity(gated, start_to_close_timeout=timedelta(seconds=60))
        )
        self.done.append(await workflow.execute_child_workflow(Child.run, id=child_id))
        try:
            await workflow.wait_condition(lambda: False)
        except asyncio.CancelledError:
            self.done.append("cancel")
        return self.done

    @workflow.signal
    def poke(self) -> None:
        self.signalled = True

    @workflow.update
    def bump(self) -> int:
        self.updated = True
        return len(self.done)

    @workflow.query
    def steps(self) -> list[str]:
        return self.done


async def _worker(url: str, namespace: str, task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client = await Client.connect(url, namespace=namespace)
    async with Worker(
        client, task_queue=task_queue, workflows=[Waiter], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        asyncio.run(_worker(*sys.argv[2:5]))
