"""What the store raises, and which database errors are worth another try."""

from __future__ import annotations

import sqlite3


class StoreError(RuntimeError):
    """The database could not be reached or used."""


def is_transient(err: BaseException) -> bool:
    """Worth another try in a new transaction: deadlock, serialisation, lock timeout, busy file;
    a prepared statement outdated by a schema change (the failed connection is closed, so the
    retry prepares it afresh) or gone from the session."""
    if getattr(err, "sqlstate", None) in ("40001", "40P01", "55P03") or is_outdated_statement(err):
        return True
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return True
    return is_connection_lost(err)


def is_outdated_statement(err: BaseException) -> bool:
    """A session's prepared statement no longer fits the schema, or is gone from the session."""
    state = getattr(err, "sqlstate", None)
    return state == "26000" or (state == "0A000" and "cached plan" in str(err))


def is_connection_lost(err: BaseException) -> bool:
    """Postgres went away or refused to connect (e.g. it is restarting): retry on a new connection."""
    if "psycopg" not in type(err).__module__:
        return False
    if type(err).__name__ in ("OperationalError", "InterfaceError"):
        return True  # client side: connection refused, closed or broken
    # Server side: class 08 (connection exception), admin/crash shutdown, cannot connect now.
    # A plain subclass name check would miss these (AdminShutdown is what a restart sends).
    state = getattr(err, "sqlstate", None) or ""
    # 25P03 / 57P05: the server ended a session idle (in a transaction) past its timeout, e.g.
    # one of a process that was stopped; the connection is gone, the transaction rolled back.
    return state.startswith("08") or state in ("57P01", "57P02", "57P03", "25P03", "57P05")

