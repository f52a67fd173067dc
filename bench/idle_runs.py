"""Idle runs: a worker's memory with many runs waiting on a signal, and how soon a restarted
worker serves a signal to one of them after the previous one was SIGKILLed.

    python -m bench.idle_runs [--runs 5000] [--db postgresql://postgres@127.0.0.1:5432/test]
                              [--max-cached N]

Prints one JSON object: the worker's RSS once every run waits (``rss_mb``), the number of
dormant runs then, and ``restart_to_signal_s``: from spawning a fresh worker process (after a
SIGKILL of the first) to the result of a run signalled at that moment. Works on any dbosify
of the same native interface (``PYTHONPATH`` picks which), in a fresh namespace per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import dbosify

dbosify.activate()  # before temporalio is imported

from temporalio import workflow  # noqa: E402


@workflow.defn(name="IdleWaiter")
class IdleWaiter:
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


async def _worker(url: str, ns: str, tq: str, max_cached: int) -> None:
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client = await Client.connect(url, namespace=ns)
    kw: dict[str, Any] = {} if max_cached < 0 else {"max_cached_workflows": max_cached}
    async with Worker(client, task_queue=tq, workflows=[IdleWaiter],
                      workflow_runner=UnsandboxedWorkflowRunner(), **kw):
        print("ready", flush=True)
        await asyncio.Event().wait()


def _spawn(url: str, ns: str, tq: str, max_cached: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DBOSIFY_ACTIVATE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.idle_runs", "--worker", url, ns, tq, str(max_cached)],
        env=env, stdout=subprocess.PIPE,
    )


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _main(url: str, runs: int, max_cached: int) -> dict[str, Any]:
    from temporalio.client import Client

    from dbosify._store import get_store

    ns = f"idle{uuid.uuid4().hex[:10]}"
    tq = "idle"
    # Registered as this process and the worker processes connect (a dbosify from before
    # namespaces had to be registered ignores it).
    os.environ["DBOSIFY_NAMESPACES"] = ns
    client = await Client.connect(url, namespace=ns)
    store = get_store(url)
    out: dict[str, Any] = {"runs": runs, "max_cached": max_cached if max_cached >= 0 else "default"}
    worker = _spawn(url, ns, tq, max_cached)
    assert worker.stdout is not None
    await asyncio.to_thread(worker.stdout.readline)
    try:
        ids = [f"idle-{i}" for i in range(runs)]
        for i in range(0, runs, 100):
            await asyncio.gather(*(
                client.start_workflow("IdleWaiter", id=w, task_queue=tq) for w in ids[i:i + 100]
            ))

        def waiting(tx: Any) -> int:
            row = tx.one(
                "SELECT count(*) FROM executions WHERE task_queue = %s AND status = 1"
                " AND next_event_id >= 5", (tq,),
            )
            return int(row[0])

        t0 = time.monotonic()
        while await store.transact(ns, waiting) < runs:
            await asyncio.sleep(0.2)
        out["all_waiting_s"] = round(time.monotonic() - t0, 2)
        await asyncio.sleep(5)  # let evictions (if any) finish and the heap settle
        out["rss_mb"] = round(_rss_mb(worker.pid), 1)
        try:
            dormant = await store.transact(ns, lambda tx: tx.one(
                "SELECT count(*) FROM executions WHERE task_queue = %s AND dormant = 1", (tq,)))
            out["dormant"] = int(dormant[0])
        except Exception:
            out["dormant"] = None  # a dbosify without dormant runs
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        t0 = time.monotonic()
        worker = _spawn(url, ns, tq, max_cached)
        handle = client.get_workflow_handle(ids[runs // 2])
        await handle.signal("give", "hello")
        assert await handle.result() == "hello"
        out["restart_to_signal_s"] = round(time.monotonic() - t0, 2)
        await asyncio.sleep(3)
        out["rss_mb_after_restart"] = round(_rss_mb(worker.pid), 1)
    finally:
        worker.kill()
        worker.wait()
        store.drop_namespace(ns)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--max-cached", type=int, default=-1, help="default: temporalio's (1000)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(_main(args.db, args.runs, args.max_cached))))


if __name__ == "__main__":
    main()
