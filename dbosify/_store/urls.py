"""Where the data goes: resolving a connect target to a database URL, and reading that URL."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from dbosify._store.errors import StoreError

ENV_DATABASE_URL = "DBOSIFY_DATABASE_URL"
ENV_HOME = "DBOSIFY_HOME"
SERVER_PARAM = "dbosify_server"  # URL query parameter: one isolated "dev server" in a database


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def default_sqlite_dir() -> Path:
    """Where the embedded SQLite default lives: ``$DBOSIFY_HOME`` or the user's state dir."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "dbosify"


def resolve_url(target: str | None) -> str:
    """The database URL for a ``Client.connect`` target.

    A ``postgresql://`` or ``sqlite://`` target is used as is; otherwise
    ``DBOSIFY_DATABASE_URL``; otherwise an embedded SQLite directory.
    """
    if target:
        t = target
        for prefix in ("http://", "https://"):
            if t.startswith(prefix) and "://" in t[len(prefix) :]:
                t = t[len(prefix) :]
        if t.startswith(("postgresql://", "postgres://", "postgresql+psycopg://", "sqlite://")):
            return t
    env = os.environ.get(ENV_DATABASE_URL)
    if env:
        return env
    return "sqlite:///" + str(default_sqlite_dir())



@dataclass(frozen=True)
class Target:
    """A parsed database URL: an embedded SQLite directory, or a Postgres connection string."""

    url: str
    is_sqlite: bool
    sqlite_dir: Path | None = None
    pg_url: str | None = None
    server: str | None = None  # see SERVER_PARAM


def parse_url(url: str) -> Target:
    """Read a database URL, as `resolve_url` returns it."""
    if url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
        while path.startswith("//"):
            path = path[1:]
        sqlite_dir = Path(unquote(path)) if path not in ("", "/") else default_sqlite_dir()
        if sqlite_dir.suffix in (".db", ".sqlite", ".sqlite3"):
            sqlite_dir = sqlite_dir.parent / sqlite_dir.stem
        return Target(url, True, sqlite_dir=sqlite_dir)
    pg_url = re.sub(r"^(postgres|postgresql\+psycopg)://", "postgresql://", url)
    # `?dbosify_server=ID` (what `WorkflowEnvironment.start_local()` hands out when the
    # database is configured) isolates its own schemas, as a separate dev server would be.
    parts = urlsplit(pg_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    server = [v for k, v in query if k == SERVER_PARAM]
    srv: str | None = None
    if server:
        if not re.fullmatch(r"[a-z0-9]{1,16}", server[0]):
            raise StoreError(f"invalid {SERVER_PARAM} in the database URL: {server[0]!r}")
        srv = server[0]
        rest = [(k, v) for k, v in query if k != SERVER_PARAM]
        pg_url = urlunsplit(parts._replace(query=urlencode(rest)))
    return Target(url, False, pg_url=pg_url, server=srv)
