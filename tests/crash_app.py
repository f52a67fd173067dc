"""The program that tests/test_crash.py runs in subprocesses and kills.

Two modes, each run with ``DBOSIFY_ACTIVATE=1`` in its environment::

    python tests/crash_app.py worker URL NAMESPACE TASK_QUEUE MARKER [MAX_ACTIVITIES]
    python tests/crash_app.py client URL NAMESPACE TASK_QUEUE

``worker`` connects with ``Client.connect(URL, namespace=NAMESPACE)`` and runs a
``Worker`` for the workflows and activities below until it is killed.

``client`` answers JSON requests, one per line on stdin, with one JSON line on
stdout each: ``{"op": "start", "workflow": ..., "id": ..., "args": [...]}``,
``{"op": "signal", "id": ..., "signal": ..., "args": [...]}``,
``{"op": "result", "id": ..., "timeout": SECONDS}`` and
``{"op": "history", "id": ...}`` (the run's event type names) and
``{"op": "audit", "id": ...}`` (events with who wrote them, and whether the history
replays cleanly). Answers are
``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.

Every activity execution appends lines to the MARKER file, outside the database
under test, flushed and fsynced so that they survive a SIGKILL::

    <activity>:<workflow_id>:<attempt>:start:<pid>
    <activity>:<workflow_id>:<attempt>:done:<pid>
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

MARKER = ""  # set by main() in worker processes


def record(name: str, phase: str) -> None:
    info = activity.info()
    line = f"{name}:{info.workflow_id}:{info.attempt}:{phase}:{os.getpid()}\n"
    fd = os.open(MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def _work(name: str, seconds: float) -> str:
    record(name, "start")
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        activity.heartbeat()
        await asyncio.sleep(min(0.1, max(0.0, end - loop.time())))
    record(name, "done")
    return f"{name}@{activity.info().workflow_id}"


@activity.defn
async def act_a(seconds: float) -> str:
    return await _work("A", seconds)


@activity.defn
async def act_b(seconds: float) -> str:
    return await _work("B", seconds)


@activity.defn
async def step(name: str, seconds: float) -> str:
    return await _work(name, seconds)


_OPTS = {"start_to_close_timeout": timedelta(seconds=60)}


@workflow.defn
class MidActivityWorkflow:
    """A long heartbeating activity A, then B."""

    @workflow.run
    async def run(self, a_seconds: float) -> str:
        a = await workflow.execute_activity(
            act_a, a_seconds, heartbeat_timeout=timedelta(seconds=30), **_OPTS
        )
        b = await workflow.execute_activity(act_b, 0.0, **_OPTS)
        return f"{a}|{b}"


@workflow.defn
class TimerWorkflow:
    """A, then a durable timer, then B."""

    @workflow.run
    async def run(self, sleep_seconds: float) -> str:
        a = await workflow.execute_activity(act_a, 0.0, **_OPTS)
        await asyncio.sleep(sleep_seconds)
        b = await workflow.execute_activity(act_b, 0.0, **_OPTS)
        return f"{a}|slept|{b}"


@workflow.defn
class SignalWorkflow:
    """A, then wait for the ``go`` signal, then B."""

    def __init__(self) -> None:
        self.got: str | None = None

    @workflow.signal
    def go(self, value: str) -> None:
        self.got = value

    @workflow.run
    async def run(self) -> str:
        a = await workflow.execute_activity(act_a, 0.0, **_OPTS)
        await workflow.wait_condition(lambda: self.got is not None)
        b = await workflow.execute_activity(act_b, 0.0, **_OPTS)
        return f"{a}|{self.got}|{b}"


@workflow.defn
class StepsWorkflow:
    """Three short activities in sequence."""

    @workflow.run
    async def run(self, seconds: float) -> list[str]:
        out = []
        for name in ("S1", "S2", "S3"):
            out.append(await workflow.execute_activity(step, args=[name, seconds], **_OPTS))
        return out


WORKFLOWS = [MidActivityWorkflow, TimerWorkflow, SignalWorkflow, StepsWorkflow]
ACTIVITIES = [act_a, act_b, step]


async def run_worker(url: str, namespace: str, task_queue: str, max_activities: int) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(url, namespace=namespace)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=ACTIVITIES,
        max_concurrent_activities=max_activities,
    )
    print(f"worker {os.getpid()} running", flush=True)
    await worker.run()


async def run_client(url: str, namespace: str, task_queue: str) -> None:
    from temporalio.client import Client

    client = await Client.connect(url, namespace=namespace)
    by_name = {w.__name__: w for w in WORKFLOWS}
    loop = asyncio.get_running_loop()

    async def answer(req: dict) -> dict:
        op = req["op"]
        if op == "start":
            await client.start_workflow(
                by_name[req["workflow"]].run,  # type: ignore[attr-defined]
                args=req.get("args", []),
                id=req["id"],
                task_queue=task_queue,
            )
            return {}
        handle = client.get_workflow_handle(req["id"])
        if op == "signal":
            await handle.signal(req["signal"], args=req.get("args", []))
            return {}
        if op == "result":
            return {"result": await asyncio.wait_for(handle.result(), req.get("timeout"))}
        if op == "history":
            history = await handle.fetch_history()
            from temporalio.api.enums.v1 import EventType

            return {"events": [EventType.Name(e.event_type) for e in history.events]}
        if op == "audit":
            return await audit(handle, req.get("replay", True))
        if op == "dbos":  # the run's DBOS workflow, through DBOS's own client
            return await asyncio.to_thread(dbos_row, url, namespace, req["id"])
        raise ValueError(f"unknown op {op!r}")

    print(json.dumps({"ok": True, "ready": os.getpid()}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            out = {"ok": True, **(await answer(json.loads(line)))}
        except BaseException as err:  # report every failure to the test
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            out = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(out), flush=True)


def dbos_row(url: str, namespace: str, workflow_id: str) -> dict[str, Any]:
    """Status and executor of each DBOS workflow of ``workflow_id``'s runs."""
    from dbos import DBOSClient

    from dbosify._store import get_store

    store = get_store(url)
    if store.is_sqlite:
        client = DBOSClient(system_database_url=f"sqlite:///{store.sqlite_path(namespace)}")
    else:
        client = DBOSClient(system_database_url=url, dbos_system_schema=store.dbos_schema)
    try:
        rows = client.list_workflows()
    finally:
        client.destroy()
    prefix = f"{namespace}/{workflow_id}/"
    return {
        "runs": [
            {"status": w.status, "executor": w.executor_id}
            for w in rows
            if w.workflow_id.startswith(prefix)
        ]
    }


