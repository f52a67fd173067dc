"""A worker process for tests/test_standalone_activities.py, which kills it with SIGKILL.

    python tests/standalone_app.py URL NAMESPACE TASK_QUEUE MARKER

runs a ``Worker`` with the activity ``slow`` until it is killed (``DBOSIFY_ACTIVATE=1`` in its
environment). Each execution of ``slow`` appends ``<phase>:<attempt>:<pid>`` lines (phase
``start`` or ``done``) to MARKER, fsynced, so that they survive the kill.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings

from temporalio import activity

MARKER = ""


def record(phase: str) -> None:
    line = f"{phase}:{activity.info().attempt}:{os.getpid()}\n"
    fd = os.open(MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@activity.defn
async def slow(seconds: float) -> str:
    record("start")
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        activity.heartbeat()
        await asyncio.sleep(0.1)
    record("done")
    return f"slept {seconds} in attempt {activity.info().attempt}"


async def run(url: str, namespace: str, task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(url, namespace=namespace)
    worker = Worker(client, task_queue=task_queue, activities=[slow])
    print(f"worker {os.getpid()} running", flush=True)
    await worker.run()


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message="Target host as URL")
    url, namespace, task_queue, MARKER = sys.argv[1:5]
    asyncio.run(run(url, namespace, task_queue))
