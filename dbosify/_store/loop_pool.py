"""Postgres connections that live on one event loop, for single statements on a hot path.

A transaction through `Store.transact` runs on a store thread: the loop hands it over, the
thread waits for the interpreter lock, and again after each round trip while the loop is busy.
A statement that is its own transaction (autocommit) can instead be sent from the loop, in the
step that has it: no hand-off, one round trip. Used where a user waits on it (a completed
activity's result, a query's answer); everything else goes through `Store.transact`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbosify._store.store import Store


class LoopPool:
    """Up to ``size`` autocommit connections, used from the loop that first uses the pool."""

    def __init__(self, store: Store, size: int = 3) -> None:
        self.store = store
        self.size = size
        self.loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[Any] = []
        self._count = 0
        self._waiting: list[asyncio.Future[None]] = []
        self._closed = False

    def usable(self) -> bool:
        """Whether a statement can go through this pool from the running loop."""
        if self._closed or self.store.is_sqlite:
            return False
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        return loop is self.loop

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (its own transaction) and return its rows."""
        conn = await self._take()
        ok = False
        try:
            cur = await conn.execute(sql, params)
            rows = list(await cur.fetchall()) if cur.description is not None else []
            ok = True
            return rows
        finally:
            await self._give(conn, ok)

    async def _take(self) -> Any:
        while True:
            if self._closed:
                raise RuntimeError("the pool is closed")
            if self._idle:
                return self._idle.pop()
            if self._count < self.size:
                self._count += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._count -= 1
                    self._wake_one()
                    raise
            fut = asyncio.get_running_loop().create_future()
            self._waiting.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiting:
                    self._waiting.remove(fut)

    async def _give(self, conn: Any, ok: bool) -> None:
        if ok and not self._closed:
            self._idle.append(conn)
        else:
            self._count -= 1
            await self._close(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            fut = self._waiting.pop(0)
            if not fut.done():
                fut.set_result(None)
                return

    async def _connect(self) -> Any:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(**self.store.pg_connect_args(), autocommit=True)
        self.store.track_backend(conn, conn.info.backend_pid)  # its NOTIFYs are fired in-process
        return conn

    async def _close(self, conn: Any) -> None:
        self.store.track_backend(conn, None)
        try:
            await conn.close()
        except Exception:
            pass

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._count -= 1
            await self._close(conn)
        for fut in self._waiting:
            if not fut.done():
                fut.set_result(None)