async def audit(handle: Any, replay: bool) -> dict[str, Any]:
    """The run's events with the identity that wrote each (and activity results), and whether
    its history replays cleanly with temporalio's Replayer."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.worker import Replayer

    history = await handle.fetch_history()
    rows = []
    for e in history.events:
        attrs = getattr(e, e.WhichOneof("attributes")) if e.WhichOneof("attributes") else None
        identity = getattr(attrs, "identity", "") if attrs is not None else ""
        result = ""
        if e.HasField("activity_task_completed_event_attributes"):
            payloads = e.activity_task_completed_event_attributes.result.payloads
            result = json.loads(payloads[0].data) if payloads else ""
        rows.append([EventType.Name(e.event_type).removeprefix("EVENT_TYPE_"), identity, result])
    replay_error = None
    try:
        if replay:
            await Replayer(workflows=WORKFLOWS).replay_workflow(history)
    except Exception as err:
        replay_error = f"{type(err).__name__}: {err}"
    return {"events": rows, "replay_error": replay_error}


def main(argv: list[str]) -> None:
    global MARKER
    # temporalio warns about a target with a scheme; dbosify's targets are database URLs.
    warnings.filterwarnings("ignore", message="Target host as URL")
    mode, url, namespace, task_queue = argv[1:5]
    if mode == "worker":
        MARKER = argv[5]
        max_activities = int(argv[6]) if len(argv) > 6 else 100
        asyncio.run(run_worker(url, namespace, task_queue, max_activities))
    elif mode == "client":
        asyncio.run(run_client(url, namespace, task_queue))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    # Run the importable module, not __main__, so that the workflow sandbox
    # re-imports the workflows by a real module name.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import crash_app

    crash_app.main(sys.argv)
