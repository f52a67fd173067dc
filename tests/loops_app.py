"""The program that tests/test_event_loops.py runs in subprocesses, on an event loop other than
asyncio's own. Run with ``DBOSIFY_ACTIVATE=1``::

    python tests/loops_app.py worker LOOP URL NAMESPACE TASK_QUEUE WORKFLOW_ID
    python tests/loops_app.py client LOOP URL NAMESPACE TASK_QUEUE WORKFLOW_ID

LOOP is ``trio`` (trio-asyncio's loop inside ``trio.run``) or ``uvloop``.

``worker`` runs a ``Worker`` (an async and a threaded activity, a workflow with a signal, an
update, a query and a timer) until the run WORKFLOW_ID completes, then leaves the ``async with``
(a graceful shutdown on that loop) and prints one JSON line. ``client`` starts that run, signals,
queries and updates it, waits for its result, describes it and prints one JSON line with what it
saw. Both report ``executor_calls``: how often dbosify's own code asked the loop for an
executor (``loop.run_in_executor``), counted where the loop lets us count (uvloop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

_TIMEOUT = timedelta(seconds=60)
warnings.filterwarnings("ignore", message="Target host as URL")
executor_calls: list[str] = []


def loop_kind() -> str:
    """The package of the running loop's class (or of the class it extends)."""
    mods = [c.__module__ for c in type(asyncio.get_running_loop()).__mro__]
    return next((m for m in mods if m.split(".")[0] in ("uvloop", "trio_asyncio")), mods[0])


@activity.defn
async def shout(name: str) -> str:
    activity.heartbeat("async")
    await asyncio.sleep(0.05)
    return f"{name.upper()} on {loop_kind()}"


@activity.defn
def whisper(name: str) -> str:
    activity.heartbeat("thread")  # from the activity's thread back to the worker's loop
    time.sleep(0.05)
    return f"{name.lower()} from a thread"


@workflow.defn
class LoopsWorkflow:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.finished = False

    @workflow.run
    async def run(self, name: str) -> list[str]:
        out = [
            await workflow.execute_activity(shout, name, start_to_close_timeout=_TIMEOUT),
            await workflow.execute_activity(whisper, name, start_to_close_timeout=_TIMEOUT),
        ]
        await workflow.wait_condition(lambda: self.finished)
        await asyncio.sleep(0.2)  # a durable timer
        return out + self.notes

    @workflow.signal
    def note(self, text: str) -> None:
        self.notes.append(text)

    @workflow.query
    def seen(self) -> list[str]:
        return list(self.notes)

    @workflow.update
    def finish(self) -> int:
        self.finished = True
        return len(self.notes)


async def worker(
    url: str, namespace: str, task_queue: str, wid: str, executor: concurrent.futures.Executor
) -> dict[str, Any]:
    client = await Client.connect(url, namespace=namespace)
    # temporalio runs threaded activities and workflow tasks with run_in_executor on the
    # executors given here, on Temporal as here: a loop that accepts only executors of its own
    # (trio-asyncio) needs one of those.
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[LoopsWorkflow],
        activities=[shout, whisper],
        activity_executor=executor,
        workflow_task_executor=executor,
    ):
        print("worker running", flush=True)
        handle = client.get_workflow_handle(wid)
        deadline = time.monotonic() + 60
        while True:  # the client may not have started it yet
            try:
                result = await asyncio.wait_for(handle.result(), 60)
                break
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    return {"result": result}


async def client(url: str, namespace: str, task_queue: str, wid: str) -> dict[str, Any]:
    c = await Client.connect(url, namespace=namespace)
    handle = await c.start_workflow(LoopsWorkflow.run, "Loop", id=wid, task_queue=task_queue)
    await handle.signal(LoopsWorkflow.note, "one")
    await handle.signal(LoopsWorkflow.note, "two")
    seen = await handle.query(LoopsWorkflow.seen)
    counted = await handle.execute_update(LoopsWorkflow.finish)
    result = await asyncio.wait_for(handle.result(), 60)
    desc = await handle.describe()
    return {"seen": seen, "counted": counted, "result": result, "status": desc.status.name if desc.status else None}


def on_trio(fn: Callable[[concurrent.futures.Executor | None], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    import trio_asyncio

    async def main() -> dict[str, Any]:
        with trio_asyncio.TrioExecutor(max_workers=50) as executor:
            out = await fn(executor)
            out["loop"] = loop_kind()
            return out

    result: dict[str, Any] = trio_asyncio.run(trio_asyncio.aio_as_trio(main))
    return result


def on_uvloop(fn: Callable[[concurrent.futures.Executor | None], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    import uvloop

    class CountingLoop(uvloop.Loop):  # type: ignore[misc, name-defined]
        def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("dbosify"):
                executor_calls.append(caller)
            return super().run_in_executor(executor, func, *args)

    async def main() -> dict[str, Any]:
        with concurrent.futures.ThreadPoolExecutor(50) as executor:
            out = await fn(executor)
            out["loop"] = loop_kind()
            return out

    loop = CountingLoop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def main() -> None:
    role, loop_name, url, namespace, task_queue, wid = sys.argv[1:7]

    async def run(executor: concurrent.futures.Executor | None) -> dict[str, Any]:
        if role == "worker":
            assert executor is not None
            return await worker(url, namespace, task_queue, wid, executor)
        return await client(url, namespace, task_queue, wid)

    out = on_trio(run) if loop_name == "trio" else on_uvloop(run)
    out["executor_calls"] = executor_calls
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
