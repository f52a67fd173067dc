"""Namespace identity: each Temporal namespace name maps to exactly one set of tables.

A catalog per store records ``name -> ident`` (Postgres: the ``<prefix>catalog.namespaces``
table, with the namespace's schema version; SQLite: ``catalog.sqlite`` beside the namespace
files). The ident is a Postgres schema or the stem of a SQLite file. Names that differ only in
case or punctuation (``team-a.prod``, ``Team_A_Prod``) are different namespaces, as on Temporal,
and get different idents; the ident is derived from the name for readability, with a hash
suffix when that readable form is already taken.

A namespace must be registered before it is used, as on Temporal: ``default`` is registered
by its first use, any other name by `pg_register` / `sqlite_ident` with ``create`` (the
RegisterNamespace RPC, ``dbosify namespace create``, ``DBOSIFY_NAMESPACES``, a dev server's
``--namespace``). Looking up a name that is not registered raises `NamespaceNotFound` and
writes nothing.

A database written before the catalog existed has schemas (files) named by the readable form
alone: the first name that maps to one adopts it, as that release did (it was registered then).

A schema or file that dbosify did not create is never adopted: dbosify marks what it creates
(`MARKER`: a Postgres ``COMMENT ON SCHEMA``; SQLite's ``PRAGMA application_id``), and a schema or
file found in its place without the marker, and without the tables dbosify's first release wrote
(``executions`` and ``history``), is refused with `ForeignStore`, naming it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from dbosify._store import files, limits, migrations
from dbosify._store.errors import StoreError, is_missing_relation

# Temporal's frontend limit for a namespace name (dynamic config `limit.maxIDLength`), counted
# as Go does: in bytes of UTF-8.
MAX_NAME_LENGTH = 1000

_CATALOG_TABLE = """
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    ident TEXT NOT NULL UNIQUE,
    schema_version INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
)
"""


class InvalidNamespace(StoreError, ValueError):
    """The name cannot be a namespace. The client reports it as INVALID_ARGUMENT, with the
    message Temporal's frontend gives where Temporal refuses the name too."""


class NamespaceNotFound(StoreError):
    """The name is not registered. The client reports it as NOT_FOUND with Temporal's message
    and ``NamespaceNotFoundFailure``, followed by how to register it."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Namespace {name} is not found. (dbosify: register it first, e.g. with"
            f" `dbosify namespace create {name}` or DBOSIFY_NAMESPACES={name}; see docs/COMPATIBILITY.md)"
        )
        self.name = name


class ForeignStore(StoreError):
    """A schema or file where dbosify would put a store is not one dbosify created."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} exists but was not created by dbosify; refusing to use it (drop or move it,"
            " or give dbosify another database or directory)"
        )


MARKER = "dbosify"  # COMMENT ON SCHEMA of every schema dbosify creates
SQLITE_APPLICATION_ID = 0x64627366  # "dbsf": PRAGMA application_id of every file dbosify creates


DEFAULT = "default"  # registered by its first use, as it exists from the start on Temporal


def validate_name(name: str) -> None:
    """Refuse what Temporal refuses (an empty or too long name), and what no store can hold.

    Temporal checks nothing else of a name: any other character, case and punctuation are
    allowed, and names that differ in them are different namespaces.
    """
    if not name:
        raise InvalidNamespace("Namespace not set on request.")
    problem = limits.id_problem(name, MAX_NAME_LENGTH)
    if problem == limits.NOT_UTF8:
        raise InvalidNamespace("Namespace is not valid UTF-8.")
    if problem == limits.TOO_LONG:
        raise InvalidNamespace("Namespace length exceeds limit.")
    if problem == limits.NUL:
        raise InvalidNamespace("Namespace contains a NUL character, which cannot be stored.")


def prefix(server: str | None) -> str:
    """What every schema (file) of a store starts with; an isolated server has its own."""
    return f"dbosify_{server}_" if server else "dbosify_"


def catalog_schema(server: str | None) -> str:
    return prefix(server) + "catalog"


def legacy_ident(name: str, server: str | None) -> str:
    """The ident the release before the catalog gave ``name`` (lossy: names could collide)."""
    return prefix(server) + "ns_" + re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()


# Postgres truncates identifiers to 63 bytes, and refuses a longer NOTIFY channel (the ident).
PG_MAX_IDENT = 63


def _candidates(name: str, server: str | None) -> list[str]:
    head = prefix(server) + "ns_"
    room = min(32, PG_MAX_IDENT - len(head) - 17)  # the longest candidate adds "_" + 16 hex
    readable = head + re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()[:room]
    digest = hashlib.sha256(name.encode()).hexdigest()
    return [readable, f"{readable}_{digest[:8]}", f"{readable}_{digest[:16]}"]


# -- Postgres -------------------------------------------------------------------------------


