"""Rows written before DBOS IDs quoted their parts are renamed once, to the quoted form; so are
queue names written before they named the namespace (`queue_names`).

Up to envelope version 1 (`setup.ENVELOPE_VERSION`) a run's DBOS ID was its parts joined by
``/`` as they are. The ID of a run whose namespace or workflow ID holds ``/`` or ``%`` is
different now (`ids`); every other ID reads the same, so only those rows are renamed. It runs
with the envelope's upgrade, under its lock, so once per database (Postgres) or file (SQLite);
processes of the older release must be stopped first, as for any upgrade of dbosify.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from dbosify._store import dbos_ids as ids

START_VERSION = "dbosify:start"  # `inbound_triggers.START_VERSION`: rows already in the new form

# The columns of DBOS's tables that hold a workflow ID, which SQLite's foreign keys (off unless
# a connection turns them on) do not carry along as Postgres's ON UPDATE CASCADE does.
_ID_COLUMNS = ("workflow_uuid", "destination_uuid", "parent_workflow_id")


def _renames(rows: list[Any], namespace: str) -> list[tuple[str, str]]:
    out = []
    for workflow_id, run_id in rows:
        old = f"{namespace}/{workflow_id}/{run_id}"
        new = ids.workflow_uuid(namespace, str(workflow_id), str(run_id))
        if old != new:
            out.append((new, old))
    return out


def _changed_runs(query: Any, table: str, namespace: str, like: str) -> list[Any]:
    if ids.quote(namespace) != namespace:  # every ID of the namespace changes
        return list(query(f"SELECT workflow_id, run_id FROM {table}"))
    return list(
        query(f"SELECT workflow_id, run_id FROM {table} WHERE workflow_id {like} '%/%'"
              f" OR workflow_id {like} '%\\%%' ESCAPE '\\'")
    )


def pg_shared(conn: Any, catalog: str, schema: str) -> int:
    """Rename the old-form rows of every namespace in the shared schema; returns how many."""
    done = 0
    for name, ident in conn.execute(f'SELECT name, ident FROM "{catalog}".namespaces').fetchall():
        if conn.execute("SELECT to_regclass(%s)", (f'"{ident}".executions',)).fetchone()[0] is None:
            continue

        def query(sql: str) -> Any:
            return conn.execute(sql).fetchall()

        renames = _renames(_changed_runs(query, f'"{ident}".executions', str(name), "LIKE"), str(name))
        if not renames:
            continue
        with conn.cursor() as cur:  # the other tables follow through ON UPDATE CASCADE
            cur.executemany(
                f'UPDATE "{schema}".workflow_status SET workflow_uuid = %s WHERE workflow_uuid = %s',
                renames,
            )
            cur.executemany(
                f'UPDATE "{schema}".workflow_status SET parent_workflow_id = %s'
                " WHERE parent_workflow_id = %s",
                renames,
            )
        done += len(renames)
    return done


def sqlite_file(conn: sqlite3.Connection, namespace: str) -> int:
    """Rename the old-form rows of one namespace's file (in its open transaction)."""

    def query(sql: str) -> Any:
        return conn.execute(sql).fetchall()

    renames = _renames(_changed_runs(query, "executions", namespace, "LIKE"), namespace)
    if not renames:
        return 0
    tables = [str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        columns = {str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")')}
        for column in _ID_COLUMNS:
            if column in columns and table != "executions":
                conn.executemany(
                    f'UPDATE "{table}" SET {column} = ? WHERE {column} = ?', renames
                )
    return len(renames)


# -- queue names ---------------------------------------------------------------------------------


def queue_names(dialect: str) -> str:
    """The statement renaming the queue of our runs' rows written up to envelope version 4 (the
    bare task queue) to ``<namespace>/<task queue>`` (`inbound_triggers.queue_name`): the
    namespace is the first part of the row's DBOS ID (a fork's record: of the run it forks),
    already quoted. Runs once, at the envelope's upgrade, with the queue-keeping trigger
    dropped (it would put the old name back)."""
    source = "COALESCE(forked_from, workflow_uuid)"
    first = (
        f"split_part({source}, '/', 1)" if dialect == "postgres"
        else f"substr({source}, 1, instr({source}, '/') - 1)"
    )
    # A queue already in the new form (its first part the ID's namespace) is left as it is, so
    # the statement is idempotent.
    return (
        f"UPDATE {{ws}} SET queue_name = {first} || '/'"
        " || replace(replace(queue_name, '%', '%25'), '/', '%2F')"
        " WHERE application_name = 'dbosify' AND application_version <> '" + START_VERSION + "'"
        " AND queue_name IS NOT NULL AND queue_name <> '_dbos_internal_queue'"
        f" AND substr(queue_name, 1, length({first}) + 1) <> {first} || '/'"
    )
