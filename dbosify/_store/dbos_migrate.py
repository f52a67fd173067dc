"""DBOS's system tables, created with DBOS's own migrations without importing the ``dbos`` package.

``import dbos`` takes about two seconds and has import-time side effects (its scheduler's cron
library runs ``platform.architecture()``, a ``file`` subprocess, which fails in a thread of a
gevent-patched process). The first start of a store sets DBOS's tables up, inside a user's call,
so it must not import ``dbos``. DBOS's migrations are lists of SQL in ``dbos/_migration.py``,
which needs only SQLAlchemy and two small modules of the package (``_utils`` for
``quote_identifier``, ``_logger`` for a logger). This module loads those files from the
installed ``dbos`` folder under a private package name (`PRIVATE`, never ``dbos``, so nothing runs
the package's ``__init__``), with a stand-in ``_logger``, and applies the migrations past the
version recorded in ``dbos_migrations``, as ``DBOS.migrate`` does:

- Postgres: under DBOS's own migration advisory lock, ``ensure_dbos_schema`` and
  ``run_dbos_migrations`` of that file (DBOS's code, run as is);
- SQLite: DBOS's loop of its SQLite ``SystemDatabase.run_migrations`` (``dbos/_sys_db_sqlite.py``,
  whose module imports the whole runtime), done here the same way: one ``BEGIN IMMEDIATE``
  transaction, each migration's statements split on ``;``, the version row written after each.

This relies on private layout of ``dbos`` (the file's name, its imports and functions), which
holds in the supported range (pyproject.toml: >=3.4,<3.5); tests/test_dbos_migrate.py checks the
result equals ``DBOS.migrate``'s (tables, columns, indexes, functions, version row).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

PRIVATE = "dbosify._dbos._dbos_files"  # the private package the files are loaded under
_PG_LOCK_ID = 1234567890  # DBOS's migration advisory lock: a DBOS app migrating waits for us
_PG_LOCK_SECONDS = 30.0
_lock = threading.Lock()


def _dbos_folder() -> Path:
    spec = importlib.util.find_spec("dbos")  # finds the package, runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the dbos package is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _load_file(folder: Path, name: str) -> types.ModuleType:
    full = f"{PRIVATE}.{name}"
    spec = importlib.util.spec_from_file_location(full, folder / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"dbos/{name}.py is not found in {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    return module


def migrations() -> Any:
    """``dbos/_migration.py``, loaded as ``<PRIVATE>._migration`` (once per process)."""
    with _lock:
        loaded = sys.modules.get(f"{PRIVATE}._migration")
        if loaded is not None:
            return loaded
        folder = _dbos_folder()
        package = types.ModuleType(PRIVATE)
        package.__path__ = [str(folder)]
        package.__package__ = PRIVATE
        sys.modules[PRIVATE] = package
        # `dbos/_logger.py` imports `dbos._utils` by its absolute name (the package's __init__),
        # and only its logger is used by the migrations: a stand-in with the same logger.
        stand_in = types.ModuleType(f"{PRIVATE}._logger")
        stand_in.dbos_logger = logging.getLogger("dbos")  # type: ignore[attr-defined]
        sys.modules[stand_in.__name__] = stand_in
        _load_file(folder, "_utils")
        return _load_file(folder, "_migration")


def migrate(url: str, schema: str | None = None) -> None:
    """DBOS's system tables at ``url`` (``postgresql://...`` or ``sqlite:///<path>``), in
    ``schema`` on Postgres (DBOS's default ``dbos``), up to this dbos release's latest version."""
    if url.startswith("sqlite"):
        _sqlite(url)
    else:
        _postgres(url, schema or "dbos")


def _postgres(url: str, schema: str) -> None:
    import sqlalchemy as sa

    m = migrations()
    engine = sa.create_engine(
        sa.make_url(url).set(drivername="postgresql+psycopg"), pool_size=2, max_overflow=0
    )
    try:
        if not m.should_migrate(engine, schema, True):
            return
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            deadline = time.monotonic() + _PG_LOCK_SECONDS
            locked = False
            while not locked and time.monotonic() < deadline:
                locked = bool(conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:id)"), {"id": _PG_LOCK_ID}
                ).scalar())
                if not locked:
                    time.sleep(0.2)
            try:  # without the lock after the wait, as DBOS does
                m.ensure_dbos_schema(engine, schema)
                m.run_dbos_migrations(engine, schema, True)
            finally:
                if locked:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
    finally:
        engine.dispose()


def _sqlite(url: str) -> None:
    import sqlalchemy as sa

    m = migrations()
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    try:
        with engine.begin() as conn:
            conn.execute(sa.text("PRAGMA foreign_keys = ON"))
            conn.execute(sa.text("BEGIN IMMEDIATE"))
            exists = conn.execute(sa.text(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='dbos_migrations'"
            )).fetchone()
            if exists is None:
                conn.execute(sa.text(
                    "CREATE TABLE dbos_migrations (version INTEGER NOT NULL PRIMARY KEY)"
                ))
                applied = 0
            else:
                row = conn.execute(sa.text("SELECT version FROM dbos_migrations")).fetchone()
                applied = int(row[0]) if row else 0
            first = applied == 0

            def record(version: int) -> None:
                verb = (
                    "INSERT INTO dbos_migrations (version) VALUES (:v)" if first
                    else "UPDATE dbos_migrations SET version = :v"
                )
                conn.execute(sa.text(verb), {"v": version})

            latest = len(m.sqlite_migrations)
            for i, sql in enumerate(m.sqlite_migrations, 1):
                statements = [s.strip() for s in sql.split(";") if s.strip()]
                if i <= applied or not statements:
                    continue
                for statement in statements:
                    conn.execute(sa.text(statement))
                record(i)
                applied = i
                first = False
            if latest > applied:
                record(latest)
    finally:
        engine.dispose()
