"""The database behind a connection: Postgres or an embedded SQLite file.

One `Store` per database URL per process. It owns the connections, finds each namespace's
tables (a Postgres schema or a SQLite file per namespace, see `namespaces` and `migrations`),
runs transactions off the event loop with transient errors retried, and delivers wake-ups: an
in-process hub that wakes waiters as soon as a transaction commits, and across processes
Postgres LISTEN/NOTIFY or, on SQLite, a `notices` table read by one watcher thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dbosify._dbos import ids
from dbosify._dbos import setup as dbos_setup
from dbosify._metrics import engine as engine_metrics
from dbosify._server import limits as limits_mod
from dbosify._store import delivery, files, namespaces
from dbosify._store.clock import Clock
from dbosify._store.errors import (
    StoreError,
    as_invalid_data,
    is_connection_lost,
    is_outdated_statement,
    is_transient,
)
from dbosify._store.threads import in_thread
from dbosify._store.urls import mask_url, parse_url
from dbosify._store.virtual_clock import VirtualClock
from dbosify._store.wakeups import Hub

logger = logging.getLogger("dbosify")

T = TypeVar("T")

WORK = "work"  # claims, polls, workflow tasks, heartbeats: most transactions
FACT = "fact"  # activity results: never queued behind the others
BEAT = "beat"  # liveness beats (dbosify._worker.liveness): never late because others are busy
REAP = "reap"  # taking over dead workers' work
# Threads and Postgres connections per store and process, per lane (plus one for LISTEN).
LANES = {WORK: 6, FACT: 2, BEAT: 1, REAP: 1}
TRANSIENT_RETRY_SECONDS = 30.0  # how long deadlocks, lock timeouts and busy files are retried
# Every session of ours: a stopped (SIGSTOPped) process must not hold locks that others wait on.
# Postgres ends a session left idle inside a transaction, and a statement that waits for a lock
# gives up and is retried, so a frozen worker's row locks go within about a second.
PG_SESSION_OPTIONS = (
    "-c idle_in_transaction_session_timeout=1000 -c lock_timeout=3000 -c statement_timeout=60000"
    " -c dbosify.writer=on"  # the DBOS triggers (dbosify._dbos.setup) tell our writes apart
)
ENV_NAMESPACES = "DBOSIFY_NAMESPACES"  # namespaces every client registers when it connects
# Runs' DBOS rows (docs/COMPATIBILITY.md): "1" in DBOS's shared schema (Postgres), "namespace" in
# each namespace's own schema, "0" none; and namespaces whose runs have none (comma-separated).
# Every process of a deployment must use the same values.
ENV_DBOS = "DBOSIFY_DBOS"
ENV_DBOS_OFF = "DBOSIFY_DBOS_OFF"
ENV_PG_PREPARE = "DBOSIFY_PG_PREPARE"  # "0": no server-side prepared statements (poolers that drop them)
PG_RECONNECT_SECONDS = 15.0  # how long a transaction keeps retrying while Postgres is unreachable


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


class Store:
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
        # Temporal's limits (ids, payloads, history; see dbosify/_server/limits.py): Temporal's
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

    # -- connections -------------------------------------------------------------------------

    def describe(self) -> str:
        if self.is_sqlite:
            return f"embedded SQLite in {self._sqlite_dir}"
        return f"Postgres at {self.masked_url}"

    @property
    def sqlite_dir(self) -> Path:
        return self._sqlite_dir

    def dbos_on(self, namespace: str) -> bool:
        """Whether the runs of ``namespace`` are DBOS workflows (have DBOS rows)."""
        return self.dbos_enabled and namespace not in self.dbos_off

    def dbos_schema_of(self, namespace: str) -> str | None:
        """The Postgres schema of ``namespace``'s DBOS rows (None on SQLite: its own file)."""
        if self.dbos_schema is None or not self.dbos_per_namespace:
            return self.dbos_schema
        return self.ident(namespace)

    def sqlite_path(self, namespace: str) -> Path:
        return self._sqlite_dir / f"{self.ident(namespace)}.sqlite"

    def ensure_namespace(self, namespace: str) -> Path:
        """SQLite: the namespace's file, created or brought to the current schema version."""
        self.prepare_namespace(namespace)
        return self.sqlite_path(namespace)

    def prepare_namespace(self, namespace: str) -> None:
        """Do now what the namespace's first use in this process would do: its tables at the
        current schema version, and DBOS's system tables beside them (importing `dbos` and its
        migrations take about 0.4 s, longer on a busy machine)."""
        with self._connection(namespace):
            pass

    def namespace_names(self) -> list[str]:
        """The namespaces registered in this store's catalog (``default`` once it is used)."""
        if self.is_sqlite:
            return namespaces.sqlite_names(self._sqlite_dir)
        import psycopg

        with psycopg.connect(self._pg_url, connect_timeout=self.pg_connect_timeout, autocommit=True) as conn:
            return namespaces.pg_names(conn, self.server)

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

    def _open_sqlite(self, namespace: str) -> tuple[sqlite3.Connection, threading.Lock]:
        path = self.sqlite_path(namespace)
        conn = files.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            namespaces.sqlite_ensure_schema(conn, namespace, path)
            if self.dbos_on(namespace):
                dbos_setup.sqlite_ensure(conn, path, namespace)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            entry = self._sqlite_conns.get(namespace)
            if entry is None:
                entry = self._sqlite_conns[namespace] = (conn, threading.Lock())
            else:
                conn.close()
        return entry

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

    def ident(self, namespace: str) -> str:
        """The namespace's Postgres schema (and NOTIFY channel), or its SQLite file's stem.

        The first use in a process looks the name up in the catalog (registering ``default``),
        and brings its tables to the current schema version; after that it is a dictionary
        lookup. A name that is not registered raises `namespaces.NamespaceNotFound`.
        """
        ident = self._idents.get(namespace)
        if ident is not None:
            return ident
        # InvalidNamespace is a StoreError that the client reports as INVALID_ARGUMENT.
        namespaces.validate_name(namespace)
        create = self.open_namespaces or namespace == namespaces.DEFAULT
        ident, _ = self._retrying(lambda _lost: self._resolve_ident(namespace, create))
        with self._lock:
            return self._idents.setdefault(namespace, ident)

    def register_namespace(self, namespace: str) -> bool:
        """Register ``namespace`` (and create its tables); False if it was registered already."""
        namespaces.validate_name(namespace)
        ident, created = self._retrying(lambda _lost: self._resolve_ident(namespace, True))
        with self._lock:
            self._idents.setdefault(namespace, ident)
        return created

    def register_env_namespaces(self) -> None:
        """Register the names listed in ``DBOSIFY_NAMESPACES`` (comma-separated), once each per
        process: a deployment declares its namespaces as a dev server's ``--namespace`` does."""
        names = env_namespaces()
        for name in names:  # all checked before any is registered
            namespaces.validate_name(name)
        for name in names:
            if name not in self._env_registered:
                self.register_namespace(name)
                self._env_registered.add(name)

    def require_namespace(self, namespace: str) -> None:
        """Raise `NamespaceNotFound` unless ``namespace`` may be used (``default``, or
        registered). Reads the catalog only: none of the first use's setup (a worker's
        validation must not wait for it)."""
        if namespace in self._idents or namespace == "default":
            return
        namespaces.validate_name(namespace)
        if self.is_sqlite:
            namespaces.sqlite_ident(self._sqlite_dir, self.server, namespace, create=False)
            return

        def look(_lost: bool) -> None:
            with self._pg_connection() as conn:
                if namespaces.pg_lookup(conn, self.server, namespace) is None:
                    namespaces.pg_register(conn, self.server, namespace, create=False)

        self._retrying(look)

    def _resolve_ident(self, namespace: str, create: bool) -> tuple[str, bool]:
        if self.is_sqlite:
            return namespaces.sqlite_ident(self._sqlite_dir, self.server, namespace, create)
        with self._pg_connection() as conn:
            ident = namespaces.pg_lookup(conn, self.server, namespace)
            created = False
            if ident is None:
                ident, created = namespaces.pg_register(conn, self.server, namespace, create)
            if self.dbos_on(namespace):
                assert self.dbos_schema is not None
                schema = ident if self.dbos_per_namespace else self.dbos_schema
                if schema not in self._dbos_ready:
                    dbos_setup.pg_ensure(
                        conn, self._pg_url, namespaces.catalog_schema(self.server), schema,
                        own=self.dbos_per_namespace,
                    )
                    self._dbos_ready.add(schema)
            return ident, created

    def _retrying(self, fn: Callable[[bool], T]) -> T:
        """``fn`` with transient errors retried (see `transact_sync`). ``fn`` is told whether an
        earlier attempt lost its connection: a commit sent just before may have landed.
        """
        attempt = 0
        lost = False
        first_failure: float | None = None  # budgets run from here: time frozen before it is free
        while True:
            attempt += 1
            try:
                return fn(lost)
            except BaseException as err:
                if self._closed:
                    raise
                if first_failure is None:
                    first_failure = time.monotonic()
                elapsed = time.monotonic() - first_failure
                if is_connection_lost(err):
                    lost = True
                    if elapsed < PG_RECONNECT_SECONDS:
                        self._log_retry("connection", err)
                        time.sleep(_backoff(attempt, 1.0))
                        continue
                    raise self._lost(err) from err
                if is_transient(err) and elapsed < TRANSIENT_RETRY_SECONDS:
                    self._log_retry(type(err).__name__, err)
                    if is_outdated_statement(err):
                        # A schema change outdated what every pooled session prepared: start
                        # afresh rather than meet the same error once per session.
                        self._drop_pooled()
                    time.sleep(_backoff(attempt, 0.5))
                    continue
                raise

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

    def _log_retry(self, kind: str, err: BaseException) -> None:
        if kind in self._retry_logged:
            return
        self._retry_logged.add(kind)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        logger.warning(
            "dbosify: %s on %s (%s); retrying with backoff (logged once)",
            "connection lost" if kind == "connection" else kind, self.describe(), first,
        )

    def _lost(self, err: BaseException) -> StoreError:
        return self._pg_failure("lost the connection to", f"for over {PG_RECONNECT_SECONDS:g} s", err)

    def _pg_failure(self, what: str, detail: str, err: BaseException) -> StoreError:
        """An error naming the host (never the password) and the first line of ``err``."""
        parts = urlsplit(self._pg_url)
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if parts.password:
            msg = msg.replace(parts.password, "***")
        return StoreError(f"{what} Postgres at {_host_port(parts.netloc)} {detail}: {msg}")

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

    def drop_namespace(self, namespace: str) -> None:
        """Delete a namespace's tables and its catalog entry (tests and tools)."""
        ident = self.ident(namespace)
        with self._lock:
            self._idents.pop(namespace, None)
            entry = self._sqlite_conns.pop(namespace, None)
        if self.is_sqlite:
            if entry is not None:
                _close_sqlite(*entry)
            namespaces.sqlite_forget(self._sqlite_dir, namespace)
            for suffix in ("", "-wal", "-shm"):
                (self._sqlite_dir / f"{ident}.sqlite{suffix}").unlink(missing_ok=True)
            return
        with self._pg_connection() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ident}" CASCADE')
            if self.dbos_schema in self._dbos_ready:  # the shared schema: this namespace's rows
                # Its quoted name holds no "/": the prefix names it and no other.
                prefix = ids.quote(namespace) + "/"
                conn.execute(
                    f'DELETE FROM "{self.dbos_schema}".workflow_status'
                    " WHERE starts_with(workflow_uuid, %s)",
                    (prefix,),
                )
            conn.execute(
                f'DELETE FROM "{namespaces.catalog_schema(self.server)}".namespaces WHERE name = %s',
                (namespace,),
            )
            conn.commit()

    def drop_server(self) -> None:
        """Drop every schema of this store's isolated server (see `SERVER_PARAM`)."""
        if self.server is None or self.is_sqlite:
            return
        import psycopg

        with psycopg.connect(self._pg_url, autocommit=True, connect_timeout=self.pg_connect_timeout) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                (namespaces.prefix(self.server).replace("_", "\\_") + "%",),
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

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


