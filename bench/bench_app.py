"""The benchmarked app: written only against the ``temporalio`` API and the standard library.

The bench runs this one file, unchanged, on every backend: with the real temporalio (its own
venv, no dbosify installed) against a Temporal dev server, and through the dbosify hook
(``DBOSIFY_ACTIVATE=1``) on Postgres or SQLite. Nothing here knows which one it is on.
Workers use temporalio's defaults (sandboxed workflow runner, default concurrency limits).

Two modes::

    python bench/bench_app.py worker TARGET TASK_QUEUE MARKER_FILE
    python bench/bench_app.py client TARGET TASK_QUEUE

``worker`` runs a ``Worker`` for the workflows and activities below, prints ``READY <pid>``
once it is built, and shuts down gracefully on SIGTERM or SIGINT.

``client`` reads one JSON request per line on stdin and answers each with one JSON line on
stdout, ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``. Each request is a whole
workload step (see ``Client.handle``); the bench times it from outside as well.

Activities of W6 (``slow``) append ``start``/``done`` lines to MARKER_FILE, outside the
database under test, so that the bench can count executions across a SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import warnings
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

MARKER = ""  # set in worker processes

# One activity timeout for every workload. With no heartbeat, an attempt lost with its worker
# is retried by Temporal only after this timeout; dbosify re-runs it once the worker's
# liveness row has expired. W6 depends on it, so it is stated in bench/README.md.
ACTIVITY_TIMEOUT = timedelta(seconds=10)


# --------------------------------------------------------------------------- activities


@activity.defn
async def echo(value: int) -> int:
    return value


def _mark(phase: str) -> None:
    info = activity.info()
    line = f"{info.workflow_id}:{info.activity_id}:{info.attempt}:{phase}:{os.getpid()}:{time.time():.6f}\n"
    # O_APPEND writes of one short line are atomic; the page cache survives a SIGKILL.
    fd = os.open(MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@activity.defn
async def slow(seconds: float) -> str:
    _mark("start")
    await asyncio.sleep(seconds)
    _mark("done")
    return activity.info().activity_id


# --------------------------------------------------------------------------- workflows


@workflow.defn
class OneActivity:
    """W1, W2: one activity."""

    @workflow.run
    async def run(self, value: int) -> int:
        return await workflow.execute_activity(
            echo, value, start_to_close_timeout=ACTIVITY_TIMEOUT
        )


@workflow.defn
class Sequential:
    """W3: ``count`` activities one after another."""

    @workflow.run
    async def run(self, count: int) -> int:
        total = 0
        for i in range(count):
            total += await workflow.execute_activity(
                echo, i, start_to_close_timeout=ACTIVITY_TIMEOUT
            )
        return total


@workflow.defn
class Counter:
    """W4: counts signals until it has seen ``target``; answers a query and an update."""

    def __init__(self) -> None:
        self.signals = 0
        self.updates = 0

    @workflow.signal
    def bump(self) -> None:
        self.signals += 1

    @workflow.query
    def count(self) -> int:
        return self.signals

    @workflow.update
    def add(self, amount: int) -> int:
        self.updates += amount
        return self.updates

    @workflow.run
    async def run(self, target: int) -> int:
        await workflow.wait_condition(lambda: self.signals >= target)
        return self.signals


@workflow.defn
class Sleeper:
    """W5: one durable timer."""

    @workflow.run
    async def run(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


@workflow.defn
class Batch:
    """W6: ``count`` slow activities one after another."""

    @workflow.run
    async def run(self, count: int, seconds: float) -> list[str]:
        out = []
        for _ in range(count):
            out.append(
                await workflow.execute_activity(
                    slow, seconds, start_to_close_timeout=ACTIVITY_TIMEOUT
                )
            )
        return out


@workflow.defn
class Waiter:
    """W7: waits for the ``release`` signal."""

    def __init__(self) -> None:
        self.released = False

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.query
    def ready(self) -> bool:
        return True

    @workflow.run
    async def run(self) -> bool:
        await workflow.wait_condition(lambda: self.released)
        return True


WORKFLOWS = [OneActivity, Sequential, Counter, Sleeper, Batch, Waiter]
ACTIVITIES = [echo, slow]


# --------------------------------------------------------------------------- processes


def _metrics_runtime() -> Any:
    """With BENCH_PROMETHEUS=1: a runtime exporting metrics on a Prometheus endpoint (a free
    loopback port), to measure what metrics cost."""
    if os.environ.get("BENCH_PROMETHEUS") != "1":
        return None
    import socket

    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))


async def connect(target: str) -> Any:
    """``Client.connect``, retried for a while: a dev server may still be starting."""
    from temporalio.client import Client

    deadline = time.monotonic() + 60
    runtime = _metrics_runtime()
    while True:
        try:
            return await Client.connect(target, runtime=runtime) if runtime else await Client.connect(target)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run_worker(target: str, task_queue: str) -> None:
    from temporalio.worker import Worker

    client = await connect(target)
    worker = Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=ACTIVITIES)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {os.getpid()}", flush=True)
    run = asyncio.create_task(worker.run())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([run, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not run.done():
        await worker.shutdown()
    await run


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


class AppClient:
    def __init__(self, client: Any, task_queue: str) -> None:
        self.client = client
        self.tq = task_queue

    async def start(self, wf: Any, *args: Any, id: str) -> Any:
        return await self.client.start_workflow(wf, args=list(args), id=id, task_queue=self.tq)

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        tag = req.get("tag", "x")
        c = self.client
        if op == "warmup":
            # One workflow end to end: loads the workflow sandbox, the caches, the connections.
            await c.execute_workflow(OneActivity.run, 0, id=f"{tag}-warmup", task_queue=self.tq)
            return {}
        if op == "throughput":  # W1
            n = req["n"]
            t0 = time.perf_counter()
            handles = await asyncio.gather(
                *(self.start(OneActivity.run, i, id=f"{tag}-{i}") for i in range(n))
            )
            results = await asyncio.gather(*(h.result() for h in handles))
            seconds = time.perf_counter() - t0
            assert results == list(range(n)), "wrong results"
            return {"seconds": seconds}
        if op == "latency":  # W2
            samples = []
            for i in range(req["m"]):
                t0 = time.perf_counter()
                r = await c.execute_workflow(
                    OneActivity.run, i, id=f"{tag}-{i}", task_queue=self.tq
                )
                samples.append(time.perf_counter() - t0)
                assert r == i
            return {"samples": samples}
        if op == "sequential":  # W3
            k = req["k"]
            t0 = time.perf_counter()
            r = await c.execute_workflow(Sequential.run, k, id=f"{tag}-seq", task_queue=self.tq)
            seconds = time.perf_counter() - t0
            assert r == k * (k - 1) // 2
            return {"seconds": seconds}
        if op == "messages":  # W4
            s, q, u = req["s"], req["q"], req["u"]
            h = await self.start(Counter.run, s, id=f"{tag}-counter")
            await h.query(Counter.count)  # the worker holds the run from here on
            queries = []
            for _ in range(q):
                t0 = time.perf_counter()
                await h.query(Counter.count)
                queries.append(time.perf_counter() - t0)
            updates = []
            for i in range(u):
                t0 = time.perf_counter()
                got = await h.execute_update(Counter.add, 1)
                updates.append(time.perf_counter() - t0)
                assert got == i + 1
            t0 = time.perf_counter()
            for _ in range(s):
                await h.signal(Counter.bump)
            seen = await h.result()
            signal_seconds = time.perf_counter() - t0
            assert seen == s
            return {"signal_seconds": signal_seconds, "query": queries, "update": updates}
        if op == "timers":  # W5
            t = req["t"]
            t0 = time.perf_counter()
            handles = await asyncio.gather(
                *(self.start(Sleeper.run, req["seconds"], id=f"{tag}-{i}") for i in range(t))
            )
            await asyncio.gather(*(h.result() for h in handles))
            return {"seconds": time.perf_counter() - t0}
        if op == "batch_start":  # W6
            await asyncio.gather(
                *(
                    self.start(Batch.run, req["k"], req["seconds"], id=f"{tag}-{i}")
                    for i in range(req["n"])
                )
            )
            return {}
        if op == "batch_results":
            results = await asyncio.gather(
                *(c.get_workflow_handle(f"{tag}-{i}").result() for i in range(req["n"]))
            )
            assert all(len(r) == req["k"] for r in results)
            return {}
        if op == "wait_start":  # W7
            n = req["n"]
            t0 = time.perf_counter()
            handles = await gather_limited(
                [self.start(Waiter.run, id=f"{tag}-{i}") for i in range(n)], 100
            )
            # A query is answered only by a worker that holds the run in memory.
            ready = await gather_limited([h.query(Waiter.ready) for h in handles], 50)
            assert all(ready)
            return {"seconds": time.perf_counter() - t0}
        if op == "wait_release":
            n = req["n"]
            t0 = time.perf_counter()
            handles = [c.get_workflow_handle(f"{tag}-{i}") for i in range(n)]
            await gather_limited([h.signal(Waiter.release) for h in handles], 100)
            await gather_limited([h.result() for h in handles], 200)
            return {"seconds": time.perf_counter() - t0}
        raise ValueError(f"unknown op {op!r}")


async def run_client(target: str, task_queue: str) -> None:
    app = AppClient(await connect(target), task_queue)
    loop = asyncio.get_running_loop()
    print(json.dumps({"ok": True, "ready": os.getpid()}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            out = {"ok": True, **(await app.handle(json.loads(line)))}
        except Exception as err:  # every failure goes back to the bench
            out = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(out), flush=True)


def main(argv: list[str]) -> None:
    global MARKER
    warnings.filterwarnings("ignore", message="Target host as URL")
    mode, target, task_queue = argv[1:4]
    if mode == "worker":
        MARKER = argv[4]
        asyncio.run(run_worker(target, task_queue))
    elif mode == "client":
        asyncio.run(run_client(target, task_queue))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    # Import this file as a real module (not __main__) so the workflow sandbox re-imports the
    # workflows by name, exactly as it does for an app's own module.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_app

    bench_app.main(sys.argv)
