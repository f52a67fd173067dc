"""The database behind a connection: Postgres or an embedded SQLite file.

One `Store` per database URL per process. It owns the connections, creates the
per-namespace tables (a Postgres schema or a SQLite file per namespace), runs
transactions off the event loop, and delivers wake-ups: an in-process hub that
wakes waiters as soon as a transaction commits, and across processes Postgres
LISTEN/NOTIFY or, on SQLite, a `notices` table read by one watcher thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

logger = logging.getLogger("dbosify")

T = TypeVar("T")

ENV_DATABASE_URL = "DBOSIFY_DATABASE_URL"
ENV_HOME = "DBOSIFY_HOME"
SQLITE_NOTICE_POLL_SECONDS = 0.02  # one cheap PRAGMA per namespace file per process, not per waiter
SQLITE_NOTICES_KEPT = 20_000  # rows of the SQLite notices table kept for slower readers
PG_POOL_SIZE = 8  # connections per store and process, plus one for LISTEN
PG_RECONNECT_SECONDS = 15.0  # how long a transaction keeps retrying while Postgres is unreachable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    run_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    status INTEGER NOT NULL,
    first_execution_run_id TEXT NOT NULL,
    start_time DOUBLE PRECISION NOT NULL,
    close_time DOUBLE PRECISION,
    next_event_id INTEGER NOT NULL,
    owner TEXT,
    parent_namespace TEXT,
    parent_workflow_id TEXT,
    parent_run_id TEXT,
    parent_seq INTEGER,
    request_id TEXT,
    wft_failure BYTEA,
    wft_attempt INTEGER NOT NULL DEFAULT 0,
    execution_deadline DOUBLE PRECISION,
    run_deadline DOUBLE PRECISION,
    not_before DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS executions_one_running
    ON executions (workflow_id) WHERE status = 1;
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (workflow_id, start_time);
CREATE INDEX IF NOT EXISTS executions_claim ON executions (task_queue, status, owner);
CREATE TABLE IF NOT EXISTS history (
    run_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    event_type INTEGER NOT NULL,
    seq INTEGER,
    dedup TEXT,
    event BYTEA NOT NULL,
    PRIMARY KEY (run_id, event_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS history_dedup ON history (run_id, dedup);
CREATE TABLE IF NOT EXISTS activity_tasks (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    task_queue TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    available_at DOUBLE PRECISION NOT NULL,
    owner TEXT,
    started_at DOUBLE PRECISION,
    heartbeat_at DOUBLE PRECISION,
    details BYTEA,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    scheduled_event_id INTEGER NOT NULL,
    scheduled_time DOUBLE PRECISION NOT NULL,
    last_failure BYTEA,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS activity_tasks_claim ON activity_tasks (task_queue, state, available_at);
CREATE TABLE IF NOT EXISTS updates (
    run_id TEXT NOT NULL,
    update_id TEXT NOT NULL,
    state TEXT NOT NULL,
    request BYTEA NOT NULL,
    outcome BYTEA,
    PRIMARY KEY (run_id, update_id)
);
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    request BYTEA NOT NULL,
    response BYTEA
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    task_queue TEXT NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
"""


# SQLite has no cross-process notifications: each transaction that wakes keys also appends them
# here, and one thread per process watches `PRAGMA data_version` and reads the new rows.
_SQLITE_NOTICES = """
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    key TEXT NOT NULL
)
"""


# Columns added after a table was first released: (table, column) -> type.
_ADDED_COLUMNS: list[tuple[tuple[str, str], str]] = [
    (("executions", "not_before"), "DOUBLE PRECISION"),
]


class StoreError(RuntimeError):
    """The database could not be reached or used."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def default_sqlite_dir() -> Path:
    """Where the embedded SQLite default lives: ``$DBOSIFY_HOME`` or the user's state dir."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "dbosify"


def resolve_url(target: str | None) -> str:
    """The database URL for a ``Client.connect`` target.

    A ``postgresql://`` or ``sqlite://`` target is used as is; otherwise
    ``DBOSIFY_DATABASE_URL``; otherwise an embedded SQLite directory.
    """
    if target:
        t = target
        for prefix in ("http://", "https://"):
            if t.startswith(prefix) and "://" in t[len(prefix) :]:
                t = t[len(prefix) :]
        if t.startswith(("postgresql://", "postgres://", "postgresql+psycopg://", "sqlite://")):
            return t
    env = os.environ.get(ENV_DATABASE_URL)
    if env:
        return env
    return "sqlite:///" + str(default_sqlite_dir())


