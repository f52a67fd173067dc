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


def is_missing_relation(err: BaseException) -> bool:
    """Postgres: the table or its schema does not exist (yet): a catalog or DBOS table that no
    one has created, which readers take as empty."""
    return getattr(err, "sqlstate", None) in ("42P01", "3F000")  # undefined table, schema


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



class InvalidData(StoreError):
    """The database refused a value or a statement as malformed or past one of its limits (a
    NUL in text, a number out of range, an index row or a statement too large, too many
    parameters): the request is at fault, so it is INVALID_ARGUMENT and never retried."""


# sqlite3 reports its limits as OperationalError; these are the messages of the ones a request
# can reach (sqlite3.c: "too many SQL variables", SQLITE_TOOBIG, the parser's depth limits).
_SQLITE_LIMITS = (
    "too many sql variables",
    "string or blob too big",
    "expression tree is too large",
    "parser stack overflow",
    "too many terms in compound select",
    "like or glob pattern too complex",
    "too many arguments on function",
    "too many columns",
)


def as_invalid_data(err: BaseException, conn_ok: bool) -> InvalidData | None:
    """``err`` as an `InvalidData` with its first line, if it is a data or limit error.

    ``conn_ok``: the connection the statement ran on is still usable. psycopg raises a plain
    OperationalError, with no SQLSTATE, both for a lost connection and for a statement libpq
    would not send (more than 65,535 parameters): only the first breaks the connection.
    """
    if isinstance(err, OverflowError):  # sqlite3: a Python int past 64 bits
        return InvalidData(_first_line(err))
    if isinstance(err, sqlite3.DataError):
        return InvalidData(_first_line(err))
    if isinstance(err, sqlite3.OperationalError):
        text = str(err).lower()
        return InvalidData(_first_line(err)) if any(s in text for s in _SQLITE_LIMITS) else None
    if "psycopg" not in type(err).__module__:
        return None
    state = getattr(err, "sqlstate", None) or ""
    # Class 22: data exception (out of range, bad text, NUL, ...); class 54: program limit
    # exceeded (index row size, statement too complex, too many arguments).
    if state.startswith(("22", "54")) or type(err).__name__ == "DataError":
        return InvalidData(_first_line(err))
    if type(err).__name__ == "OperationalError" and not state and conn_ok:
        return InvalidData(_first_line(err))
    return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    line = lines[0] if lines else type(err).__name__
    return line if len(line) <= 300 else line[:300] + "..."
