"""Closing a store never closes a SQLite connection while another thread is inside one of its
statements: CPython's sqlite3 then crashes the whole process (a segmentation fault, seen in the
test suite when a store closed while its watcher thread read ``PRAGMA data_version``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from dbosify._store import delivery
from dbosify._store.store import Store


class _Watched:
    """A real SQLite connection that records whether it was closed during one of its statements
    (each made slow enough for a concurrent close to land inside it)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.in_statement = threading.Event()
        self.closed_during_statement = False
        self._busy = False

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._busy = True
        self.in_statement.set()
        try:
            time.sleep(0.2)
            return self.conn.execute(sql, params)
        finally:
            self._busy = False

    def close(self) -> None:
        if self._busy:
            self.closed_during_statement = True
        self.conn.close()


def test_store_close_waits_for_the_watchers_statement(tmp_path: Path) -> None:
    store = Store("sqlite:///" + str(tmp_path))
    watcher = store._delivery  # the store's cross-process watcher (SQLite)
    assert isinstance(watcher, delivery.SqliteWatcher)
    watcher.ensure("default")
    conn, last, version = watcher._watched["default"]
    watched = _Watched(conn)
    # Every look now sees a new data version, so the loop runs both of its statements.
    watcher._watched["default"] = (watched, last, version - 1)  # type: ignore[assignment]
    assert watched.in_statement.wait(5.0)
    store.close()
    assert not watched.closed_during_statement
