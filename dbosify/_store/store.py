"""The database behind a connection: Postgres or an embedded SQLite file.

One `Store` per database URL per process. It owns the connections, finds each namespace's
tables (a Postgres schema or a SQLite file per namespace, see `namespaces` and `migrations`),
runs transactions off the event loop with transient errors retried, and delivers wake-ups: an
in-process hub that wakes waiters as soon as a transaction commits, and across processes
Postgres LISTEN/NOTIFY or, on SQLite, a `notices` table read by one watcher thread.

`Store` is built from `catalog.NamespaceCatalog` (each namespace's tables), `retrying.Retrying`
(transient errors), `pg.PgBackend` and `sqlite.SqliteBackend`; this module sets up their state
and runs the transactions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dbosify._metrics import engine as engine_metrics
from dbosify._store import delivery, files
from dbosify._store import limits as limits_mod
from dbosify._store.catalog import ENV_NAMESPACES, NamespaceCatalog, env_namespaces
from dbosify._store.clock import Clock
from dbosify._store.errors import (
    StoreError,
    as_invalid_data,
)
from dbosify._store.lanes import BEAT, FACT, LANES, REAP, WORK
from dbosify._store.sqlite import _close_sqlite
from dbosify._store.threads import in_thread
from dbosify._store.urls import mask_url, parse_url
from dbosify._store.virtual_clock import VirtualClock
from dbosify._store.wakeups import Hub

logger = logging.getLogger("dbosify")

# The lanes are imported from here too.
__all__ = [
    "BEAT", "ENV_NAMESPACES", "FACT", "LANES", "REAP", "WORK", "Store", "Tx", "env_namespaces",
    "forget_store", "get_store",
]

T = TypeVar("T")

# Every session of ours: a stopped (SIGSTOPped) process must not hold locks that others wait on.
# Postgres ends a session left idle inside a transaction, and a statement that waits for a lock
# gives up and is retried, so a frozen worker's row locks go within about a second.
PG_SESSION_OPTIONS = (
    "-c idle_in_transaction_session_timeout=1000 -c lock_timeout=3000 -c statement_timeout=60000"
    " -c dbosify.writer=on"  # the DBOS triggers (dbosify._store.dbos_setup) tell our writes apart
)
# Runs' DBOS rows (docs/COMPATIBILITY.md): "1" in DBOS's shared schema (Postgres), "namespace" in
# each namespace's own schema, "0" none; and namespaces whose runs have none (comma-separated).
# Every process of a deployment must use the same values.
ENV_DBOS = "DBOSIFY_DBOS"
ENV_DBOS_OFF = "DBOSIFY_DBOS_OFF"


class Tx:
    """One open transaction on one namespace."""

    def __init__(self, store: Store, conn: Any, namespace: str) -> None:
        self.store = store
        self.namespace = namespace
        self._conn = conn
        self._cur = conn.cursor()
        self._last = self._cur  # the cursor of the latest statement
        self.keys_to_fire: set[str] = set()
        self.published: set[str] = set()  # keys already sent to other processes (pg_notify)
        # An earlier attempt of this transaction lost its connection, maybe after its COMMIT
        # reached the server: what it wrote may be there already.
        self.commit_may_have_landed = False
        # Coalesced (`Store.transact_sync(..., coalesced=True)`): statements rendered with their
        # values, waiting to go out in one message with the next statement or the COMMIT.
        self.coalesced = False
        self._deferred: list[str] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.store.is_sqlite:
            sql = sql.replace("%s", "?")
        engine_metrics.STATS.statements += 1  # the engine's metrics (a counter, no I/O)
        if self._deferred:
            return self._send_deferred(sql, params)
        self._cur.execute(sql, tuple(params))
        self._last = self._cur
        return self._cur

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.store.is_sqlite:
            sql = sql.replace("%s", "?")
        if self._deferred:
            self._send_deferred("SELECT 1", ())  # what was deferred goes first
        self._cur.executemany(sql, [tuple(r) for r in rows])

    def defer(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A statement whose answer is not needed. In a coalesced transaction it goes out with
        the next statement or the COMMIT (so its error, if any, surfaces there); otherwise now."""
        if not self.coalesced:
            self.execute(sql, params)
            return
        self._deferred.append(self._render(sql, params))

    def _send_deferred(self, sql: str, params: Sequence[Any]) -> Any:
        """The deferred statements and this one in one message (the simple query protocol, so
        values are rendered here); the cursor is left on this statement's result."""
        from psycopg import ClientCursor

        text = "; ".join([*self._deferred, self._render(sql, params)])
        self._deferred.clear()
        cur = ClientCursor(self._conn)
        cur.execute(text)
        while cur.nextset():
            pass
        self._last = cur
        return cur

    def _render(self, sql: str, params: Sequence[Any]) -> str:
        from psycopg import ClientCursor

        return ClientCursor(self._conn).mogrify(sql, tuple(params)) if params else sql

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._last.rowcount)

    def lease(self) -> None:
        """Mark this transaction as taking a lease (e.g. claiming an activity attempt).

        On Postgres it then commits without waiting for the WAL flush: if the server crashes
        before the flush, the claim is lost and the attempt is handed out again, exactly as when
        the claiming worker dies. Facts (history, results) never use this.
        """
        if not self.store.is_sqlite:
            self.execute("SET LOCAL synchronous_commit = off")

    def notify(self, key: str) -> None:
        """Wake waiters on ``key`` (in this namespace) once this transaction commits."""
        self.keys_to_fire.add(key)


