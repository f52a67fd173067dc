"""A client or worker made before os.fork refuses use in the child, as Core's do, instead of
hanging on the parent's threads and connections."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid

import pytest
from temporalio.client import Client


def _use_in_child(client: Client, conn: object) -> None:
    async def use() -> None:
        await client.start_workflow("Anything", id=f"w-{uuid.uuid4()}", task_queue="nobody")

    try:
        asyncio.run(use())
        result = "ok"
    except BaseException as err:  # what the child saw
        result = f"{type(err).__name__}: {err}"
    conn.send(result)  # type: ignore[attr-defined]


def test_client_is_refused_across_fork(client: Client) -> None:
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        pytest.skip("no fork on this platform")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_use_in_child, args=(client, child))
    proc.start()
    assert parent.poll(30), "the child hung"
    got = parent.recv()
    proc.join(10)
    assert got.startswith("AssertionError: Cannot use client across forks"), got
