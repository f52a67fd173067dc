"""Each namespace's tables under a `Store`: found through the catalog (`namespaces`) at first use in
a process, registered, created and brought to the current schema version (`migrations`), with
DBOS's system tables beside them when the namespace's runs have DBOS rows (`dbos_setup`); and
dropped whole (tests and tools).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from dbosify._store import dbos_ids as ids
from dbosify._store import dbos_setup, namespaces
from dbosify._store.retrying import Retrying
from dbosify._store.sqlite import SqliteBackend, _close_sqlite

logger = logging.getLogger(__name__)

ENV_NAMESPACES = "DBOSIFY_NAMESPACES"  # namespaces every client registers when it connects


class NamespaceCatalog(Retrying, SqliteBackend):
    """The namespaces side of `dbosify._store.store.Store` (which sets this state up)."""

    _idents: dict[str, str]  # namespace -> schema or file stem, at the current version
    _env_registered: set[str]
    _dbos_ready: set[str]
    server: str | None
    is_sqlite: bool
    open_namespaces: bool
    dbos_enabled: bool
    dbos_per_namespace: bool
    dbos_off: frozenset[str]
    dbos_schema: str | None
    _connection: Callable[..., AbstractContextManager[Any]]

    def dbos_on(self, namespace: str) -> bool:
        """Whether the runs of ``namespace`` are DBOS workflows (have DBOS rows)."""
        return self.dbos_enabled and namespace not in self.dbos_off

    def dbos_schema_of(self, namespace: str) -> str | None:
        """The Postgres schema of ``namespace``'s DBOS rows (None on SQLite: its own file)."""
        if self.dbos_schema is None or not self.dbos_per_namespace:
            return self.dbos_schema
        return self.ident(namespace)

    def ensure_namespace(self, namespace: str) -> Path:
        """SQLite: the namespace's file, created or brought to the current schema version."""
        self.prepare_namespace(namespace)
        return self.sqlite_path(namespace)

    def prepare_namespace(self, namespace: str) -> None:
        """Do now what the namespace's first use in this process would do: its tables at the
        current schema version, and DBOS's system tables beside them (importing `dbos` and its
        migrations take about 0.4 s, longer on a busy machine)."""
        with self._connection(namespace):
            pass

    def namespace_names(self) -> list[str]:
        """The namespaces registered in this store's catalog (``default`` once it is used)."""
        if self.is_sqlite:
            return namespaces.sqlite_names(self._sqlite_dir)
        import psycopg

        with psycopg.connect(self._pg_url, connect_timeout=self.pg_connect_timeout, autocommit=True) as conn:
            return namespaces.pg_names(conn, self.server)

    def ident(self, namespace: str) -> str:
        """The namespace's Postgres schema (and NOTIFY channel), or its SQLite file's stem.

        The first use in a process looks the name up in the catalog (registering ``default``),
        and brings its tables to the current schema version; after that it is a dictionary
        lookup. A name that is not registered raises `namespaces.NamespaceNotFound`.
        """
        ident = self._idents.get(namespace)
        if ident is not None:
            return ident
        # InvalidNamespace is a StoreError that the client reports as INVALID_ARGUMENT.
        namespaces.validate_name(namespace)
        create = self.open_namespaces or namespace == namespaces.DEFAULT
        ident, _ = self._retrying(lambda _lost: self._resolve_ident(namespace, create))
        with self._lock:
            return self._idents.setdefault(namespace, ident)

    def register_namespace(self, namespace: str) -> bool:
        """Register ``namespace`` (and create its tables); False if it was registered already."""
        namespaces.validate_name(namespace)
        ident, created = self._retrying(lambda _lost: self._resolve_ident(namespace, True))
        with self._lock:
            self._idents.setdefault(namespace, ident)
        return created

    def register_env_namespaces(self) -> None:
        """Register the names listed in ``DBOSIFY_NAMESPACES`` (comma-separated), once each per
        process: a deployment declares its namespaces as a dev server's ``--namespace`` does."""
        names = env_namespaces()
        for name in names:  # all checked before any is registered
            namespaces.validate_name(name)
        for name in names:
            if name not in self._env_registered:
                self.register_namespace(name)
                self._env_registered.add(name)

    def require_namespace(self, namespace: str) -> None:
        """Raise `NamespaceNotFound` unless ``namespace`` may be used (``default``, or
        registered). Reads the catalog only: none of the first use's setup (a worker's
        validation must not wait for it)."""
        if namespace in self._idents or namespace == "default":
            return
        namespaces.validate_name(namespace)
        if self.is_sqlite:
            namespaces.sqlite_ident(self._sqlite_dir, self.server, namespace, create=False)
            return

        def look(_lost: bool) -> None:
            with self._pg_connection() as conn:
                if namespaces.pg_lookup(conn, self.server, namespace) is None:
                    namespaces.pg_register(conn, self.server, namespace, create=False)

        self._retrying(look)

    def _resolve_ident(self, namespace: str, create: bool) -> tuple[str, bool]:
        if self.is_sqlite:
            return namespaces.sqlite_ident(self._sqlite_dir, self.server, namespace, create)
        with self._pg_connection() as conn:
            ident = namespaces.pg_lookup(conn, self.server, namespace)
            created = False
            if ident is None:
                ident, created = namespaces.pg_register(conn, self.server, namespace, create)
            if self.dbos_on(namespace):
                assert self.dbos_schema is not None
                schema = ident if self.dbos_per_namespace else self.dbos_schema
                if schema not in self._dbos_ready:
                    dbos_setup.pg_ensure(
                        conn, self._pg_url, namespaces.catalog_schema(self.server), schema,
                        own=self.dbos_per_namespace,
                    )
                    self._dbos_ready.add(schema)
            return ident, created

    def drop_namespace(self, namespace: str) -> None:
        """Delete a namespace's tables and its catalog entry (tests and tools)."""
        ident = self.ident(namespace)
        with self._lock:
            self._idents.pop(namespace, None)
            entry = self._sqlite_conns.pop(namespace, None)
        if self.is_sqlite:
            if entry is not None:
                _close_sqlite(*entry)
            namespaces.sqlite_forget(self._sqlite_dir, namespace)
            for suffix in ("", "-wal", "-shm"):
                (self._sqlite_dir / f"{ident}.sqlite{suffix}").unlink(missing_ok=True)
            return
        with self._pg_connection() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ident}" CASCADE')
            if self.dbos_schema in self._dbos_ready:  # the shared schema: this namespace's rows
                # Its quoted name holds no "/": the prefix names it and no other.
                prefix = ids.quote(namespace) + "/"
                conn.execute(
                    f'DELETE FROM "{self.dbos_schema}".workflow_status'
                    " WHERE starts_with(workflow_uuid, %s)",
                    (prefix,),
                )
            conn.execute(
                f'DELETE FROM "{namespaces.catalog_schema(self.server)}".namespaces WHERE name = %s',
                (namespace,),
            )
            conn.commit()

    def drop_server(self) -> None:
        """Drop every schema of this store's isolated server (see `SERVER_PARAM`)."""
        if self.server is None or self.is_sqlite:
            return
        import psycopg

        # Bounded waits: a session still holding a lock on one of these schemas (a process that
        # is frozen, or still shutting down) leaves it behind, with a warning, rather than a hang.
        with psycopg.connect(
            self._pg_url, autocommit=True, connect_timeout=self.pg_connect_timeout,
            options="-c lock_timeout=5000 -c statement_timeout=60000",
        ) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                (namespaces.prefix(self.server).replace("_", "\\_") + "%",),
            ).fetchall()
            for (name,) in rows:
                try:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                except psycopg.errors.QueryCanceled as err:  # lock_timeout, statement_timeout
                    logger.warning("dbosify: left the schema %s of a finished environment: %s", name, err)


def env_namespaces() -> list[str]:
    """The names in ``DBOSIFY_NAMESPACES`` (comma-separated, blanks around names ignored)."""
    return [n.strip() for n in os.environ.get(ENV_NAMESPACES, "").split(",") if n.strip()]
