"""Server-side prepared statements on the store's Postgres sessions: the hot statements of a
workflow task are parsed and planned once per session, not on every run; a schema change that
outdates one is retried; ``DBOSIFY_PG_PREPARE=0`` turns them off (for poolers that drop them)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from dbosify._store.store import Store, Tx

HOT = "SELECT count(*) FROM prep_probe WHERE v = %s"


def _session_prepared(tx: Tx) -> list[str]:
    rows = tx.all("SELECT statement FROM pg_prepared_statements")
    return [str(r[0]) for r in rows]


def _run(store: Store, ns: str, times: int) -> list[str]:
    """Run the hot statement ``times`` times on one pooled session, then list what it prepared."""
    def work(tx: Tx) -> list[str]:
        for _ in range(times):
            tx.one(HOT, ("x",))
        return _session_prepared(tx)

    return store.transact_sync(ns, work)


@pytest.fixture
def pg_store(_pg_session_url: str) -> Store:
    return Store(_pg_session_url)


def _namespace(store: Store) -> str:
    ns = f"pp{uuid.uuid4().hex[:10]}"
    store.register_namespace(ns)
    store.transact_sync(ns, lambda tx: tx.execute("CREATE TABLE prep_probe (v text, n int)"))
    return ns


def test_hot_statements_are_prepared_on_the_server(pg_store: Store) -> None:
    ns = _namespace(pg_store)
    try:
        prepared = _run(pg_store, ns, 3)
        assert any("prep_probe" in s for s in prepared), prepared
    finally:
        pg_store.drop_namespace(ns)
        pg_store.close()


def test_preparing_can_be_turned_off(pg_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOSIFY_PG_PREPARE", "0")
    ns = _namespace(pg_store)
    try:
        assert not any("prep_probe" in s for s in _run(pg_store, ns, 5))
    finally:
        pg_store.drop_namespace(ns)
        pg_store.close()


def test_a_statement_outdated_by_a_schema_change_is_retried(
    pg_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade migrates the tables while a worker's sessions hold prepared statements:
    Postgres refuses a prepared statement whose result columns changed; the store retries it on
    another session instead of failing the workflow task."""
    ns = _namespace(pg_store)
    star = "SELECT * FROM prep_probe WHERE v = %s"
    try:
        pg_store.transact_sync(ns, lambda tx: [tx.all(star, ("x",)) for _ in range(3)])
        with psycopg.connect(pg_store.pg_connect_args()["conninfo"], autocommit=True) as other:
            other.execute(f'ALTER TABLE "{pg_store.ident(ns)}".prep_probe ADD COLUMN extra int')
        rows = pg_store.transact_sync(ns, lambda tx: tx.all(star, ("x",)))
        assert rows == []
        # Postgres did refuse the outdated statement, and the store retried it.
        assert any("cached plan must not change result type" in r.getMessage() for r in caplog.records)
    finally:
        pg_store.drop_namespace(ns)
        pg_store.close()
