"""The LISTEN connection of a process (`dbosify._store.delivery.PgListener`): it sleeps while
nothing happens, and still delivers other sessions' notifications, and a new namespace's
LISTEN, at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from dbosify._store.delivery import PgListener
from dbosify._store.store import Store


@pytest.fixture
async def store(_pg_session_url: str) -> AsyncIterator[Store]:
    s = Store(_pg_session_url)
    s.namespaces_made = []  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        for ns in s.namespaces_made:  # type: ignore[attr-defined]
            s.drop_namespace(ns)
        s.close()


def _namespace(store: Store) -> str:
    ns = f"ls{uuid.uuid4().hex[:10]}"
    store.register_namespace(ns)
    store.ident(ns)
    store.namespaces_made.append(ns)  # type: ignore[attr-defined]
    return ns


def _listener(store: Store) -> PgListener:
    listener = store._delivery
    assert isinstance(listener, PgListener)
    return listener


async def _notify_elsewhere(url: str, channel: str, key: str) -> None:
    def send() -> None:
        with psycopg.connect(url, autocommit=True) as conn:  # not one of the store's sessions
            conn.execute("SELECT pg_notify(%s, %s)", (channel, key))

    await asyncio.to_thread(send)


async def test_idle_listener_sleeps(store: Store) -> None:
    fut = store.waiter(_namespace(store), ["nothing"])  # the listener runs, LISTENing
    listener = _listener(store)
    looks = 0
    run_commands = listener._run_commands

    def counting(conn: object) -> None:
        nonlocal looks
        looks += 1
        run_commands(conn)

    listener._run_commands = counting  # type: ignore[method-assign]
    await asyncio.sleep(3)
    fut.cancel()
    # About once a second while nothing happens (it used to look every 50 ms: 50 to 60 times here).
    assert looks <= 5, looks


async def test_idle_listener_wakes_at_once(store: Store, _pg_session_url: str) -> None:
    first = _namespace(store)
    fut = store.waiter(first, ["k1"])
    await asyncio.sleep(1.5)  # the listener is well into an idle wait
    t0 = time.monotonic()
    await _notify_elsewhere(_pg_session_url, store.ident(first), "k1")
    await asyncio.wait_for(fut, 5)
    assert time.monotonic() - t0 < 0.5

    # A namespace waited on for the first time: its LISTEN is in effect once `ensure` returns,
    # which does not wait for the listener's idle wait to end.
    second = _namespace(store)
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await asyncio.to_thread(_listener(store).ensure, second)
    assert time.monotonic() - t0 < 0.5
    fut = store.waiter(second, ["k2"])
    await _notify_elsewhere(_pg_session_url, store.ident(second), "k2")
    await asyncio.wait_for(fut, 5)


async def test_listener_ends_with_its_store(_pg_session_url: str) -> None:
    store = Store(_pg_session_url)
    ns = f"ls{uuid.uuid4().hex[:10]}"
    try:
        store.register_namespace(ns)
        store.ident(ns)
        store.waiter(ns, ["k"]).cancel()
        await asyncio.sleep(1.2)
        thread = _listener(store)._thread
        assert thread is not None and thread.is_alive()
    finally:
        store.drop_namespace(ns)
        store.close()
    await asyncio.to_thread(thread.join, 0.5)
    assert not thread.is_alive()
