"""Wake-ups across processes: what one process commits wakes the waiters of the others.

The sending side (`publish`) runs inside the committing transaction. Postgres: `pg_notify` on
the namespace's channel, received by one LISTEN connection per store and process
(`PgListener`). SQLite has no notifications: the keys go into the namespace file's `notices`
table, and one watcher thread per store and process (`SqliteWatcher`) reads new rows when
``PRAGMA data_version`` says another connection committed.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from dbosify._store.wakeups import Hub

logger = logging.getLogger("dbosify")

SQLITE_NOTICE_POLL_SECONDS = 0.02  # one cheap PRAGMA per namespace file per process, not per waiter
SQLITE_NOTICES_KEPT = 20_000  # rows of the SQLite notices table kept for slower readers
# How long the LISTEN connection waits before it looks whether its store has closed. It is woken
# at once by a notification or by a command to run (a new namespace's LISTEN), so an idle
# process does not spin (it used to wake every 50 ms: 1.5% of a core for nothing).
PG_LISTEN_IDLE_SECONDS = 1.0


class Store(Protocol):
    """What delivery uses of its store (`dbosify._store.store.Store`, which builds on this module)."""

    is_sqlite: bool
    origin: str
    notices_written: int
    pg_connect_timeout: int
    hub: Hub

    @property
    def closed(self) -> bool: ...

    @property
    def pg_url(self) -> str: ...

    def own_backend_pids(self) -> set[int]: ...

    def ident(self, namespace: str) -> str: ...

    def ensure_namespace(self, namespace: str) -> Path: ...


class Tx(Protocol):
    """What `publish` uses of the committing transaction (`dbosify._store.store.Tx`)."""

    keys_to_fire: set[str]
    published: set[str]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def defer(self, sql: str, params: Sequence[Any] = ()) -> None: ...


def publish(store: Store, tx: Tx, namespace: str) -> None:
    """Tell other processes, inside the transaction, which keys it wakes."""
    keys = sorted(tx.keys_to_fire - tx.published)
    if not keys:
        return
    if not store.is_sqlite:
        # In a coalesced transaction it goes out with the COMMIT.
        tx.defer(
            "SELECT pg_notify(%s, k) FROM unnest(%s::text[]) AS k", (store.ident(namespace), keys)
        )
        return
    for key in keys:
        tx.execute("INSERT INTO notices (origin, key) VALUES (%s, %s)", (store.origin, key))
    store.notices_written += 1
    if store.notices_written % 1000 == 0:
        tx.execute(
            "DELETE FROM notices WHERE id < (SELECT MAX(id) FROM notices) - %s",
            (SQLITE_NOTICES_KEPT,),
        )


class PgListener:
    """One LISTEN connection per store and process, for every namespace waited on."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._commands: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._channels: dict[str, str] = {}  # namespaces listened to -> their channel (ident)
        # Written to when a command is queued (or the store closes): ends the listener's wait.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def ensure(self, namespace: str) -> None:
        """LISTEN to ``namespace``'s channel, and return once that is in effect."""
        if namespace in self._channels:
            return
        # Resolved (and validated) before anything is recorded, and never under the lock: it may
        # wait for the database.
        ident = self.store.ident(namespace)
        with self._lock:
            if namespace in self._channels:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="dbosify-listen", daemon=True)
                self._thread.start()
            self._channels[namespace] = ident
        # A waiter registered after this returns, then re-checks the database, so no
        # notification can fall in between. (A reconnect re-LISTENs every channel and wakes
        # every waiter.)
        done = threading.Event()
        self._commands.put((f'LISTEN "{ident}"', done))
        self._interrupt()
        done.wait(5)

    def _interrupt(self) -> None:
        """End the listener's wait now: it runs its commands, and looks whether the store closed."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken (the buffer is full), or closed

    def _wait(self, conn: Any) -> None:
        """Until the connection has something to read, a command is queued, or a while passed."""
        select.select([conn.fileno(), self._wake_r], [], [], PG_LISTEN_IDLE_SECONDS)
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _loop(self) -> None:
        import psycopg

        store = self.store
        backoff = 0.1
        while not store.closed:
            try:
                conn = psycopg.connect(store.pg_url, autocommit=True, connect_timeout=store.pg_connect_timeout)
            except Exception:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            try:
                with self._lock:
                    channels = dict(self._channels)
                for ident in channels.values():
                    conn.execute(f'LISTEN "{ident}"')
                store.hub.fire_all()  # after (re)connecting: something may have been missed
                while not store.closed:
                    self._run_commands(conn)
                    own_pids = store.own_backend_pids()
                    with self._lock:
                        by_ident = {ident: ns for ns, ident in self._channels.items()}
                    # What has arrived (also while a command ran), without waiting.
                    for n in conn.notifies(timeout=0.0, stop_after=256):
                        if n.pid in own_pids:
                            continue  # this process fired it in-process when it committed
                        ns = by_ident.get(n.channel)
                        if ns is not None:
                            store.hub.fire(f"{ns}\x00{n.payload}")
                    self._wait(conn)
            except Exception as err:
                if not store.closed:
                    logger.warning("dbosify: notification connection lost (%s); reconnecting", err)
            finally:
                try:
                    conn.close()
                except Exception:
                    pass

    def _run_commands(self, conn: Any) -> None:
        while True:
            try:
                cmd, done = self._commands.get_nowait()
            except queue.Empty:
                return
            conn.execute(cmd)
            done.set()

    def close(self) -> None:
        self._interrupt()  # the thread sees the store closed, and ends


class SqliteWatcher:
    """One thread per store and process: other processes' commits become wake-ups here."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # namespace -> (its connection, last notice read, last data_version seen)
        self._watched: dict[str, tuple[sqlite3.Connection, int, int]] = {}

    def ensure(self, namespace: str) -> None:
        with self._lock:
            if namespace in self._watched:
                return
        path = self.store.ensure_namespace(namespace)  # the file, at the current version
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        # Start from the newest notice: waiters re-check the database after registering.
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM notices").fetchone()[0]
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        with self._lock:
            if namespace in self._watched:
                conn.close()
                return
            self._watched[namespace] = (conn, int(last), int(version))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="dbosify-sqlite-watch", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        store = self.store
        while not store.closed:
            time.sleep(SQLITE_NOTICE_POLL_SECONDS)
            with self._lock:
                names = list(self._watched)
            for namespace in names:
                # A connection is used and closed under the lock only: closing it while another
                # thread is inside one of its statements crashes the interpreter.
                with self._lock:
                    entry = self._watched.get(namespace)
                    if entry is None:
                        continue
                    conn, last, version = entry
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
                    store.hub.fire_all()  # fell behind the kept rows: wake everyone to re-check
                for _id, origin, key in rows:
                    if origin != store.origin:
                        store.hub.fire(f"{namespace}\x00{key}")
                new_last = rows[-1][0] if rows else last
                with self._lock:
                    current = self._watched.get(namespace)
                    if current is not None and current[0] is conn:
                        self._watched[namespace] = (conn, int(new_last), now_version)

    def close(self) -> None:
        with self._lock:
            for conn, _, _ in self._watched.values():
                conn.close()
            self._watched.clear()
