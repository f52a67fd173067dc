"""The client and the worker on event loops other than asyncio's own: trio-asyncio and uvloop.

dbosify hands blocking work to its threads the way temporalio's core does (a future on the
running loop, resolved from the thread with ``call_soon_threadsafe``), never by asking the loop
for an executor: trio-asyncio refuses executors other than its own, and another loop may not
implement ``run_in_executor`` at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from conftest import new_namespace

from dbosify._store.threads import in_thread

APP = Path(__file__).with_name("loops_app.py")
LOOPS = [
    "trio",
    pytest.param(
        "uvloop", marks=pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not on Windows")
    ),
]


def _spawn(role: str, loop: str, url: str, namespace: str, wid: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(APP), role, loop, url, namespace, f"tq-{wid}", wid],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _finish(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> dict[str, Any]:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, f"{log.name} exited with {proc.returncode}:\n{text[-4000:]}"
    out: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loop", LOOPS)
def test_worker_and_client_processes_on_loop(loop: str, db_url: str, tmp_path: Path) -> None:
    """A worker process and a client process, each on ``loop``: start, signal, query, update,
    an async and a threaded activity, a timer, the result, describe; the worker then shuts down
    gracefully on that loop. dbosify never calls the loop's ``run_in_executor``."""
    namespace = new_namespace(db_url, "loops")
    wid = f"loops-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env.pop("DBOSIFY_DATABASE_URL", None)
    env.update(DBOSIFY_ACTIVATE="1", DBOSIFY_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    wlog, clog = tmp_path / "worker.log", tmp_path / "client.log"
    worker = _spawn("worker", loop, db_url, namespace, wid, env, wlog)
    try:
        deadline = time.monotonic() + 60
        while "worker running" not in wlog.read_text(errors="replace"):
            assert worker.poll() is None, wlog.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        client = _spawn("client", loop, db_url, namespace, wid, env, clog)
        seen = _finish(client, clog, 90)
        done = _finish(worker, wlog, 60)
    finally:
        for proc in (worker, locals().get("client")):
            if isinstance(proc, subprocess.Popen) and proc.poll() is None:
                proc.kill()
                proc.wait()
    kind = "trio_asyncio" if loop == "trio" else "uvloop"
    expected = [f"LOOP on {kind}", "loop from a thread", "one", "two"]
    assert seen["loop"] == done["loop"] == kind
    assert seen["seen"] == ["one", "two"] and seen["counted"] == 2
    assert seen["result"] == done["result"] == expected
    assert seen["status"] == "COMPLETED"
    assert seen["executor_calls"] == [] and done["executor_calls"] == []


def _on_loop(loop: str, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    if loop == "trio":
        import trio_asyncio

        return trio_asyncio.run(trio_asyncio.aio_as_trio(make))
    import uvloop

    class OwnExecutorsOnly(uvloop.Loop):  # type: ignore[misc, name-defined]
        """uvloop, refusing executors of others as trio-asyncio's loop does."""

        def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:
            if executor is not None:
                raise TypeError("this loop runs only its own executor")
            return super().run_in_executor(executor, func, *args)

    ev = OwnExecutorsOnly()
    try:
        return ev.run_until_complete(make())
    finally:
        ev.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_store_transactions_in_process_on_loop(loop: str, db_url: str) -> None:
    """The store's transactions, from a loop of ``loop``'s kind in this process (uvloop here
    refuses executors other than its own, as trio-asyncio does), with our own thread pools; and
    work cancelled before a thread took it never runs."""
    from dbosify._store import get_store, resolve_url

    store = get_store(resolve_url(db_url))
    namespace = new_namespace(db_url, "loops")
    ran: list[str] = []

    async def main() -> list[Any]:
        got = await asyncio.gather(
            *(store.transact(namespace, lambda tx, i=i: tx.one("SELECT %s", (i,))[0]) for i in range(20))
        )
        return list(got)

    assert _on_loop(loop, main) == list(range(20))

    # One thread: the first call holds it, so the second is still queued when it is cancelled.
    pool = concurrent.futures.ThreadPoolExecutor(1)
    gate = threading.Event()

    async def cancel_queued() -> str:
        first = asyncio.ensure_future(in_thread(gate.wait, 10, executor=pool))
        second = asyncio.ensure_future(in_thread(ran.append, "second", executor=pool))
        await asyncio.sleep(0.05)
        second.cancel()
        await asyncio.sleep(0)
        gate.set()
        await first
        try:
            await second
        except asyncio.CancelledError:
            return "cancelled"
        return "ran"

    assert _on_loop(loop, cancel_queued) == "cancelled"
    pool.shutdown(wait=True)
    assert ran == []


@pytest.mark.parametrize("loop", LOOPS)
def test_outcome_after_the_loop_closed_is_dropped(loop: str) -> None:
    """Work that finishes after its caller's loop has closed ends quietly in its thread (the
    loop refuses ``call_soon_threadsafe`` then, each in its own way)."""
    gate = threading.Event()
    errors: list[BaseException] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value or RuntimeError())
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def slow() -> str:
        gate.wait(10)
        return "late"

    async def leave_early() -> None:
        task = asyncio.ensure_future(in_thread(slow, executor=pool))
        await asyncio.sleep(0.05)
        task.cancel()  # the loop ends while the thread still works

    try:
        _on_loop(loop, leave_early)
        gate.set()
        pool.shutdown(wait=True)
        # A thread of its own (no executor) too.
        gate.clear()
        _on_loop(loop, lambda: _leave_early_own_thread(slow))
        gate.set()
        for t in threading.enumerate():
            if t.name == "dbosify-call":
                t.join(10)
    finally:
        threading.excepthook = old_hook
    assert errors == []


async def _leave_early_own_thread(fn: Callable[[], str]) -> None:
    task = asyncio.ensure_future(in_thread(fn))
    await asyncio.sleep(0.05)
    task.cancel()