class Store(NamespaceCatalog):
    """Connections and transactions for one database URL."""

    def limits_for(self, namespace: str) -> limits_mod.Limits:
        """The limits of ``namespace``: its own, else the store's."""
        return self.namespace_limits.get(namespace) or self.limits

    @property
    def blob_size_limit(self) -> int:
        """The store's ``limit.blobSize.error``: requests and workers' payloads are held to it."""
        return self.limits.blob_error

    @blob_size_limit.setter
    def blob_size_limit(self, value: int) -> None:
        self.limits.blob_error = value

    def __init__(self, url: str) -> None:
        target = parse_url(url)  # raises StoreError for a URL it cannot use
        self.url = url
        self.masked_url = mask_url(url)
        self.is_sqlite = target.is_sqlite
        self.hub = Hub()
        # Temporal's limits (ids, payloads, history; see dbosify/_store/limits.py): Temporal's
        # defaults, or a dev server's `limit.*` dynamic config; a namespace may have its own.
        try:
            self.limits = limits_mod.from_env(os.environ)
        except ValueError as bad:
            raise StoreError(str(bad)) from None
        self.namespace_limits: dict[str, limits_mod.Limits] = {}
        self.clock: Clock = Clock()  # the wall clock, unless a time-skipping env sets its own
        self.server: str | None = target.server
        self._lock = threading.RLock()
        self._idents: dict[str, str] = {}  # namespace -> schema or file stem, at the current version
        # Any namespace is registered by its first use (a time-skipping environment: the Java
        # test server does not check namespaces); otherwise only `namespaces.DEFAULT` is.
        self.open_namespaces = False
        self._env_registered: set[str] = set()  # DBOSIFY_NAMESPACES names registered by this process
        self._pg_pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._pg_slots = {lane: threading.BoundedSemaphore(n) for lane, n in LANES.items()}
        self._executors = {
            lane: ThreadPoolExecutor(n, thread_name_prefix=f"dbosify-{lane}")
            for lane, n in LANES.items()
        }
        self._sqlite_conns: dict[str, tuple[sqlite3.Connection, threading.Lock]] = {}
        self._closed = False
        # Backend pids of our pooled connections, by id(connection): our own NOTIFYs come back
        # through LISTEN, but were already delivered in-process at commit.
        self._own_pids: dict[int, int] = {}
        self.origin = uuid.uuid4().hex  # tells this process's own SQLite notices apart
        self.notices_written = 0
        self._retry_logged: set[str] = set()  # kinds of transient error already logged once
        self.dbos_enabled, self.dbos_per_namespace, self.dbos_off = _dbos_env()
        # Where DBOS's system tables are: a Postgres schema (None on SQLite: the namespace file).
        self.dbos_schema: str | None = (
            None if target.is_sqlite else (f"dbosify_{target.server}_dbos" if target.server else "dbos")
        )
        self._dbos_ready: set[str] = set()  # Postgres schemas whose DBOS setup is current
        self._sqlite_dir = target.sqlite_dir or Path()
        self._pg_url = target.pg_url or ""
        self._delivery: delivery.PgListener | delivery.SqliteWatcher = (
            delivery.SqliteWatcher(self) if self.is_sqlite else delivery.PgListener(self)
        )
        # Ours after the user's own (URL `options`, else PGOPTIONS), which a keyword would replace.
        self._pg_options = PG_SESSION_OPTIONS
        # libpq's connect_timeout, 10 s unless the URL (or PGCONNECT_TIMEOUT) sets it.
        self.pg_connect_timeout = 10
        if self._pg_url:
            from psycopg.conninfo import conninfo_to_dict

            given_info = conninfo_to_dict(self._pg_url)
            given = given_info.get("options") or os.environ.get("PGOPTIONS")
            if given:
                self._pg_options = f"{given} {PG_SESSION_OPTIONS}"
            timeout = given_info.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
            if timeout is not None:
                try:
                    self.pg_connect_timeout = max(2, int(str(timeout)))  # libpq's own minimum
                except ValueError:
                    raise StoreError(f"connect_timeout must be a whole number of seconds, not {timeout!r}") from None
        # Operators (and the crash tests) can tell which process holds a session.
        self._pg_app_name: dict[str, Any] = (
            {} if "application_name" in self._pg_url else {"application_name": f"dbosify:{os.getpid()}"}
        )

    @property
    def closed(self) -> bool:
        return self._closed

    # -- connections -------------------------------------------------------------------------

    def describe(self) -> str:
        if self.is_sqlite:
            return f"embedded SQLite in {self._sqlite_dir}"
        return f"Postgres at {self.masked_url}"

    def check(self) -> None:
        """Connect once, raising a `StoreError` that names the host and not the password."""
        if self.is_sqlite:
            try:
                files.private_dir(self._sqlite_dir)
            except OSError as err:
                raise StoreError(f"cannot create the SQLite directory {self._sqlite_dir}: {err}") from err
            if not os.access(self._sqlite_dir, os.W_OK | os.X_OK):
                raise StoreError(f"the SQLite directory {self._sqlite_dir} is not writable")
            return
        import psycopg

        try:
            conn = psycopg.connect(self._pg_url, connect_timeout=self.pg_connect_timeout, autocommit=True)
        except Exception as err:  # psycopg raises many kinds
            database = urlsplit(self._pg_url).path.lstrip("/") or "(default)"
            raise self._pg_failure("cannot connect to", f"(database {database})", err) from None
        conn.close()

    @contextmanager
    def _connection(self, namespace: str, lane: str = WORK) -> Iterator[Any]:
        """A connection with ``namespace``'s tables current and in scope."""
        if self.is_sqlite:
            with self._lock:
                entry = self._sqlite_conns.get(namespace)
            if entry is None:
                entry = self._open_sqlite(namespace)
            with entry[1]:
                yield entry[0]
            return
        ident = self.ident(namespace)
        with self._pg_connection(lane) as conn:
            with conn.cursor() as cur:
                cur.execute(f'SET LOCAL search_path TO "{ident}"')
            yield conn

    # -- transactions ------------------------------------------------------------------------

    def transact_sync(
        self, namespace: str, fn: Callable[[Tx], T], lane: str = WORK, *, coalesced: bool = False
    ) -> T:
        """Run ``fn`` in one transaction on the calling thread.

        Transient errors never reach the caller while they last: deadlocks, serialisation
        failures, lock timeouts and a busy SQLite file are retried with jittered exponential
        backoff (up to `TRANSIENT_RETRY_SECONDS`); a lost or refused connection (Postgres
        restarting) on a new connection for up to `PG_RECONNECT_SECONDS`, then raised as a
        `StoreError` naming the host. Each kind is logged once per store. ``fn`` must be safe to
        run again: a failed attempt's transaction was rolled back.

        ``coalesced`` (Postgres): BEGIN and the search path travel with ``fn``'s first
        statement, and what ``fn`` defers (`Tx.defer`) with the next statement or the COMMIT,
        so the thread waits for the server less often. Under load each wait costs more than the
        round trip: the thread then waits for the interpreter lock held by the busy event loop.
        """
        once = self._transact_coalesced if coalesced and not self.is_sqlite else self._transact_once
        tx, result = engine_metrics.timed_transaction(lambda: self._retrying(lambda lost: once(namespace, fn, lane, lost)))
        for key in tx.keys_to_fire:
            self.hub.fire(f"{namespace}\x00{key}")
        return result

    def _transact_once(
        self, namespace: str, fn: Callable[[Tx], T], lane: str, lost_before: bool
    ) -> tuple[Tx, T]:
        with self._connection(namespace, lane) as conn:  # connecting can fail too
            tx = Tx(self, conn, namespace)
            tx.commit_may_have_landed = lost_before
            try:
                if self.is_sqlite:
                    conn.execute("BEGIN IMMEDIATE")
                result = fn(tx)
                if tx.keys_to_fire:
                    delivery.publish(self, tx, namespace)
                conn.commit() if not self.is_sqlite else conn.execute("COMMIT")
            except BaseException as err:
                bad = as_invalid_data(err, self.is_sqlite or not (conn.broken or conn.closed))
                try:
                    conn.rollback() if not self.is_sqlite else conn.execute("ROLLBACK")
                except Exception:
                    pass
                if bad is not None:
                    raise bad from err
                raise
        return tx, result

    def _transact_coalesced(
        self, namespace: str, fn: Callable[[Tx], T], lane: str, lost_before: bool
    ) -> tuple[Tx, T]:
        ident = self.ident(namespace)
        with self._pg_connection(lane) as conn:  # connecting can fail too
            # Autocommit: the transaction is our own BEGIN ... COMMIT, so psycopg sends no BEGIN
            # of its own. (A connection that failed is closed, never pooled.)
            conn.autocommit = True
            tx = Tx(self, conn, namespace)
            tx.commit_may_have_landed = lost_before
            tx.coalesced = True
            try:
                tx.defer("BEGIN")
                tx.defer(f'SET LOCAL search_path TO "{ident}"')
                result = fn(tx)
                if tx.keys_to_fire:
                    delivery.publish(self, tx, namespace)
                tx.execute("COMMIT")
            except BaseException as err:
                bad = as_invalid_data(err, not (conn.broken or conn.closed))
                try:
                    conn.rollback()
                except Exception:
                    pass
                if bad is not None:
                    raise bad from err
                raise
            conn.autocommit = False
        return tx, result

    def submit(self, lane: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on one of ``lane``'s threads (it makes its own transactions)."""
        self._executors[lane].submit(fn)

    async def transact(
        self, namespace: str, fn: Callable[[Tx], T], lane: str = WORK, *, coalesced: bool = False
    ) -> T:
        """Run ``fn`` in one transaction in one of the store's threads (``coalesced``: see
        `transact_sync`).

        Lane `FACT` has threads and connections of its own: an activity's result is recorded at
        once, never queued behind claims, polls and heartbeats.
        """
        run = functools.partial(self.transact_sync, namespace, fn, lane, coalesced=coalesced)
        if not self.clock.virtual:
            return await in_thread(run, executor=self._executors[lane])
        # Work in progress until its wake-ups are on their way: time must not skip past it.
        key = object()
        self.clock.hold(key)
        try:
            return await in_thread(run, executor=self._executors[lane])
        finally:
            self.clock.release(key)

    # -- whole namespaces and servers -------------------------------------------------------

    def waiter(self, namespace: str, keys: Sequence[str], *, value: bool = False) -> asyncio.Future[None]:
        """A future resolved when any of ``keys`` is notified in ``namespace``, by any process
        (``value``: the caller takes what the key carried with `take_value`)."""
        self._delivery.ensure(namespace)
        return self.hub.waiter([f"{namespace}\x00{k}" for k in keys], value=value)

    def take_value(self, namespace: str, key: str) -> bytes | None:
        """What the wake-up of ``key`` carried (`wakeups.with_value`), if it did."""
        return self.hub.take_value(f"{namespace}\x00{key}")

    async def wait_future(self, fut: asyncio.Future[None], timeout: float | None = None) -> None:
        """Wait for a future from `waiter`, or until ``timeout`` seconds have passed."""
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            pass

    async def wait_until(
        self, fut: asyncio.Future[None], when: float | None, also: Sequence[asyncio.Future[None]] = ()
    ) -> None:
        """Wait for a future from `waiter` (or one of ``also``), or until the store's clock
        reaches ``when``. Loops that wait for due times run inside ``with
        store.clock.participant():`` so that a virtual clock knows when they are busy."""
        await self.clock.wait(fut, when, also)

    def use_clock(self, clock: Clock) -> None:
        """Give this store another clock (a time-skipping environment's, before any use)."""
        self.clock = clock
        self.hub.tracker = clock if isinstance(clock, VirtualClock) else None

    def close(self) -> None:
        self._closed = True
        for executor in self._executors.values():
            executor.shutdown(wait=False)
        with self._lock:
            while True:
                try:
                    self._close_pg(self._pg_pool.get_nowait())
                except queue.Empty:
                    break
            sqlite_conns = list(self._sqlite_conns.values())
            self._sqlite_conns.clear()
        for conn, conn_lock in sqlite_conns:
            _close_sqlite(conn, conn_lock)
        self._delivery.close()


def _dbos_env() -> tuple[bool, bool, frozenset[str]]:
    """(DBOS rows at all, in each namespace's own schema, the namespaces without them)."""
    mode = os.environ.get(ENV_DBOS, "1").strip().lower()
    if mode not in ("", "1", "true", "yes", "0", "false", "no", "namespace"):
        raise StoreError(f"{ENV_DBOS}={mode!r}: expected 1 (shared schema), namespace or 0")
    off = frozenset(n.strip() for n in os.environ.get(ENV_DBOS_OFF, "").split(",") if n.strip())
    return mode not in ("0", "false", "no"), mode == "namespace", off


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def get_store(url: str) -> Store:
    """The process-wide `Store` for ``url``."""
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = Store(url)
            _stores[url] = store
        return store


def forget_store(url: str) -> Store | None:
    """Close and forget the process's `Store` for ``url`` (an environment that ended)."""
    with _stores_lock:
        store = _stores.pop(url, None)
    if store is not None:
        store.close()
    return store
