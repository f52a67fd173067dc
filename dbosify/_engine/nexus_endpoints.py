"""Nexus endpoints: the operator service's create/get/list/update/delete, and their catalog.

Endpoints belong to the database, not to a namespace (as on Temporal, where they are cluster-wide):
they live in a table of the catalog every namespace shares (Postgres: ``<catalog>.nexus_endpoints``;
SQLite: ``catalog.sqlite``), created by the first endpoint written. Each has a UUID id, a version
bumped by every update (an update or a stale version is refused as on Temporal), a name unique
across the database, and a worker target (namespace and task queue) whose namespace must exist.
Validation and messages are the dev server's.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.errordetails.v1 import message_pb2 as details
from temporalio.api.nexus.v1 import message_pb2 as nx
from temporalio.api.operatorservice.v1 import request_response_pb2 as ops

from dbosify._engine import listing
from dbosify._engine.errors import FAILED_PRECONDITION, ServiceError
from dbosify._store import Store, Tx, files, namespaces
from dbosify._store.threads import in_thread

NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9\-]*[a-zA-Z0-9]$")  # whole name (fullmatch: no trailing newline)
MAX_NAME = 200
DEFAULT_PAGE = 100

_TABLE = """
CREATE TABLE IF NOT EXISTS {t} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    spec BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION
)
"""


@dataclass(frozen=True)
class Endpoint:
    id: str
    name: str
    version: int
    spec: nx.EndpointSpec
    created_at: float
    updated_at: float | None

    @property
    def target(self) -> tuple[str, str]:
        w = self.spec.target.worker
        return w.namespace, w.task_queue

    def to_proto(self) -> nx.Endpoint:
        e = nx.Endpoint(id=self.id, version=self.version, url_prefix=f"/nexus/endpoints/{self.id}/services")
        e.spec.CopyFrom(self.spec)
        e.created_time.FromNanoseconds(int(self.created_at * 1e9))
        if self.updated_at is not None:
            e.last_modified_time.FromNanoseconds(int(self.updated_at * 1e9))
        return e


def _row(r: Any) -> Endpoint:
    return Endpoint(str(r[0]), str(r[1]), int(r[2]), nx.EndpointSpec.FromString(bytes(r[3])), float(r[4]),
                    None if r[5] is None else float(r[5]))


_COLS = "id, name, version, spec, created_at, updated_at"


class _Catalog:
    """One transaction on the catalog's endpoint table (created on first write)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, fn: Any, write: bool) -> Any:
        if self.store.is_sqlite:
            return self._sqlite(fn, write)
        return self.store._retrying(lambda _lost: self._pg(fn, write))

    def _pg(self, fn: Any, write: bool) -> Any:
        table = pg_table(self.store)
        with self.store._pg_connection() as conn:
            try:
                with conn.cursor() as cur:
                    def q(sql: str, params: tuple[Any, ...] = ()) -> Any:
                        cur.execute(sql.replace("{t}", table), params)
                        return cur

                    if write:  # one writer at a time: a name check or a version check, then its write
                        q("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
                    have = q("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
                    if write and not have:
                        q(_TABLE)
                        have = True
                    result = fn(q) if have else fn(None)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return result

    def _sqlite(self, fn: Any, write: bool) -> Any:
        path = namespaces.sqlite_catalog_path(self.store.sqlite_dir)
        if not write and not path.exists():
            return fn(None)
        conn = files.connect(path, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

            def q(sql: str, params: tuple[Any, ...] = ()) -> Any:
                return conn.execute(sql.replace("{t}", "nexus_endpoints").replace("%s", "?")
                                    .replace("BYTEA", "BLOB").replace("DOUBLE PRECISION", "REAL"), params)

            if write:
                q(_TABLE)
                conn.execute(f"PRAGMA application_id = {namespaces.SQLITE_APPLICATION_ID}")
                result = fn(q)
            else:
                try:
                    q("SELECT 1 FROM {t} LIMIT 0")
                except sqlite3.OperationalError:
                    conn.execute("ROLLBACK")
                    return fn(None)
                result = fn(q)
            conn.execute("COMMIT")
            return result
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        finally:
            conn.close()


def pg_table(store: Store) -> str:
    return f'"{namespaces.catalog_schema(store.server)}".nexus_endpoints'


_pg_has_table: set[str] = set()  # stores (by URL) whose catalog has the table: it is never dropped
_pg_lock = threading.Lock()


def lookup_in_tx(tx: Tx, name: str) -> Endpoint | None:
    """The endpoint named ``name``, read in a namespace's open transaction (a workflow task's)."""
    store = tx.store
    if store.is_sqlite:
        found: Endpoint | None = _Catalog(store).run(lambda q: _by_name(q, name), False)
        return found
    table = pg_table(store)
    if store.url not in _pg_has_table:
        if tx.one("SELECT to_regclass(%s)", (table,))[0] is None:
            return None
        with _pg_lock:
            _pg_has_table.add(store.url)
    r = tx.one(f"SELECT {_COLS} FROM {table} WHERE name = %s", (name,))
    return None if r is None else _row(r)


def _by_name(q: Any, name: str) -> Endpoint | None:
    if q is None:
        return None
    r = q(f"SELECT {_COLS} FROM {{t}} WHERE name = %s", (name,)).fetchone()
    return None if r is None else _row(r)


def _by_id(q: Any, eid: str) -> Endpoint | None:
    if q is None:
        return None
    r = q(f"SELECT {_COLS} FROM {{t}} WHERE id = %s", (eid,)).fetchone()
    return None if r is None else _row(r)


def _failed_precondition(message: str) -> ServiceError:
    return ServiceError(FAILED_PRECONDITION, message)


def _not_found(message: str) -> ServiceError:
    return ServiceError.not_found(message, details.NotFoundFailure())


def validate_spec(store: Store, spec: nx.EndpointSpec) -> None:
    """The dev server's checks, in its order and words."""
    problems = []
    if not spec.name:
        problems.append("endpoint name not set")
    elif len(spec.name) > MAX_NAME:
        problems.append(f"endpoint name exceeds length limit of {MAX_NAME}")
    elif not NAME_RE.fullmatch(spec.name):
        problems.append(f'endpoint name must match the regex: "{NAME_RE.pattern.replace(chr(92), chr(92) * 2)}"')
    variant = spec.target.WhichOneof("variant")
    if variant is None:
        problems.append("empty target variant")
    elif variant == "external":
        problems.append("dbosify supports worker targets only (an external URL target is not supported)")
    elif not spec.target.worker.namespace:
        problems.append("invalid target namespace: \"namespace is not set\"")
    elif not spec.target.worker.task_queue:
        problems.append('invalid target task queue: "taskQueue is not set"')
    if problems:
        raise ServiceError.invalid(", ".join(problems))
    target_ns = spec.target.worker.namespace
    try:
        store.require_namespace(target_ns)
    except namespaces.NamespaceNotFound:
        raise _failed_precondition(
            f"could not verify namespace referenced by target exists: Namespace {target_ns} is not found."
        ) from None
    except namespaces.InvalidNamespace as err:
        raise ServiceError.invalid(f"invalid target namespace: {err}") from None


def create(store: Store, spec: nx.EndpointSpec) -> Endpoint:
    validate_spec(store, spec)

    def fn(q: Any) -> Endpoint:
        if _by_name(q, spec.name) is not None:
            raise ServiceError.already_exists(
                f"error creating Nexus endpoint. Endpoint with name {spec.name} already registered"
            )
        e = Endpoint(str(uuid.uuid4()), spec.name, 1, spec, time.time(), None)
        q(f"INSERT INTO {{t}} ({_COLS}) VALUES (%s, %s, %s, %s, %s, %s)",
          (e.id, e.name, e.version, spec.SerializeToString(), e.created_at, None))
        return e

    result: Endpoint = _Catalog(store).run(fn, True)
    return result


def get(store: Store, eid: str) -> Endpoint:
    if not eid:
        raise ServiceError.invalid("endpoint ID not set")
    e = _Catalog(store).run(lambda q: _by_id(q, eid), False)
    if e is None:
        raise _not_found(f"Nexus endpoint with ID `{eid}` not found")
    return e  # type: ignore[no-any-return]


def get_by_name(store: Store, name: str) -> Endpoint | None:
    return _Catalog(store).run(lambda q: _by_name(q, name), False)  # type: ignore[no-any-return]


def update(store: Store, eid: str, version: int, spec: nx.EndpointSpec) -> Endpoint:
    if not eid:
        raise ServiceError.invalid("endpoint ID not set")
    validate_spec(store, spec)

    def fn(q: Any) -> Endpoint:
        old = _by_id(q, eid)
        if old is None:
            raise _not_found(f"error updating Nexus endpoint. endpoint ID {eid} not found")
        if old.version != version:
            raise _failed_precondition(
                f"nexus endpoint version mismatch. received: {version} expected {old.version}"
            )
        other = _by_name(q, spec.name)
        if other is not None and other.id != eid:
            raise ServiceError.already_exists(
                f"error updating Nexus endpoint. Endpoint with name {spec.name} already registered"
            )
        e = Endpoint(eid, spec.name, old.version + 1, spec, old.created_at, time.time())
        q("UPDATE {t} SET name = %s, version = %s, spec = %s, updated_at = %s WHERE id = %s",
          (e.name, e.version, spec.SerializeToString(), e.updated_at, eid))
        return e

    result: Endpoint = _Catalog(store).run(fn, True)
    return result


def delete(store: Store, eid: str) -> None:
    """As on the dev server, the version given is not checked."""
    if not eid:
        raise ServiceError.invalid("endpoint ID not set")

    def fn(q: Any) -> bool:
        return bool(q("DELETE FROM {t} WHERE id = %s", (eid,)).rowcount > 0)

    if not _Catalog(store).run(fn, True):
        raise _not_found(f"error deleting nexus endpoint with ID: {eid}")


def list_page(store: Store, name: str, page_size: int, token: bytes) -> tuple[list[Endpoint], bytes]:
    """Endpoints by id; ``name`` filters to that one name, as on Temporal."""
    size = page_size if page_size > 0 else DEFAULT_PAGE
    after = listing.read_key_token(token)

    def fn(q: Any) -> list[Endpoint]:
        if q is None:
            return []
        if name:
            return [e for e in [_by_name(q, name)] if e is not None]
        rows = q(f"SELECT {_COLS} FROM {{t}} WHERE id > %s ORDER BY id LIMIT %s", (after, size + 1)).fetchall()
        return [_row(r) for r in rows]

    got: list[Endpoint] = _Catalog(store).run(fn, False)
    if not name and len(got) > size:
        return got[:size], got[size - 1].id.encode()
    return got, b""


class NexusEndpointRPCs:
    """The operator service's endpoint RPCs (mixed into `OperatorService`)."""

    store: Store

    async def create_nexus_endpoint(self, req: ops.CreateNexusEndpointRequest) -> Message:
        e = await in_thread(create, self.store, req.spec)
        return ops.CreateNexusEndpointResponse(endpoint=e.to_proto())

    async def get_nexus_endpoint(self, req: ops.GetNexusEndpointRequest) -> Message:
        e = await in_thread(get, self.store, req.id)
        return ops.GetNexusEndpointResponse(endpoint=e.to_proto())

    async def update_nexus_endpoint(self, req: ops.UpdateNexusEndpointRequest) -> Message:
        e = await in_thread(update, self.store, req.id, req.version, req.spec)
        return ops.UpdateNexusEndpointResponse(endpoint=e.to_proto())

    async def delete_nexus_endpoint(self, req: ops.DeleteNexusEndpointRequest) -> Message:
        await in_thread(delete, self.store, req.id)
        return ops.DeleteNexusEndpointResponse()

    async def list_nexus_endpoints(self, req: ops.ListNexusEndpointsRequest) -> Message:
        got, token = await in_thread(list_page, self.store, req.name, req.page_size, req.next_page_token)
        return ops.ListNexusEndpointsResponse(endpoints=[e.to_proto() for e in got], next_page_token=token)


HANDLERS: dict[str, tuple[Any, Any]] = {
    "create_nexus_endpoint": (ops.CreateNexusEndpointRequest, NexusEndpointRPCs.create_nexus_endpoint),
    "get_nexus_endpoint": (ops.GetNexusEndpointRequest, NexusEndpointRPCs.get_nexus_endpoint),
    "update_nexus_endpoint": (ops.UpdateNexusEndpointRequest, NexusEndpointRPCs.update_nexus_endpoint),
    "delete_nexus_endpoint": (ops.DeleteNexusEndpointRequest, NexusEndpointRPCs.delete_nexus_endpoint),
    "list_nexus_endpoints": (ops.ListNexusEndpointsRequest, NexusEndpointRPCs.list_nexus_endpoints),
}
