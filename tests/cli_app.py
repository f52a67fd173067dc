"""Workflows that the CLI and web view tests operate on, and a worker for them.

``Steps`` advances one step per ``advance`` signal, each step an activity, so a test can
watch its history grow; it answers a query and an update. ``Broken`` fails; ``Stuck``
retries an activity that always fails (a pending activity with attempts and a last failure).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

TASK_QUEUE = "cli-tests"


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@activity.defn
async def always_fails(what: str) -> None:
    raise ApplicationError(f"{what} is broken")


@workflow.defn
class Steps:
    def __init__(self) -> None:
        self.name = ""
        self.done = 0
        self.pending = 0

    @workflow.run
    async def run(self, name: str, steps: int = 2) -> str:
        self.name = name
        while self.done < steps:
            await workflow.wait_condition(lambda: self.pending > 0)
            self.pending -= 1
            await workflow.execute_activity(
                shout, f"{self.name} {self.done}", start_to_close_timeout=timedelta(seconds=10)
            )
            self.done += 1
        return f"done {self.name}"

    @workflow.signal
    def advance(self, n: int = 1) -> None:
        self.pending += n

    @workflow.query
    def progress(self) -> dict[str, Any]:
        return {"name": self.name, "done": self.done}

    @workflow.update
    def rename(self, name: str) -> str:
        old, self.name = self.name, name
        return old

    @rename.validator
    def check_rename(self, name: str) -> None:
        if not name:
            raise ValueError("the new name is empty")


@workflow.defn
class Broken:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("it broke", non_retryable=True)


@workflow.defn
class Stuck:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            always_fails, "the printer", start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                     backoff_coefficient=1.0),
        )


def worker(client: Client, task_queue: str = TASK_QUEUE) -> Worker:
    return Worker(
        client, task_queue=task_queue, workflows=[Steps, Broken, Stuck],
        activities=[shout, always_fails], workflow_runner=UnsandboxedWorkflowRunner(),
    )


async def _main(url: str, namespace: str) -> None:  # a worker on its own: cli_app.py URL NAMESPACE
    client = await Client.connect(url, namespace=namespace)
    async with worker(client):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
