"""How the CLI fails: one ``Error: ...`` line on stderr and exit code 1, whatever went wrong.

The line never holds a password (each database URL the command was given is scrubbed from it,
however a message quotes it) nor a raw control character, and names the path of a file it
could not use. ``dbosify --debug`` prints the traceback first, scrubbed the same way.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path

import click

from dbosify.cli.output import escape

# `dbosify run` imports this package and must import nothing more (no store, no temporalio):
# dbosify._store.urls is imported where a URL is scrubbed.

_state: dict[str, object] = {"debug": False, "sqlite_dir": None}
_urls: set[str] = set()  # the database URLs this command was given


def set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """The ``--debug`` flag's callback (on the root and on each verb)."""
    if value:
        _state["debug"] = True


def debug() -> bool:
    return bool(_state["debug"])


DEBUG_HELP = "On failure, print the traceback before the error line."


def given_url(url: str, sqlite_dir: Path | None = None) -> None:
    """Note a database URL the command was given: its password is scrubbed from every error;
    and, for the embedded store, its directory, named in errors about its files."""
    _urls.add(url)
    if sqlite_dir is not None:
        _state["sqlite_dir"] = sqlite_dir


def redact(text: str) -> str:
    """``text`` with every URL the command was given masked and their passwords scrubbed."""
    from dbosify._store.urls import ENV_DATABASE_URL, mask_url, url_secrets

    urls = set(_urls)
    env = os.environ.get(ENV_DATABASE_URL)
    if env:
        urls.add(env)
    for url in sorted(urls, key=len, reverse=True):
        text = text.replace(url, mask_url(url))
        for secret in url_secrets(url):
            # Standing alone, not as part of a longer word: a password such as "pw" is not
            # scrubbed out of "pwd".
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def one_line(exc: BaseException) -> str:
    """An exception as the text of one error line: its first line, or its class name."""
    text = str(getattr(exc, "message", "") or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    filename = getattr(exc, "filename", None)
    if isinstance(exc, OSError) and filename and str(filename) not in first:
        first = f"{first}: {filename}"
    return first


def error_line(message: str) -> str:
    """``message`` fit for stderr: scrubbed, its control characters escaped."""
    return escape(redact(message))


def print_traceback(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    click.echo(escape(redact(text), lines=True).rstrip("\n"), err=True)


def report(exc: BaseException) -> int:
    """An exception that reached the top: its traceback with ``--debug``, then one line."""
    if debug():
        print_traceback(exc)
    click.echo(f"Error: {error_line(one_line(exc))}", err=True)
    return 1


def sqlite_problem(directory: Path) -> str | None:
    """Why the embedded SQLite store in ``directory`` cannot be opened for writing, naming the
    path; None if it can (or may: a missing directory is created, naming itself if it can't)."""
    if not directory.exists():
        return None
    if not directory.is_dir():
        return f"the SQLite directory {directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        # A read-only directory (or file system): SQLite can create neither its files nor the
        # write-ahead log and shared-memory files, even of a file that exists.
        return f"the SQLite directory {directory} is not writable"
    for entry in sorted(directory.glob("*.sqlite")):
        if not entry.is_file():
            return f"cannot open the SQLite file {entry}: it is not a regular file"
        if not os.access(entry, os.R_OK | os.W_OK):
            return f"cannot open the SQLite file {entry}: it is not readable and writable"
    return None


# What SQLite says about a file without naming it.
_SQLITE_FILE = re.compile(
    r"unable to open database file|database is locked|disk I/O error|readonly database"
    r"|file is not a database|database disk image is malformed",
    re.IGNORECASE,
)


def with_sqlite_path(message: str) -> str:
    """A message about an unnamed SQLite file, with the store's directory named."""
    directory = _state["sqlite_dir"]
    if directory is not None and str(directory) not in message and _SQLITE_FILE.search(message):
        return f"{message} (in the SQLite directory {directory})"
    return message