def pg_lookup(conn: Any, server: str | None, name: str) -> str | None:
    """The ident of ``name`` if it is registered at the current schema version; no DDL, no lock.

    Ends the connection's transaction.
    """
    catalog = catalog_schema(server)
    try:
        row = conn.execute(
            f'SELECT ident, schema_version FROM "{catalog}".namespaces WHERE name = %s', (name,)
        ).fetchone()
    except Exception as err:
        conn.rollback()
        if is_missing_relation(err):  # no catalog yet
            return None
        raise
    conn.rollback()
    if row is None:
        return None
    ident, version = str(row[0]), int(row[1])
    migrations.check_not_newer(version, f"namespace {name!r} (schema {ident})")
    return ident if version == migrations.CURRENT_VERSION else None


def pg_names(conn: Any, server: str | None) -> list[str]:
    """The names of the namespaces the catalog knows (none before the first is registered)."""
    try:
        rows = conn.execute(f'SELECT name FROM "{catalog_schema(server)}".namespaces ORDER BY name').fetchall()
    except Exception as err:
        if is_missing_relation(err):  # no catalog yet
            return []
        raise
    return [str(r[0]) for r in rows]


def sqlite_names(directory: Path) -> list[str]:
    path = sqlite_catalog_path(directory)
    if not path.exists():
        return []
    conn = files.connect(path, isolation_level=None, timeout=30)
    try:
        return [str(r[0]) for r in conn.execute("SELECT name FROM namespaces ORDER BY name")]
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return []
        raise
    finally:
        conn.close()


def pg_register(conn: Any, server: str | None, name: str, create: bool = True) -> tuple[str, bool]:
    """Find ``name`` in the catalog, registering it when ``create``, under the catalog lock; bring
    its tables to the current version. Returns (ident, whether this call registered it).

    One transaction: the catalog row, the namespace's schema and its migrations commit together.
    A name that is not registered, without ``create``, raises `NamespaceNotFound` and the
    transaction is rolled back: nothing is written.
    """
    catalog = catalog_schema(server)
    created = False
    try:
        with conn.cursor() as cur:

            def execute(sql: str, params: tuple[Any, ...] = ()) -> Any:
                cur.execute(sql, params)
                return cur

            # DDL waits for no one for long: on a busy database, give up and retry instead.
            execute("SET LOCAL lock_timeout = '5s'")
            execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (catalog,))
            have = execute("SELECT to_regclass(%s)", (f'"{catalog}".namespaces',)).fetchone()[0]
            if have is None:
                if _pg_schema_exists(execute, catalog):
                    _pg_check_ours(execute, catalog, ("namespaces",))
                else:
                    _pg_create_schema(execute, catalog)
                execute(_CATALOG_TABLE.replace("namespaces", f'"{catalog}".namespaces', 1))
            row = execute(
                f'SELECT ident, schema_version FROM "{catalog}".namespaces WHERE name = %s', (name,)
            ).fetchone()
            if row is None:
                ident, version, created = _pg_new_ident(execute, server, catalog, name, create)
                execute(
                    f'INSERT INTO "{catalog}".namespaces (name, ident, schema_version, created_at)'
                    " VALUES (%s, %s, %s, %s)",
                    (name, ident, version, time.time()),
                )
            else:
                ident, version = str(row[0]), int(row[1])
            migrations.check_not_newer(version, f"namespace {name!r} (schema {ident})")
            if version < migrations.CURRENT_VERSION:
                execute(f'SET LOCAL search_path TO "{ident}"')
                migrations.upgrade(lambda sql: execute(sql), False, version)
                execute(
                    f'UPDATE "{catalog}".namespaces SET schema_version = %s WHERE name = %s',
                    (migrations.CURRENT_VERSION, name),
                )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return ident, created


def _pg_new_ident(
    execute: Any, server: str | None, catalog: str, name: str, create: bool
) -> tuple[str, int, bool]:
    """An ident for a name not in the catalog: (ident, its current schema version: 0 for a new
    schema, whether the name is new). Without ``create``, only a schema written before the
    catalog is adopted; else `NamespaceNotFound`."""
    legacy = legacy_ident(name, server)
    taken_by_name = {
        str(r[0]) for r in execute(f'SELECT ident FROM "{catalog}".namespaces').fetchall()
    }
    if legacy not in taken_by_name and _pg_schema_exists(execute, legacy):
        # Written before the catalog: adopt it and upgrade it in place, if it is ours.
        _pg_check_ours(execute, legacy, ("executions", "history"))
        return legacy, 0, False
    if not create:
        raise NamespaceNotFound(name)
    for ident in _candidates(name, server):
        if ident not in taken_by_name and not _pg_schema_exists(execute, ident):
            _pg_create_schema(execute, ident)
            return ident, 0, True
    raise StoreError(f"no free schema name for namespace {name!r}")


def _pg_schema_exists(execute: Any, ident: str) -> bool:
    return execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (ident,)).fetchone() is not None


def _pg_create_schema(execute: Any, ident: str) -> None:
    execute(f'CREATE SCHEMA "{ident}"')
    execute(f"COMMENT ON SCHEMA \"{ident}\" IS '{MARKER}'")