def _pg_prepare_threshold() -> int | None:
    """After how many runs of a statement a session prepares it on the server (psycopg's
    ``prepare_threshold``): the hot statements are then neither parsed nor planned again, which
    halved the Postgres time of a workflow task. ``DBOSIFY_PG_PREPARE=0`` turns it off, for a
    pooler that does not keep a session's prepared statements (PgBouncer in transaction mode
    before 1.21)."""
    if os.environ.get(ENV_PG_PREPARE, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    return 2


def _close_sqlite(conn: sqlite3.Connection, conn_lock: threading.Lock) -> None:
    """Close a namespace's SQLite connection, but not while another thread (a liveness beat, a
    late transaction) is using it: closing a SQLite connection in use can crash the interpreter."""
    got = conn_lock.acquire(timeout=5.0)
    try:
        conn.close()
    finally:
        if got:
            conn_lock.release()


def _dbos_env() -> tuple[bool, bool, frozenset[str]]:
    """(DBOS rows at all, in each namespace's own schema, the namespaces without them)."""
    mode = os.environ.get(ENV_DBOS, "1").strip().lower()
    if mode not in ("", "1", "true", "yes", "0", "false", "no", "namespace"):
        raise StoreError(f"{ENV_DBOS}={mode!r}: expected 1 (shared schema), namespace or 0")
    off = frozenset(n.strip() for n in os.environ.get(ENV_DBOS_OFF, "").split(",") if n.strip())
    return mode not in ("0", "false", "no"), mode == "namespace", off


def env_namespaces() -> list[str]:
    """The names in ``DBOSIFY_NAMESPACES`` (comma-separated, blanks around names ignored)."""
    return [n.strip() for n in os.environ.get(ENV_NAMESPACES, "").split(",") if n.strip()]


def _host_port(netloc: str) -> str:
    """The host part of a URL's netloc, without user or password ("localhost:5432" if none);
    as written, so that a multi-host list (``h1:5432,h2:5433``) reads as given."""
    hosts = netloc.rsplit("@", 1)[-1]
    if not hosts:
        return "localhost:5432"
    return hosts if ":" in hosts.rsplit("]", 1)[-1] else f"{hosts}:5432"


def _backoff(attempt: int, cap: float) -> float:
    """Jittered exponential backoff: 10 ms, 20 ms, ... up to ``cap``, each times 0.5 to 1."""
    return float(min(cap, 0.01 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0))


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
