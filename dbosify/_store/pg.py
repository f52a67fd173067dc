"""Postgres under a `Store`: one bounded pool of connections per store and lane, shared by every
namespace; each session connects with our options (server-side prepared statements, the writer
flag the DBOS triggers read) and is known by its backend pid (our own NOTIFYs come back through
LISTEN); errors name the host, never the password.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from dbosify._store.errors import StoreError
from dbosify._store.lanes import WORK

ENV_PG_PREPARE = "DBOSIFY_PG_PREPARE"  # "0": no server-side prepared statements (poolers that drop them)
PG_RECONNECT_SECONDS = 15.0  # how long a transaction keeps retrying while Postgres is unreachable


class PgBackend:
    """The Postgres side of `dbosify._store.store.Store` (which sets this state up)."""

    _lock: threading.RLock
    _closed: bool
    _own_pids: dict[int, int]
    _pg_pool: queue.LifoQueue[Any]
    _pg_slots: dict[str, threading.BoundedSemaphore]
    _pg_url: str
    _pg_options: str
    _pg_app_name: dict[str, Any]
    pg_connect_timeout: int

    @property
    def pg_url(self) -> str:
        return self._pg_url

    def own_backend_pids(self) -> set[int]:
        """Our pooled connections' server processes: their NOTIFYs come back through LISTEN,
        but were delivered in-process at commit."""
        with self._lock:
            return set(self._own_pids.values())

    def track_backend(self, conn: Any, pid: int | None) -> None:
        """A connection made elsewhere is ours too (None: it is gone)."""
        with self._lock:
            if pid is None:
                self._own_pids.pop(id(conn), None)
            else:
                self._own_pids[id(conn)] = pid

    def _new_pg_conn(self) -> Any:
        import psycopg

        conn = psycopg.connect(**self.pg_connect_args())
        with self._lock:
            self._own_pids[id(conn)] = conn.info.backend_pid
        return conn

    def pg_connect_args(self) -> dict[str, Any]:
        """What our Postgres sessions connect with (for a connection made elsewhere, such as an
        asynchronous one on a worker's event loop)."""
        return {
            "conninfo": self._pg_url, "connect_timeout": self.pg_connect_timeout, "options": self._pg_options,
            "prepare_threshold": _pg_prepare_threshold(), **self._pg_app_name,
        }

    def _close_pg(self, conn: Any) -> None:
        with self._lock:
            self._own_pids.pop(id(conn), None)
        try:
            conn.close()
        except Exception:
            pass

    @contextmanager
    def _pg_connection(self, lane: str = WORK) -> Iterator[Any]:
        """A pooled Postgres connection: one bounded pool for every namespace of the store."""
        slots = self._pg_slots[lane]
        slots.acquire()
        try:
            try:
                conn = self._pg_pool.get_nowait()
            except queue.Empty:
                conn = self._new_pg_conn()
            ok = False
            try:
                yield conn
                ok = True
            finally:
                if ok and not conn.closed and not self._closed:
                    self._pg_pool.put(conn)
                else:
                    if conn.broken:
                        # The server went away (e.g. it restarted): the idle pooled connections
                        # are dead too; drop them all so a retry connects afresh.
                        self._drop_pooled()
                    self._close_pg(conn)
        finally:
            slots.release()

    def _drop_pooled(self) -> None:
        while True:
            try:
                conn = self._pg_pool.get_nowait()
            except queue.Empty:
                return
            self._close_pg(conn)

    def _lost(self, err: BaseException) -> StoreError:
        return self._pg_failure("lost the connection to", f"for over {PG_RECONNECT_SECONDS:g} s", err)

    def _pg_failure(self, what: str, detail: str, err: BaseException) -> StoreError:
        """An error naming the host (never the password) and the first line of ``err``."""
        parts = urlsplit(self._pg_url)
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if parts.password:
            msg = msg.replace(parts.password, "***")
        return StoreError(f"{what} Postgres at {_host_port(parts.netloc)} {detail}: {msg}")


def _pg_prepare_threshold() -> int | None:
    """After how many runs of a statement a session prepares it on the server (psycopg's
    ``prepare_threshold``): the hot statements are then neither parsed nor planned again, which
    halved the Postgres time of a workflow task. ``DBOSIFY_PG_PREPARE=0`` turns it off, for a
    pooler that does not keep a session's prepared statements (PgBouncer in transaction mode
    before 1.21)."""
    if os.environ.get(ENV_PG_PREPARE, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    return 2


def _host_port(netloc: str) -> str:
    """The host part of a URL's netloc, without user or password ("localhost:5432" if none);
    as written, so that a multi-host list (``h1:5432,h2:5433``) reads as given."""
    hosts = netloc.rsplit("@", 1)[-1]
    if not hosts:
        return "localhost:5432"
    return hosts if ":" in hosts.rsplit("]", 1)[-1] else f"{hosts}:5432"