def _pg_check_ours(execute: Any, ident: str, tables: tuple[str, ...]) -> None:
    """Refuse the existing schema ``ident`` unless dbosify created it: it carries `MARKER`, or
    (written before the marker) all of ``tables``."""
    row = execute(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (ident,)
    ).fetchone()
    if row is not None and row[0] == MARKER:
        return
    have = {
        str(r[0])
        for r in execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (ident,)
        ).fetchall()
    }
    if not set(tables) <= have:
        raise ForeignStore(f"schema {ident!r}")


# -- SQLite ---------------------------------------------------------------------------------


def sqlite_catalog_path(directory: Path) -> Path:
    return directory / "catalog.sqlite"


def sqlite_ident(
    directory: Path, server: str | None, name: str, create: bool = True
) -> tuple[str, bool]:
    """The ident (file stem) of ``name`` in the directory's catalog, registering it when
    ``create``: (ident, whether this call registered it). A name that is not registered, without
    ``create``, raises `NamespaceNotFound` and nothing is written (not even the catalog file)."""
    legacy = legacy_ident(name, server)
    catalog = sqlite_catalog_path(directory)
    # os.path.exists: False, not an error, for a name too long to be a file (the release before
    # the catalog could not have made one).
    if not create and not catalog.exists() and not os.path.exists(directory / f"{legacy}.sqlite"):
        raise NamespaceNotFound(name)
    conn = files.connect(catalog, isolation_level=None, timeout=30)
    try:
        try:
            row = conn.execute("SELECT ident FROM namespaces WHERE name = ?", (name,)).fetchone()
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
            _sqlite_check_ours(conn, catalog, ())
            row = None
        except sqlite3.DatabaseError as err:
            if "not a database" in str(err):
                raise ForeignStore(f"SQLite file {str(catalog)!r}") from None
            raise
        if row is not None:
            return str(row[0]), False
        conn.execute("BEGIN IMMEDIATE")
        created = False
        try:
            conn.execute(_CATALOG_TABLE.replace("DOUBLE PRECISION", "REAL"))
            conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
            row = conn.execute("SELECT ident FROM namespaces WHERE name = ?", (name,)).fetchone()
            if row is None:
                taken = {str(r[0]) for r in conn.execute("SELECT ident FROM namespaces")}
                if legacy not in taken and os.path.exists(directory / f"{legacy}.sqlite"):
                    ident = legacy  # written before the catalog: adopt it, if it is ours
                    _sqlite_check_file(directory / f"{legacy}.sqlite")
                elif not create:
                    raise NamespaceNotFound(name)
                else:
                    ident = next(
                        (
                            i
                            for i in _candidates(name, server)
                            if i not in taken and not (directory / f"{i}.sqlite").exists()
                        ),
                        "",
                    )
                    if not ident:
                        raise StoreError(f"no free file name for namespace {name!r}")
                    created = True
                conn.execute(
                    "INSERT INTO namespaces (name, ident, schema_version, created_at)"
                    " VALUES (?, ?, 0, ?)",
                    (name, ident, time.time()),
                )
            else:
                ident = str(row[0])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ident, created
    finally:
        conn.close()


def sqlite_ensure_schema(conn: sqlite3.Connection, name: str, path: Path) -> None:
    """Bring one namespace file to the current schema version (no DDL when it is current)."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as err:
        if "not a database" in str(err):
            raise ForeignStore(f"SQLite file {str(path)!r}") from None
        raise
    migrations.check_not_newer(version, f"namespace {name!r} ({path})")
    if version == migrations.CURRENT_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        migrations.check_not_newer(version, f"namespace {name!r} ({path})")
        if version == 0:  # new, or written before versions: refused unless ours
            _sqlite_check_ours(conn, path, ("executions", "history"))
            conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
        if version < migrations.CURRENT_VERSION:
            migrations.upgrade(conn.execute, True, version)
            conn.execute(f"PRAGMA user_version = {migrations.CURRENT_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _sqlite_check_ours(conn: sqlite3.Connection, path: Path, tables: tuple[str, ...]) -> None:
    """Refuse the file unless it is new (no tables), carries `SQLITE_APPLICATION_ID`, or
    (written before the marker) has all of ``tables`` (none: a catalog file must be new)."""
    if int(conn.execute("PRAGMA application_id").fetchone()[0]) == SQLITE_APPLICATION_ID:
        return
    have = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if have and not (tables and set(tables) <= have):
        raise ForeignStore(f"SQLite file {str(path)!r}")


def _sqlite_check_file(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        raise ForeignStore(f"SQLite file {str(path)!r}") from None
    try:
        _sqlite_check_ours(conn, path, ("executions", "history"))
    except sqlite3.DatabaseError:  # not a database at all
        raise ForeignStore(f"SQLite file {str(path)!r}") from None
    finally:
        conn.close()


def sqlite_forget(directory: Path, name: str) -> None:
    """Remove ``name`` from the directory's catalog (its file is the caller's to delete)."""
    conn = files.connect(sqlite_catalog_path(directory), isolation_level=None, timeout=30)
    try:
        conn.execute("DELETE FROM namespaces WHERE name = ?", (name,))
    finally:
        conn.close()
