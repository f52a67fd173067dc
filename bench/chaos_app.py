"""The app of ``python -m bench chaos``: written only against ``temporalio``, the standard library
and a database driver for the harness's own record of activity executions.

    python bench/chaos_app.py worker TARGET NAMESPACE TASK_QUEUE RECORD
    python bench/chaos_app.py client TARGET NAMESPACE TASK_QUEUE

``worker`` runs a ``Worker`` with ``identity="chaos-worker-<pid>@<host>"`` (so every history
event says which process wrote it), prints ``READY <pid>`` and runs until it is killed.

``ChaosWorkflow(key, seconds, timer)`` runs activity ``first``, then ``second``, waits for the
``proceed`` signal, sleeps on a durable timer, then runs ``third``; it returns
``third(second(first(<key>))+<tokens>)|timer-ok`` where ``<tokens>`` are the signal payloads it
received joined by ``,`` (the harness sends one, ``sig-<key>``), so a lost or doubled signal, a
result delivered to the wrong run or a short timer gives a wrong result.

Every activity execution is recorded outside the engine's tables, in RECORD: ``pg:<schema>:<url>``
(a table in the harness's own schema) or ``sqlite:<path>`` (a side SQLite file). A row is
inserted when the execution starts (workflow id, activity, attempt, pid, identity, started_at)
and its ``ended_at`` is written just before the activity returns. Writes are retried while the
database is away (a Postgres restart), so an execution blocks rather than going unrecorded.

``client`` reads one JSON request per line and answers with JSON lines:

- ``{"op": "run", ...}`` starts N workflows at a given rate, signals each after its own delay,
  and streams ``{"ev": "started"|"result"|"failed", ...}`` lines, then ``{"ev": "done", ...}``;
- ``{"op": "histories", ...}`` fetches every run's history with ``fetch_history()``, writes a
  summary of each event to a JSON-lines file, and replays the histories of the completed ones
  with ``temporalio.worker.Replayer`` and this workflow class.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sqlite3
import sys
import threading
import time
import uuid
import warnings
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

IDENTITY = f"chaos-worker-{os.getpid()}@{socket.gethostname()}"


class Recorder:
    """The harness's table of activity executions (created by the harness, see bench/chaos_db.py);
    one connection per process, writes retried."""

    def __init__(self, spec: str) -> None:
        kind, _, rest = spec.partition(":")
        self.sqlite = kind == "sqlite"
        if self.sqlite:
            self.path, self.table = rest, "activity_runs"
        else:
            schema, _, self.url = rest.partition(":")
            self.table = f'"{schema}".activity_runs'
        self.lock = threading.Lock()
        self.conn: Any = None

    def _connect(self) -> Any:
        if self.sqlite:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        sql = sql.format(t=self.table)
        if self.sqlite:
            sql = sql.replace("%s", "?")
        deadline = time.monotonic() + 120
        with self.lock:
            while True:
                try:
                    if self.conn is None:
                        self.conn = self._connect()
                    self.conn.execute(sql, params)
                    return
                except Exception:
                    if self.conn is not None:
                        try:
                            self.conn.close()
                        except Exception:
                            pass
                        self.conn = None
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def started(self, exec_id: str, workflow_id: str, name: str, attempt: int) -> None:
        self.execute(
            "INSERT INTO {t} (exec_id, workflow_id, activity, attempt, pid, identity, started_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (exec_id) DO NOTHING",
            (exec_id, workflow_id, name, attempt, os.getpid(), IDENTITY, time.time()),
        )

    def ended(self, exec_id: str) -> None:
        # COALESCE: a retried write whose first try did commit keeps the first time.
        self.execute("UPDATE {t} SET ended_at = COALESCE(ended_at, %s) WHERE exec_id = %s",
                     (time.time(), exec_id))


RECORD: Recorder | None = None  # set in worker processes


async def _execute(name: str, value: str, seconds: float) -> str:
    assert RECORD is not None
    info = activity.info()
    exec_id = uuid.uuid4().hex
    await asyncio.to_thread(RECORD.started, exec_id, info.workflow_id, name, info.attempt)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(RECORD.ended, exec_id)
    return f"{name}({value})"


@activity.defn
async def first(value: str, seconds: float) -> str:
    return await _execute("first", value, seconds)


@activity.defn
async def second(value: str, seconds: float) -> str:
    return await _execute("second", value, seconds)


@activity.defn
async def third(value: str, seconds: float) -> str:
    return await _execute("third", value, seconds)


@workflow.defn
class ChaosWorkflow:
    def __init__(self) -> None:
        self.tokens: list[str] = []

    @workflow.signal
    def proceed(self, token: str) -> None:
        self.tokens.append(token)

    @workflow.run
    async def run(self, key: str, seconds: float, timer: float) -> str:
        opts: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=60)}
        a = await workflow.execute_activity(first, args=[key, seconds], **opts)
        b = await workflow.execute_activity(second, args=[a, seconds], **opts)
        await workflow.wait_condition(lambda: bool(self.tokens))
        before = workflow.now()
        await workflow.sleep(timer)
        slept = (workflow.now() - before).total_seconds()
        c = await workflow.execute_activity(third, args=[b + "+" + ",".join(self.tokens), seconds], **opts)
        return c + ("|timer-ok" if slept >= timer else f"|timer-short:{slept:.3f}")


# --------------------------------------------------------------------------- processes


async def run_worker(target: str, namespace: str, task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(target, namespace=namespace)
    worker = Worker(client, task_queue=task_queue, workflows=[ChaosWorkflow],
                    activities=[first, second, third], identity=IDENTITY)
    print(f"READY {os.getpid()} {IDENTITY}", flush=True)
    await worker.run()


def emit(**line: Any) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def retry(make: Any, until: float, final: tuple[type[BaseException], ...] = ()) -> Any:
    """Await ``make()`` until it succeeds, raises one of ``final``, or ``until`` passes."""
    while True:
        try:
            return await make()
        except final:
            raise
        except Exception:
            if time.monotonic() > until:
                raise
            await asyncio.sleep(0.5)


class ChaosClient:
    def __init__(self, client: Any, task_queue: str) -> None:
        self.client = client
        self.tq = task_queue

    async def run(self, req: dict[str, Any]) -> dict[str, Any]:
        from temporalio.client import WorkflowFailureError
        from temporalio.exceptions import WorkflowAlreadyStartedError

        n, rate, tag = req["n"], req["rate"], req["tag"]
        args = [req["seconds"], req["timer"]]
        t0 = time.monotonic()
        last_start = t0 + n / rate
        until = last_start + req["deadline"]
        pending: set[str] = set()

        async def one(i: int) -> None:
            wid = f"{tag}-{i:05d}"
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))

            async def start() -> None:
                try:
                    await self.client.start_workflow(ChaosWorkflow.run, args=[wid, *args], id=wid,
                                                     task_queue=self.tq)
                except WorkflowAlreadyStartedError:
                    pass  # an earlier try did start it

            await retry(start, until)
            pending.add(wid)
            emit(ev="started", id=wid, t=time.time())
            delay = random.Random(wid).uniform(req["signal_min"], req["signal_max"])
            handle = self.client.get_workflow_handle(wid)
            sig = asyncio.create_task(self._signal(handle, f"sig-{wid}", delay, until))
            try:
                value = await retry(handle.result, until, (WorkflowFailureError,))
                emit(ev="result", id=wid, value=value, t=time.time())
            except WorkflowFailureError as err:
                emit(ev="failed", id=wid, error=f"{err}: {err.cause}", t=time.time())
            pending.discard(wid)
            await sig

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        _, late = await asyncio.wait(tasks, timeout=max(1.0, until - time.monotonic()))
        for t in late:
            t.cancel()
        errors = [repr(t.exception()) for t in tasks if t.done() and not t.cancelled() and t.exception()]
        return {"ev": "done", "lost": sorted(pending), "errors": errors[:20]}

    async def _signal(self, handle: Any, token: str, delay: float, until: float) -> None:
        await asyncio.sleep(delay)
        tries = 0

        async def send() -> None:
            nonlocal tries
            tries += 1
            await handle.signal(ChaosWorkflow.proceed, token)

        try:
            await retry(send, until)
        except Exception as err:
            emit(ev="signal_failed", id=handle.id, error=repr(err))
        if tries > 1:  # an earlier try may have been recorded too
            emit(ev="signal_retried", id=handle.id, tries=tries)

    async def histories(self, req: dict[str, Any]) -> dict[str, Any]:
        from temporalio.worker import Replayer

        until = time.monotonic() + req.get("timeout", 300)
        sem = asyncio.Semaphore(16)
        fetched: dict[str, Any] = {}
        fetch_errors: dict[str, str] = {}

        async def fetch(wid: str) -> None:
            async with sem:
                try:
                    fetched[wid] = await retry(self.client.get_workflow_handle(wid).fetch_history, until)
                except Exception as err:
                    fetch_errors[wid] = repr(err)

        await asyncio.gather(*(fetch(w) for w in req["ids"]))
        with open(req["out"], "w") as out:
            for wid in req["ids"]:
                if wid in fetched:
                    out.write(json.dumps({"id": wid, "events": summarise(fetched[wid])}) + "\n")
        to_replay = [fetched[w] for w in req["replay"] if w in fetched]
        by_run = {h.run_id: h.workflow_id for h in to_replay}

        async def each() -> Any:
            for h in to_replay:
                yield h

        results = await Replayer(workflows=[ChaosWorkflow]).replay_workflows(
            each(), raise_on_replay_failure=False
        )
        failures = {by_run.get(rid, rid): f"{type(e).__name__}: {e}" for rid, e in results.replay_failures.items()}
        return {"replayed": len(to_replay), "replay_failures": failures, "fetch_errors": fetch_errors}


def summarise(history: Any) -> list[list[Any]]:
    """[event id, type, time, identity, attempt, scheduled event id, activity type] per event."""
    from temporalio.api.enums.v1 import EventType

    out = []
    for ev in history.events:
        attrs = getattr(ev, ev.WhichOneof("attributes") or "", None)
        fields = attrs.DESCRIPTOR.fields_by_name if attrs is not None else {}
        out.append([
            ev.event_id,
            EventType.Name(ev.event_type).removeprefix("EVENT_TYPE_"),
            ev.event_time.ToNanoseconds() / 1e9,
            attrs.identity if "identity" in fields else "",
            attrs.attempt if "attempt" in fields and "scheduled_event_id" in fields else 0,
            attrs.scheduled_event_id if "scheduled_event_id" in fields else 0,
            attrs.activity_type.name if "activity_type" in fields else "",
        ])
    return out


async def run_client(target: str, namespace: str, task_queue: str) -> None:
    from temporalio.client import Client

    app = ChaosClient(await Client.connect(target, namespace=namespace), task_queue)
    loop = asyncio.get_running_loop()
    emit(ok=True, ready=os.getpid())
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        req = json.loads(line)
        try:
            out = await (app.run(req) if req["op"] == "run" else app.histories(req))
            emit(ok=True, **out)
        except Exception as err:  # every failure goes back to the harness
            emit(ok=False, error=f"{type(err).__name__}: {err}")


def main(argv: list[str]) -> None:
    global RECORD
    warnings.filterwarnings("ignore", message="Target host as URL")
    mode, target, namespace, task_queue = argv[1:5]
    if mode == "worker":
        RECORD = Recorder(argv[5])
        asyncio.run(run_worker(target, namespace, task_queue))
    elif mode == "client":
        asyncio.run(run_client(target, namespace, task_queue))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    # Import this file as a module of its own name, so the workflow sandbox re-imports it by name.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import chaos_app

    chaos_app.main(sys.argv)
