"""The chaos harness's own look at the database: the namespace's ``executions`` (who owns which
run) through the engine's catalog, and the harness's table of activity executions.

Postgres: the catalog ``dbosify_catalog.namespaces`` maps the namespace to its schema; the
harness's table lives in a schema of its own, ``chaos_<tag>``, in the same database.
SQLite: ``<dir>/catalog.sqlite`` maps it to ``<dir>/<ident>.sqlite``; the harness's table is a
side file. Every read reconnects after an error (the Postgres restart ends every session).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

TABLE = """CREATE TABLE IF NOT EXISTS {t} (
    exec_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, activity TEXT NOT NULL,
    attempt INTEGER NOT NULL, pid INTEGER NOT NULL, identity TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION)"""
COLUMNS = ("exec_id", "workflow_id", "activity", "attempt", "pid", "identity", "started_at", "ended_at")


def owner_pid(owner: str | None) -> int | None:
    """The pid in an owner string ``host:pid:hex@token``."""
    try:
        return int(str(owner).split(":")[1])
    except (IndexError, ValueError):
        return None


class Db:
    def __init__(self, url: str | None, sqlite_dir: Path | None, tag: str) -> None:
        self.url = url
        self.sqlite_dir = sqlite_dir
        self.schema = f"chaos_{tag}"
        self.ident: str | None = None
        self._conn: Any = None

    @property
    def is_sqlite(self) -> bool:
        return self.sqlite_dir is not None

    @property
    def target(self) -> str:
        """What the app's ``Client.connect`` is given."""
        return f"sqlite:///{self.sqlite_dir}" if self.sqlite_dir is not None else str(self.url)

    @property
    def record_spec(self) -> str:
        if self.sqlite_dir is not None:
            return f"sqlite:{self.sqlite_dir.parent / 'activity-runs.sqlite'}"
        return f"pg:{self.schema}:{self.url}"

    # -- connections -----------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = (), retry_for: float = 60) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                if self.is_sqlite:
                    return list(self._conn.execute(sql.replace("%s", "?"), params).fetchall())
                with self._conn.cursor() as cur:
                    cur.execute(sql, params)
                    return list(cur.fetchall()) if cur.description else []
            except Exception:
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _connect(self) -> Any:
        if self.sqlite_dir is not None:
            assert self.ident is not None, "the namespace's file is not known yet"
            return sqlite3.connect(f"file:{self.sqlite_dir / (self.ident + '.sqlite')}?mode=ro", uri=True, timeout=30)
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    # -- the namespace ---------------------------------------------------------------------------

    def find_namespace(self, name: str, timeout: float = 60) -> str:
        """The namespace's schema (file stem), once a worker has registered it in the catalog."""
        deadline = time.monotonic() + timeout
        while self.ident is None:
            if self.sqlite_dir is not None:
                catalog = self.sqlite_dir / "catalog.sqlite"
                if catalog.exists():
                    with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=30) as conn:
                        row = conn.execute("SELECT ident FROM namespaces WHERE name = ?", (name,)).fetchone()
                    conn.close()
                    self.ident = str(row[0]) if row else None
            elif self._query("SELECT to_regclass('dbosify_catalog.namespaces')")[0][0] is not None:
                rows = self._query("SELECT ident FROM dbosify_catalog.namespaces WHERE name = %s", (name,))
                self.ident = str(rows[0][0]) if rows else None
            if self.ident is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"namespace {name!r} is not in the catalog after {timeout:.0f} s")
                time.sleep(0.2)
        return self.ident

    def _executions(self) -> str:
        return "executions" if self.is_sqlite else f'"{self.ident}".executions'

    def owned_by(self, pid: int) -> dict[str, str]:
        """Running runs whose owner is the worker process ``pid``: run id -> workflow id."""
        rows = self._query(f"SELECT run_id, workflow_id, owner FROM {self._executions()}"
                           " WHERE status = 1 AND owner IS NOT NULL", retry_for=10)
        return {str(r[0]): str(r[1]) for r in rows if owner_pid(r[2]) == pid}

    def owners(self, run_ids: list[str]) -> dict[str, tuple[str | None, int]]:
        """run id -> (owner, status) for the given runs."""
        if not run_ids:
            return {}
        marks = ",".join(["%s"] * len(run_ids))
        rows = self._query(f"SELECT run_id, owner, status FROM {self._executions()}"
                           f" WHERE run_id IN ({marks})", tuple(run_ids), retry_for=10)
        return {str(r[0]): (r[1], int(r[2])) for r in rows}

    # -- the harness's table ---------------------------------------------------------------------

    def create_record(self) -> None:
        """Create the harness's table (before any worker starts)."""
        if self.sqlite_dir is not None:
            self.sqlite_dir.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self.record_spec.split(":", 1)[1]) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(TABLE.format(t="activity_runs"))
            conn.close()
        else:
            self._query(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            self._query(TABLE.format(t=f'"{self.schema}".activity_runs'))

    def executions(self) -> list[dict[str, Any]]:
        cols = ", ".join(COLUMNS)
        if self.sqlite_dir is not None:
            path = self.record_spec.split(":", 1)[1]
            if not Path(path).exists():
                return []
            with sqlite3.connect(path, timeout=30) as conn:
                rows = conn.execute(f"SELECT {cols} FROM activity_runs").fetchall()
            conn.close()
        else:
            if not self._query("SELECT to_regclass(%s)", (f'"{self.schema}".activity_runs',))[0][0]:
                return []
            rows = self._query(f'SELECT {cols} FROM "{self.schema}".activity_runs')
        return [dict(zip(COLUMNS, r, strict=True)) for r in rows]

    def drop(self, namespace: str) -> None:
        """Remove the namespace and the harness's schema (Postgres given with --db)."""
        if self.is_sqlite:
            return
        self._query(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        if self.ident:
            self._query(f'DROP SCHEMA IF EXISTS "{self.ident}" CASCADE')
            self._query("DELETE FROM dbosify_catalog.namespaces WHERE name = %s", (namespace,))
