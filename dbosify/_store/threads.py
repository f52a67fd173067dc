"""Blocking work handed from an event loop to a thread and back, on any asyncio-compatible loop.

temporalio's own core never asks the running loop for an executor: it creates a future on the
loop, does the work on its own threads and resolves the future with
``loop.call_soon_threadsafe``. dbosify does the same, so the client and the worker run on any
loop that implements asyncio's loop interface (asyncio's own, uvloop, trio-asyncio, ...).
``loop.run_in_executor`` is not used: trio-asyncio, for one, accepts only executors of its own
there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(
    fn: Callable[..., T], *args: Any, executor: concurrent.futures.Executor | None = None
) -> T:
    """``fn(*args)`` on one of ``executor``'s threads (without one, on a thread of its own),
    awaited on the running loop.

    Cancelling the caller cancels the work if no thread has started it yet, as
    ``run_in_executor`` does; a result that arrives after the caller was cancelled, or after
    its loop closed, is dropped.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    call = functools.partial(fn, *args) if args else fn
    if executor is None:
        thread = threading.Thread(
            target=_run_and_post, args=(call, loop, fut), name="dbosify-call", daemon=False
        )
        thread.start()
        return await fut
    work = executor.submit(_run_and_post, call, loop, fut)
    fut.add_done_callback(functools.partial(_cancel_work, work))
    return await fut


def _run_and_post(call: Callable[[], T], loop: asyncio.AbstractEventLoop, fut: asyncio.Future[T]) -> None:
    """In the thread: run ``call`` and hand its outcome to ``fut``'s loop."""
    try:
        result = call()
    except BaseException as err:  # the caller gets it, as from run_in_executor
        _post(loop, _set_exception, fut, err)
        return
    _post(loop, _set_result, fut, result)


def _post(loop: asyncio.AbstractEventLoop, setter: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(setter, *args)
    except RuntimeError:
        pass  # the loop has closed (trio's RunFinishedError is one too): nobody waits any more


def _set_result(fut: asyncio.Future[T], result: T) -> None:
    if not fut.done():  # cancelled meanwhile
        fut.set_result(result)


def _set_exception(fut: asyncio.Future[Any], err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)


def _cancel_work(work: concurrent.futures.Future[None], fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        work.cancel()  # only if no thread has started it
