"""The embedded store's directories and files, private to their owner.

A namespace file holds every run's inputs and results, so whatever the umask, a directory the
store creates is 0700 and a file 0600. SQLite gives a database's ``-wal`` and ``-shm`` files the
mode of the database file, so creating the database file 0600 before SQLite opens it covers
them too. A directory or file that exists already keeps its mode: it is the operator's.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """``path`` and any missing parent, each created 0700."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it: its mode is that process's
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask


def private_file(path: Path) -> None:
    """``path`` created empty and 0600 if it does not exist (an empty file is a new database)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away; never added any
    finally:
        os.close(fd)


def connect(path: Path, **kwargs: Any) -> sqlite3.Connection:
    """`sqlite3.connect` to a database file that is created 0600 when it is new."""
    private_dir(path.parent)
    private_file(path)
    conn: sqlite3.Connection = sqlite3.connect(path, **kwargs)
    return conn
