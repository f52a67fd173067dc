"""DBOS's system tables beside ours, and the triggers that bring DBOS's commands to us.

Postgres: DBOS's tables live in the same database, in DBOS's default schema ``dbos`` (an isolated
server, see `SERVER_PARAM`, has its own), so ``dbos workflow list -s <url>`` works as is; with
``DBOSIFY_DBOS=namespace``, in each namespace's own schema instead (``--schema <its schema>``),
so namespaces' DBOS rows are apart. SQLite: in each namespace's file, so one transaction covers a
run's rows and its DBOS row.

They are created by DBOS's own migrations (`migrate`: what ``DBOS.migrate`` does, without
importing ``dbos``) once per dbos release, under a lock; a
marker (the dbos version and `ENVELOPE_VERSION`) says whether that is done, so a process that
finds it current runs no DDL. Then our triggers on `workflow_status`:
- a DBOS cancel or resume of a run (status set to CANCELLED or ENQUEUED by anyone but us), a
  fork (a new row ``forked_from`` a run) and a delete wake the workers of its task queue (key
  ``dbos:<task queue>``, the task queue read from the queue name ``<namespace>/<task queue>``): Postgres NOTIFY, SQLite `notices`; a delete is also recorded in
  `DELETES`, as the row is gone;
- the queue name stays the run's, whatever DBOS's verbs set it to (a resume sets DBOS's
  internal queue, a cancel NULL), so every later verb reaches the run's workers;
- a resume of a closed run is refused with a message that says why.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dbosify._store import dbos_ids as ids
from dbosify._store import dbos_inbound_triggers as inbound
from dbosify._store import dbos_requote as requote
from dbosify._store.errors import is_missing_relation

logger = logging.getLogger("dbosify")

# Our triggers; bump when they change. 2: DBOS IDs quote `%` and `/` in each part (`ids`), the
# command trigger matches the exact namespace, and rows written before are renamed (`requote`).
# 3: DBOS's send and enqueue reach Temporal runs (`inbound`).
# 4: the queue name is kept through DBOS's verbs, forks are resets, deletes are carried out.
# 5: the queue name is `<namespace>/<task queue>` (`inbound_triggers.queue_name`); older rows
# are renamed (`requote.queue_names`).
# 6: on SQLite, an enqueue is taken only when its queue names the file's own namespace.
# 7: DBOS's cancel, resume and send given to an enqueue's own row (its ID is the workflow ID)
# reach the workflow's running run: the wake-up reads the namespace from the queue name.
ENVELOPE_VERSION = 7
SETUP_WAIT_SECONDS = 120.0
APP = "dbosify"
MARKER_KEY = "dbos"

_REFUSE_RESUME = "a closed Temporal run cannot run again; start a new run instead"
DELETES = "dbosify_deletes"  # DBOS deletes of runs, for a worker to carry out (`commands`)


def marker() -> str:
    return f"{version('dbos')}/{ENVELOPE_VERSION}"


def _envelope(value: str | None) -> int:
    """The envelope version a marker names (0: none)."""
    try:
        return int(value.rsplit("/", 1)[1]) if value else 0
    except (IndexError, ValueError):
        return 0


def _migrate(url: str, schema: str | None) -> None:
    # DBOS's own migrations, applied without importing the dbos package (`migrate`): this runs
    # inside a user's first call.
    from dbosify._store import dbos_migrate as migrate

    migrate.migrate(url, schema)


# -- Postgres -------------------------------------------------------------------------------


def pg_ensure(conn: Any, pg_url: str, catalog: str, schema: str, own: bool = False) -> None:
    """DBOS's tables in ``schema`` and our triggers on them, unless the marker says done.

    ``own``: ``schema`` is one namespace's own (``DBOSIFY_DBOS=namespace``), else the schema
    that every namespace of the store shares. ``conn`` is one of our connections (not in a
    transaction; its transaction is ended).
    """
    key = f"{MARKER_KEY}:{schema}" if own else MARKER_KEY
    if _pg_marker(conn, catalog, key) == marker():
        return
    lock = f"{catalog}:dbos"
    # Try, do not wait: DBOS's migrations build indexes CONCURRENTLY, which wait for every open
    # transaction, a blocked lock request included. One-time setup, so a short sleep is fine.
    deadline = time.monotonic() + SETUP_WAIT_SECONDS
    while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock,)).fetchone()[0]:
        conn.rollback()
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {SETUP_WAIT_SECONDS:g} s for another process's DBOS setup")
        time.sleep(0.1)
        if _pg_marker(conn, catalog, key) == marker():
            return
    try:
        conn.commit()
        before = _pg_marker(conn, catalog, key)
        if before == marker():
            return
        logger.info("dbosify: setting up DBOS's system tables in schema %s", schema)
        _migrate(pg_url, schema)
        if 0 < _envelope(before) < 5:  # renames first (IDs, then queues), then the triggers
            conn.execute(f'DROP TRIGGER IF EXISTS dbosify_keep_queue ON "{schema}".workflow_status')
        if before is not None and before.endswith("/1") and not own:
            requote.pg_shared(conn, catalog, schema)
        if 0 < _envelope(before) < 5:
            conn.execute(requote.queue_names("postgres").format(ws=f'"{schema}".workflow_status'))
        for stmt in _pg_triggers(catalog, schema, own) + inbound.pg_triggers(catalog, schema):
            conn.execute(stmt)
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{catalog}".meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)'
        )
        conn.execute(
            f'INSERT INTO "{catalog}".meta (key, value) VALUES (%s, %s)'
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, marker()),
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))
        conn.commit()


def _pg_marker(conn: Any, catalog: str, key: str = MARKER_KEY) -> str | None:
    try:
        row = conn.execute(
            f'SELECT value FROM "{catalog}".meta WHERE key = %s', (key,)
        ).fetchone()
    except Exception as err:
        conn.rollback()
        if is_missing_relation(err):
            return None
        raise
    conn.rollback()
    return str(row[0]) if row else None


def _pg_triggers(catalog: str, schema: str, own: bool) -> list[str]:
    ws = f'"{schema}".workflow_status'
    # The namespace's NOTIFY channel is its schema: the DBOS tables' own schema when it is the
    # namespace's, else the catalog's entry for the exact name in the queue name's first part
    # (every row of ours has one: `<namespace>/<task queue>`; a DBOS enqueue's row, whose ID is a
    # workflow ID, names its namespace only there), or else in the ID's.
    name = ids.sql_unquote("split_part(COALESCE(queue, uuid), '/', 1)")
    task_queue = ids.sql_unquote("split_part(queue, '/', 2)")  # of `<namespace>/<task queue>`
    find = (
        f"channel := '{schema}';" if own
        else f'SELECT ident INTO channel FROM "{catalog}".namespaces WHERE name = {name};'
    )
    # Wakes the workers of a run's task queue: key `dbos:<queue_name>` on the namespace's channel.
    wake = f"""CREATE OR REPLACE FUNCTION "{schema}".dbosify_wake(uuid TEXT, queue TEXT) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE channel TEXT;
        BEGIN
            {find}
            IF channel IS NOT NULL THEN
                PERFORM pg_notify(channel, 'dbos:' || COALESCE({task_queue}, ''));
            END IF;
        END $$"""
    ours = f"NEW.application_name = '{APP}'"
    return [
        f"CREATE TABLE IF NOT EXISTS {_pg_deletes(schema)} (workflow_uuid TEXT PRIMARY KEY)",
        wake,
        f"""CREATE OR REPLACE FUNCTION "{schema}".dbosify_command() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('dbosify.writer', true) = 'on' THEN RETURN NULL; END IF;
            PERFORM "{schema}".dbosify_wake(COALESCE(NEW.forked_from, NEW.workflow_uuid), NEW.queue_name);
            RETURN NULL;
        END $$""",
        f"DROP TRIGGER IF EXISTS dbosify_command ON {ws}",
        # A cancel, a resume (of an ENQUEUED run too: a dormant one), a fork (its new row).
        f"""CREATE TRIGGER dbosify_command AFTER UPDATE OF status ON {ws} FOR EACH ROW
        WHEN ({ours} AND NEW.status IN ('CANCELLED', 'ENQUEUED'))
        EXECUTE FUNCTION "{schema}".dbosify_command()""",
        f"DROP TRIGGER IF EXISTS dbosify_fork ON {ws}",
        f"""CREATE TRIGGER dbosify_fork AFTER INSERT ON {ws} FOR EACH ROW
        WHEN ({ours} AND NEW.forked_from IS NOT NULL)
        EXECUTE FUNCTION "{schema}".dbosify_command()""",
        # The queue is the run's: DBOS's cancel (NULL) and resume or fork
        # (`_dbos_internal_queue`) do not move it, so later verbs reach the run's workers too.
        f"""CREATE OR REPLACE FUNCTION "{schema}".dbosify_keep_queue() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                SELECT queue_name INTO NEW.queue_name FROM {ws} WHERE workflow_uuid = NEW.forked_from;
            ELSIF OLD.queue_name IS NOT NULL THEN
                NEW.queue_name := OLD.queue_name;
            END IF;
            RETURN NEW;
        END $$""",
        f"DROP TRIGGER IF EXISTS dbosify_keep_queue ON {ws}",
        f"""CREATE TRIGGER dbosify_keep_queue BEFORE UPDATE OF queue_name ON {ws} FOR EACH ROW
        WHEN ({ours} AND NEW.forked_from IS NULL AND NEW.queue_name IS DISTINCT FROM OLD.queue_name)
        EXECUTE FUNCTION "{schema}".dbosify_keep_queue()""",
        f"DROP TRIGGER IF EXISTS dbosify_fork_queue ON {ws}",
        f"""CREATE TRIGGER dbosify_fork_queue BEFORE INSERT ON {ws} FOR EACH ROW
        WHEN ({ours} AND NEW.forked_from IS NOT NULL)
        EXECUTE FUNCTION "{schema}".dbosify_keep_queue()""",
        # A DBOS delete of a run: recorded for a worker, which deletes the run (Temporal's delete).
        f"""CREATE OR REPLACE FUNCTION "{schema}".dbosify_delete() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('dbosify.writer', true) = 'on' THEN RETURN OLD; END IF;
            INSERT INTO {_pg_deletes(schema)} (workflow_uuid) VALUES (OLD.workflow_uuid)
                ON CONFLICT DO NOTHING;
            PERFORM "{schema}".dbosify_wake(OLD.workflow_uuid, OLD.queue_name);
            RETURN OLD;
        END $$""",
        f"DROP TRIGGER IF EXISTS dbosify_delete ON {ws}",
        f"""CREATE TRIGGER dbosify_delete BEFORE DELETE ON {ws} FOR EACH ROW
        WHEN (OLD.application_name = '{APP}' AND OLD.forked_from IS NULL)
        EXECUTE FUNCTION "{schema}".dbosify_delete()""",
        f"""CREATE OR REPLACE FUNCTION "{schema}".dbosify_refuse() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('dbosify.writer', true) = 'on' THEN RETURN NEW; END IF;
            RAISE EXCEPTION 'dbosify: % is %: {_REFUSE_RESUME}', NEW.workflow_uuid, OLD.status;
        END $$""",
        f"DROP TRIGGER IF EXISTS dbosify_refuse_resume ON {ws}",
        f"""CREATE TRIGGER dbosify_refuse_resume BEFORE UPDATE OF status ON {ws} FOR EACH ROW
        WHEN ({ours} AND NEW.status = 'ENQUEUED'
              AND OLD.status IN ('SUCCESS', 'ERROR', 'CANCELLED'))
        EXECUTE FUNCTION "{schema}".dbosify_refuse()""",
        f"DROP TRIGGER IF EXISTS dbosify_refuse_fork ON {ws}",
    ]


def _pg_deletes(schema: str) -> str:
    return f'"{schema}".{DELETES}'


# -- SQLite -----------------------------------------------------------------------------------


def sqlite_ensure(conn: sqlite3.Connection, path: Path, namespace: str) -> None:
    """DBOS's tables in the namespace file and our triggers, unless the marker says done."""
    try:
        row = conn.execute("SELECT value FROM dbosify_meta WHERE key = ?", (MARKER_KEY,)).fetchone()
    except sqlite3.OperationalError as err:
        if "no such table" not in str(err):
            raise
        row = None
    if row is not None and row[0] == marker():
        return
    _migrate(f"sqlite:///{path}", None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if row is not None and 0 < _envelope(str(row[0])) < 5:  # renames (IDs, queues) first
            conn.execute("DROP TRIGGER IF EXISTS dbosify_keep_queue")
            if str(row[0]).endswith("/1"):
                requote.sqlite_file(conn, namespace)
            conn.execute(requote.queue_names("sqlite").format(ws="workflow_status"))
        for stmt in _SQLITE_TRIGGERS + inbound.sqlite_triggers(namespace):
            conn.execute(stmt)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS dbosify_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO dbosify_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (MARKER_KEY, marker()),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# The key names the task queue: the second part of the queue name `<namespace>/<task queue>`.
_SQLITE_WAKE = (
    "INSERT INTO notices (origin, key) VALUES ('dbos', 'dbos:' || COALESCE("
    + ids.sql_unquote("substr({q}, instr({q}, '/') + 1)") + ", ''))"
)
_SQLITE_TRIGGERS = [
    f"CREATE TABLE IF NOT EXISTS {DELETES} (workflow_uuid TEXT PRIMARY KEY)",
    "DROP TRIGGER IF EXISTS dbosify_command",
    # Our own writes fire it too (SQLite has no session setting to tell them apart); the
    # workers then find nothing to do.
    f"""CREATE TRIGGER dbosify_command AFTER UPDATE OF status ON workflow_status
    WHEN NEW.application_name = '{APP}' AND NEW.status IN ('CANCELLED', 'ENQUEUED')
    BEGIN {_SQLITE_WAKE.format(q="OLD.queue_name")}; END""",
    "DROP TRIGGER IF EXISTS dbosify_keep_queue",
    f"""CREATE TRIGGER dbosify_keep_queue AFTER UPDATE OF queue_name ON workflow_status
    WHEN NEW.application_name = '{APP}' AND NEW.forked_from IS NULL
         AND OLD.queue_name IS NOT NULL AND NEW.queue_name IS NOT OLD.queue_name
    BEGIN
        UPDATE workflow_status SET queue_name = OLD.queue_name
        WHERE workflow_uuid = NEW.workflow_uuid;
    END""",
    "DROP TRIGGER IF EXISTS dbosify_fork",
    f"""CREATE TRIGGER dbosify_fork AFTER INSERT ON workflow_status
    WHEN NEW.application_name = '{APP}' AND NEW.forked_from IS NOT NULL
    BEGIN
        UPDATE workflow_status SET queue_name = (
            SELECT queue_name FROM workflow_status WHERE workflow_uuid = NEW.forked_from)
        WHERE workflow_uuid = NEW.workflow_uuid;
        {_SQLITE_WAKE.format(q="(SELECT queue_name FROM workflow_status WHERE workflow_uuid = NEW.forked_from)")};
    END""",
    "DROP TRIGGER IF EXISTS dbosify_delete",
    f"""CREATE TRIGGER dbosify_delete BEFORE DELETE ON workflow_status
    WHEN OLD.application_name = '{APP}' AND OLD.forked_from IS NULL
    BEGIN
        INSERT OR IGNORE INTO {DELETES} (workflow_uuid) VALUES (OLD.workflow_uuid);
        {_SQLITE_WAKE.format(q="OLD.queue_name")};
    END""",
    "DROP TRIGGER IF EXISTS dbosify_refuse_resume",
    f"""CREATE TRIGGER dbosify_refuse_resume BEFORE UPDATE OF status ON workflow_status
    WHEN NEW.application_name = '{APP}' AND NEW.status = 'ENQUEUED'
         AND OLD.status IN ('SUCCESS', 'ERROR', 'CANCELLED')
    BEGIN SELECT RAISE(ABORT, 'dbosify: {_REFUSE_RESUME}'); END""",
    "DROP TRIGGER IF EXISTS dbosify_refuse_fork",
]
