"""A fresh database per conformance run, dropped afterwards.

Postgres: the server (and credentials) come from DBOSIFY_TEST_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres; the runner creates a database with a
unique name on it and drops it, plus any database whose name starts with that name
(DBOS may add a system database beside it), when the run ends.
SQLite: a path in the run's report dir (dbosify treats it as a directory of per-namespace
files), removed afterwards with anything else starting with its name.

The SQL is run with the venv's python (psycopg comes with this repo's dependencies),
so the runner itself needs nothing beyond the standard library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class DatabaseError(RuntimeError):
    pass


@dataclass
class FreshDatabase:
    kind: str
    url: str
    name: str
    admin_url: str | None = None  # postgres: where CREATE/DROP DATABASE is issued
    path: Path | None = None  # sqlite file

    @property
    def display(self) -> str:
        """URL without any password, for reports."""
        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url


def fresh_name() -> str:
    return f"dbosify_conf_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"


_CREATE = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute('CREATE DATABASE "%s"' % sys.argv[2])
"""

_DROP = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    names = [r[0] for r in c.execute(
        "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
        (sys.argv[2], sys.argv[2].replace("_", "\\\\_") + "%"),
    )]
    for n in names:
        c.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % n)
    print(" ".join(names))
"""


def _py(python: Path, code: str, *args: str) -> str:
    res = subprocess.run(
        [str(python), "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if res.returncode != 0:
        lines = (res.stderr.strip() or res.stdout.strip() or "?").splitlines()
        raise DatabaseError(lines[-1])
    return res.stdout.strip()


def create(kind: str, python: Path, run_dir: Path) -> FreshDatabase:
    name = fresh_name()
    if kind == "sqlite":
        path = (run_dir / name).resolve()
        return FreshDatabase("sqlite", f"sqlite:///{path}", name, path=path)
    if kind != "postgres":
        raise DatabaseError(f"unknown database kind {kind!r}")
    server = os.environ.get("DBOSIFY_TEST_DATABASE_URL") or DEFAULT_SERVER_URL
    parts = urlsplit(server)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise DatabaseError(f"DBOSIFY_TEST_DATABASE_URL is not a postgres URL: {server}")
    admin = urlunsplit(parts._replace(scheme="postgresql"))
    if parts.path in ("", "/"):
        admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        _py(python, _CREATE, admin, name)
    except DatabaseError as e:
        raise DatabaseError(f"cannot create database {name} via {admin.split('@')[-1]}: {e}") from None
    return FreshDatabase("postgres", url, name, admin_url=admin)


def drop(db: FreshDatabase, python: Path) -> str:
    """Remove the run's database(s); returns what was removed."""
    if db.kind == "sqlite":
        assert db.path is not None
        removed = []
        for p in db.path.parent.glob(db.path.name + "*"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
        return " ".join(removed)
    assert db.admin_url is not None
    return _py(python, _DROP, db.admin_url, db.name)