SERVER_PARAM = "dbosify_server"  # URL query parameter: one isolated "dev server" in a database


def _namespace_ident(namespace: str, server: str | None = None) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_]", "_", namespace).lower()
    return f"dbosify_{server}_ns_{safe}" if server else f"dbosify_ns_{safe}"


class Hub:
    """In-process wake-ups by key, safe to call from any thread or loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = (
            defaultdict(set)
        )

    def fire(self, key: str) -> None:
        with self._lock:
            waiters = self._waiters.pop(key, None)
        if not waiters:
            return
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_set_done, fut)
            except RuntimeError:
                pass  # loop closed

    def waiter(self, keys: Sequence[str]) -> asyncio.Future[None]:
        """A future resolved by the next `fire` of any of the keys."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            for key in keys:
                self._waiters[key].add(entry)

        def _cleanup(_: asyncio.Future[None]) -> None:
            with self._lock:
                for key in keys:
                    s = self._waiters.get(key)
                    if s is not None:
                        s.discard(entry)
                        if not s:
                            del self._waiters[key]

        fut.add_done_callback(_cleanup)
        return fut


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Tx:
    """One open transaction on one namespace."""

    def __init__(self, store: Store, conn: Any, namespace: str) -> None:
        self.store = store
        self.namespace = namespace
        self._conn = conn
        self._cur = conn.cursor()
        self.keys_to_fire: set[str] = set()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.store.is_sqlite:
            sql = sql.replace("%s", "?")
        self._cur.execute(sql, tuple(params))
        return self._cur

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

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

    def __init__(self, url: str) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self.is_sqlite = url.startswith("sqlite:")
        self.hub = Hub()
        self.server: str | None = None
        self._lock = threading.RLock()
        self._ready: set[str] = set()
        self._pg_pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._pg_slots = threading.BoundedSemaphore(PG_POOL_SIZE)
        self._sqlite_conns: dict[str, tuple[sqlite3.Connection, threading.Lock]] = {}
        self._listener: threading.Thread | None = None
        self._listen_conn: Any = None
        self._closed = False
        # Backend pids of our pooled connections, by id(connection): our own NOTIFYs come back
        # through LISTEN, but were already delivered in-process at commit.
        self._own_pids: dict[int, int] = {}
        self._origin = uuid.uuid4().hex  # tells this process's own SQLite notices apart
        self._notices_written = 0
        self._watched: dict[str, tuple[sqlite3.Connection, int, int]] = {}
        self._watcher: threading.Thread | None = None
        if self.is_sqlite:
            path = url[len("sqlite:") :]
            while path.startswith("//"):
                path = path[1:]
            if path.startswith("/") and not path.startswith("//"):
                pass
            self._sqlite_dir = Path(unquote(path)) if path not in ("", "/") else default_sqlite_dir()
            if self._sqlite_dir.suffix in (".db", ".sqlite", ".sqlite3"):
                self._sqlite_dir = self._sqlite_dir.parent / self._sqlite_dir.stem
        else:
            pg_url = re.sub(r"^(postgres|postgresql\+psycopg)://", "postgresql://", url)
            # `?dbosify_server=ID` (what `WorkflowEnvironment.start_local()` hands out when the
            # database is configured) isolates its own schemas, as a separate dev server would be.
            parts = urlsplit(pg_url)
            query = parse_qsl(parts.query, keep_blank_values=True)
            server = [v for k, v in query if k == SERVER_PARAM]
            if server:
                if not re.fullmatch(r"[a-z0-9]{1,16}", server[0]):
                    raise StoreError(f"invalid {SERVER_PARAM} in the database URL: {server[0]!r}")
                self.server = server[0]
                rest = [(k, v) for k, v in query if k != SERVER_PARAM]
                pg_url = urlunsplit(parts._replace(query=urlencode(rest)))
            self._pg_url = pg_url

    # -- connections -------------------------------------------------------------------------

    def describe(self) -> str:
        if self.is_sqlite:
            return f"embedded SQLite in {self._sqlite_dir}"
        return f"Postgres at {self.masked_url}"

    @property
    def sqlite_dir(self) -> Path:
        return self._sqlite_dir

    def sqlite_path(self, namespace: str) -> Path:
        return self._sqlite_dir / f"{self.ident(namespace)}.sqlite"

    def check(self) -> None:
        """Connect once, raising a `StoreError` that names the host and not the password."""
        if self.is_sqlite:
            try:
                self._sqlite_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create the SQLite directory {self._sqlite_dir}: {err}") from err
            return
        import psycopg

        try:
            conn = psycopg.connect(self._pg_url, connect_timeout=10, autocommit=True)
        except Exception as err:  # psycopg raises many kinds
            parts = urlsplit(self._pg_url)
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if parts.password:
                msg = msg.replace(parts.password, "***")
            raise StoreError(
                f"cannot connect to Postgres at {parts.hostname or 'localhost'}:{parts.port or 5432}"
                f" (database {parts.path.lstrip('/') or '(default)'}): {msg}"
            ) from None
        conn.close()

    def _new_pg_conn(self) -> Any:
        import psycopg

        conn = psycopg.connect(self._pg_url, connect_timeout=10)
        # Connections move between threads; server-side prepared statements would then clash.
        conn.prepare_threshold = None
        with self._lock:
            self._own_pids[id(conn)] = conn.info.backend_pid
        return conn

    def _close_pg(self, conn: Any) -> None:
        with self._lock:
            self._own_pids.pop(id(conn), None)
        try:
            conn.close()
        except Exception:
            pass

    @contextmanager
    def _connection(self, namespace: str) -> Iterator[Any]:
        if self.is_sqlite:
            with self._lock:
                entry = self._sqlite_conns.get(namespace)
                if entry is None:
                    self._sqlite_dir.mkdir(parents=True, exist_ok=True)
                    conn = sqlite3.connect(
                        self.sqlite_path(namespace),
                        check_same_thread=False,
                        isolation_level=None,
                        timeout=30,
                    )
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    entry = (conn, threading.Lock())
                    self._sqlite_conns[namespace] = entry
            with entry[1]:
                yield entry[0]
            return
        # One bounded pool for every namespace; each transaction selects its schema.
        self._pg_slots.acquire()
        try:
            try:
                conn = self._pg_pool.get_nowait()
            except queue.Empty:
                conn = self._new_pg_conn()
            ok = False
            try:
                with conn.cursor() as cur:
                    cur.execute(f'SET LOCAL search_path TO "{self.ident(namespace)}"')
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
            self._pg_slots.release()

    def _drop_pooled(self) -> None:
        while True:
            try:
                conn = self._pg_pool.get_nowait()
            except queue.Empty:
                return
            self._close_pg(conn)

    def _ensure_schema(self, namespace: str) -> None:
        if namespace in self._ready:
            return
        with self._connection(namespace) as conn:
            if self.is_sqlite:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in (*_SCHEMA.split(";"), _SQLITE_NOTICES):
                        if stmt.strip():
                            conn.execute(stmt.replace("BYTEA", "BLOB"))
                    for column, ddl in _ADDED_COLUMNS:
                        have = {r[1] for r in conn.execute(f"PRAGMA table_info({column[0]})")}
                        if column[1] not in have:
                            conn.execute(f"ALTER TABLE {column[0]} ADD COLUMN {column[1]} {ddl}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            else:
                ident = self.ident(namespace)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (ident,))
                        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{ident}"')
                        cur.execute(_SCHEMA)
                        for column, ddl in _ADDED_COLUMNS:
                            cur.execute(
                                f"ALTER TABLE {column[0]} ADD COLUMN IF NOT EXISTS {column[1]} {ddl}"
                            )
                    conn.commit()
                except Exception as err:
                    conn.rollback()
                    # Another process created it at the same moment: IF NOT EXISTS is not atomic.
                    if type(err).__name__ != "UniqueViolation":
                        raise
                    return self._ensure_schema(namespace)
        self._ready.add(namespace)

    # -- transactions ------------------------------------------------------------------------

    def transact_sync(self, namespace: str, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one transaction on the calling thread.

        Serialisation failures are retried a few times; a lost or refused connection (Postgres
        restarting) is retried on a new connection for up to `PG_RECONNECT_SECONDS`, then raised
        as a `StoreError` naming the host.
        """
        attempt = 0
        reconnect_deadline: float | None = None
        while True:
            attempt += 1
            try:
                self._ensure_schema(namespace)
                with self._connection(namespace) as conn:  # connecting can fail too
                    tx = Tx(self, conn, namespace)
                    try:
                        if self.is_sqlite:
                            conn.execute("BEGIN IMMEDIATE")
                        result = fn(tx)
                        if tx.keys_to_fire:
                            self._publish(tx, namespace)
                        conn.commit() if not self.is_sqlite else conn.execute("COMMIT")
                    except BaseException:
                        try:
                            conn.rollback() if not self.is_sqlite else conn.execute("ROLLBACK")
                        except Exception:
                            pass
                        raise
            except BaseException as err:
                if _is_connection_lost(err) and not self._closed:
                    now = time.monotonic()
                    if reconnect_deadline is None:
                        reconnect_deadline = now + PG_RECONNECT_SECONDS
                    if now < reconnect_deadline:
                        time.sleep(min(0.05 * attempt, 1.0))
                        continue
                    raise self._lost(err) from err
                if attempt < 5 and _is_retryable(err):
                    time.sleep(0.01 * attempt)
                    continue
                raise
            for key in tx.keys_to_fire:
                self.hub.fire(f"{namespace}\x00{key}")
            return result

    def _publish(self, tx: Tx, namespace: str) -> None:
        """Tell other processes, inside the transaction, which keys it wakes."""
        if not self.is_sqlite:
            tx.execute(
                "SELECT pg_notify(%s, k) FROM unnest(%s::text[]) AS k",
                (self.ident(namespace), sorted(tx.keys_to_fire)),
            )
            return
        for key in tx.keys_to_fire:
            tx.execute("INSERT INTO notices (origin, key) VALUES (%s, %s)", (self._origin, key))
        self._notices_written += 1
        if self._notices_written % 1000 == 0:
            tx.execute(
                "DELETE FROM notices WHERE id < (SELECT MAX(id) FROM notices) - %s",
                (SQLITE_NOTICES_KEPT,),
            )

    def _lost(self, err: BaseException) -> StoreError:
        parts = urlsplit(self._pg_url)
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if parts.password:
            msg = msg.replace(parts.password, "***")
        return StoreError(
            f"lost the connection to Postgres at {parts.hostname or 'localhost'}:"
            f"{parts.port or 5432} for over {PG_RECONNECT_SECONDS:g} s: {msg}"
        )

    async def transact(self, namespace: str, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one transaction in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.transact_sync, namespace, fn
        )

    # -- wake-ups ----------------------------------------------------------------------------

    def ident(self, namespace: str) -> str:
        """The namespace's Postgres schema (and NOTIFY channel), or its SQLite file's stem."""
        return _namespace_ident(namespace, self.server)

    def drop_server(self) -> None:
        """Drop every schema of this store's isolated server (see `SERVER_PARAM`)."""
        if self.server is None or self.is_sqlite:
            return
        import psycopg

        with psycopg.connect(self._pg_url, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                (f"dbosify\\_{self.server}\\_ns\\_%",),
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def waiter(self, namespace: str, keys: Sequence[str]) -> asyncio.Future[None]:
        """A future resolved when any of ``keys`` is notified in ``namespace``, by any process."""
        self._ensure_listening(namespace)
        return self.hub.waiter([f"{namespace}\x00{k}" for k in keys])

    async def wait_future(self, fut: asyncio.Future[None], timeout: float | None = None) -> None:
        """Wait for a future from `waiter`, or until ``timeout`` seconds have passed."""
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            pass

    def _ensure_listening(self, namespace: str) -> None:
        if self.is_sqlite:
            self._ensure_sqlite_watch(namespace)
            return
        with self._lock:
            channels = getattr(self, "_channels", None)
            if channels is None:
                channels = set()
                self._channels: set[str] = channels
            if namespace in channels:
                return
            channels.add(namespace)
            self._ensure_schema(namespace)
            if self._listener is None:
                ready = threading.Event()
                self._listener = threading.Thread(
                    target=self._listen_loop, args=(ready,), name="dbosify-listen", daemon=True
                )
                self._listener.start()
                ready.wait(10)
        # Wait until the LISTEN is in effect: a waiter registered after this returns, then re-checks
        # the database, so no notification can fall in between.
        done = threading.Event()
        self._listen_commands.put((f'LISTEN "{self.ident(namespace)}"', done))
        done.wait(5)

    def _listen_loop(self, ready: threading.Event) -> None:
        import psycopg

        self._listen_commands: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        ready.set()
        backoff = 0.1
        while not self._closed:
            try:
                conn = psycopg.connect(self._pg_url, autocommit=True, connect_timeout=10)
            except Exception:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            self._listen_conn = conn
            try:
                with self._lock:
                    namespaces = set(getattr(self, "_channels", set()))
                for ns in namespaces:
                    conn.execute(f'LISTEN "{self.ident(ns)}"')
                # After (re)connecting, wake everyone: something may have been missed.
                self._fire_all()
                while not self._closed:
                    while True:
                        try:
                            cmd, done = self._listen_commands.get_nowait()
                        except queue.Empty:
                            break
                        conn.execute(cmd)
                        done.set()
                    with self._lock:
                        own_pids = set(self._own_pids.values())
                    for n in conn.notifies(timeout=0.05, stop_after=256):
                        if n.pid in own_pids:
                            continue  # this process fired it in-process when it committed
                        ns_ident = n.channel
                        for ns in namespaces | set(getattr(self, "_channels", set())):
                            if self.ident(ns) == ns_ident:
                                self.hub.fire(f"{ns}\x00{n.payload}")
                    with self._lock:
                        namespaces = set(getattr(self, "_channels", set()))
            except Exception as err:
                if not self._closed:
                    logger.warning("dbosify: notification connection lost (%s); reconnecting", err)
            finally:
                try:
                    conn.close()
                except Exception:
                    pass

    def _ensure_sqlite_watch(self, namespace: str) -> None:
        with self._lock:
            if namespace in self._watched:
                return
        self._ensure_schema(namespace)
        # Start from the newest notice: waiters re-check the database after registering.
        conn = sqlite3.connect(
            self.sqlite_path(namespace), check_same_thread=False, isolation_level=None, timeout=30
        )
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM notices").fetchone()[0]
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        with self._lock:
            if namespace in self._watched:
                conn.close()
                return
            self._watched[namespace] = (conn, int(last), int(version))
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._sqlite_watch_loop, name="dbosify-sqlite-watch", daemon=True
                )
                self._watcher.start()

    def _sqlite_watch_loop(self) -> None:
        """One thread per process and store: other processes' commits become wake-ups here."""
        while not self._closed:
            time.sleep(SQLITE_NOTICE_POLL_SECONDS)
            with self._lock:
                watched = list(self._watched.items())
            for namespace, (conn, last, version) in watched:
                try:
                    now_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                    if now_version == version:
                        continue
                    rows = conn.execute(
                        "SELECT id, origin, key FROM notices WHERE id > ? ORDER BY id", (last,)
                    ).fetchall()
                except sqlite3.Error as err:
                    logger.debug("dbosify: SQLite watch of %s failed: %s", namespace, err)
                    continue
                if rows and rows[0][0] > last + 1 and last > 0:
                    self._fire_all()  # fell behind the kept rows: wake everyone to re-check
                for _id, origin, key in rows:
                    if origin != self._origin:
                        self.hub.fire(f"{namespace}\x00{key}")
                new_last = rows[-1][0] if rows else last
                with self._lock:
                    if namespace in self._watched:
                        self._watched[namespace] = (conn, int(new_last), now_version)

    def _fire_all(self) -> None:
        with self.hub._lock:
            keys = list(self.hub._waiters.keys())
        for k in keys:
            self.hub.fire(k)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            while True:
                try:
                    self._close_pg(self._pg_pool.get_nowait())
                except queue.Empty:
                    break
            for conn, _ in self._sqlite_conns.values():
                conn.close()
            self._sqlite_conns.clear()
            for conn, _, _ in self._watched.values():
                conn.close()
            self._watched.clear()


def _is_retryable(err: BaseException) -> bool:
    name = type(err).__name__
    if name in ("SerializationFailure", "DeadlockDetected"):
        return True
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return True
    return _is_connection_lost(err)


def _is_connection_lost(err: BaseException) -> bool:
    """Postgres went away or refused to connect (e.g. it is restarting): retry on a new connection."""
    if "psycopg" not in type(err).__module__:
        return False
    if type(err).__name__ in ("OperationalError", "InterfaceError"):
        return True  # client side: connection refused, closed or broken
    # Server side: class 08 (connection exception), admin/crash shutdown, cannot connect now.
    # A plain subclass name check would miss these (AdminShutdown is what a restart sends).
    state = getattr(err, "sqlstate", None) or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


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
