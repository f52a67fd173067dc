"""Embedded SQLite under a `Store`: one file per namespace in the store's directory, one connection
per file (WAL, used under a lock), its tables and DBOS's brought current when it opens.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from dbosify._store import dbos_setup, files, namespaces


class SqliteBackend:
    """The SQLite side of `dbosify._store.store.Store` (which sets this state up)."""

    _lock: threading.RLock
    _sqlite_dir: Path
    _sqlite_conns: dict[str, tuple[sqlite3.Connection, threading.Lock]]
    ident: Callable[[str], str]  # (NamespaceCatalog)
    dbos_on: Callable[[str], bool]

    @property
    def sqlite_dir(self) -> Path:
        return self._sqlite_dir

    def sqlite_path(self, namespace: str) -> Path:
        return self._sqlite_dir / f"{self.ident(namespace)}.sqlite"

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


def _close_sqlite(conn: sqlite3.Connection, conn_lock: threading.Lock) -> None:
    """Close a namespace's SQLite connection, but not while another thread (a liveness beat, a
    late transaction) is using it: closing a SQLite connection in use can crash the interpreter."""
    got = conn_lock.acquire(timeout=5.0)
    try:
        conn.close()
    finally:
        if got:
            conn_lock.release()
