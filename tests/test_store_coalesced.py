"""Coalesced transactions (`Store.transact_sync(..., coalesced=True)`): deferred statements go
out with the next statement or the COMMIT, and the transaction stays all or nothing."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from dbosify._store.store import Store, Tx


def _store(db_url: str) -> tuple[Store, str]:
    store = Store(db_url)
    ns = f"co{uuid.uuid4().hex[:10]}"
    store.register_namespace(ns)
    return store, ns


def _count(store: Store, ns: str, marker: str) -> int:
    return int(store.transact_sync(
        ns, lambda tx: tx.one("SELECT count(*) FROM notices_probe WHERE v = %s", (marker,))[0]
    ))


def _create(tx: Tx) -> None:
    tx.execute("CREATE TABLE IF NOT EXISTS notices_probe (v text PRIMARY KEY, b bytea)")


async def test_deferred_statements_commit_with_their_transaction(db_url: str) -> None:
    store, ns = _store(db_url)
    try:
        store.transact_sync(ns, _create)
        marker = "a'b %s \\ " + uuid.uuid4().hex  # quoting and placeholders in rendered values

        def write(tx: Tx) -> tuple[str, int]:
            tx.defer("INSERT INTO notices_probe (v, b) VALUES (%s, %s)", (marker, b"\x00\xff'"))
            # The deferred insert went out with this statement, in the same transaction.
            (seen,) = tx.one("SELECT v FROM notices_probe WHERE v = %s", (marker,))
            tx.defer("UPDATE notices_probe SET b = %s WHERE v = %s", (b"\x01", marker))
            tx.execute("UPDATE notices_probe SET v = v WHERE v = %s", (marker,))
            return seen, tx.rowcount

        assert store.transact_sync(ns, write, coalesced=True) == (marker, 1)
        row = store.transact_sync(ns, lambda tx: tx.one(
            "SELECT b FROM notices_probe WHERE v = %s", (marker,)
        ))
        assert bytes(row[0]) == b"\x01"
        # Deferred until the COMMIT: still one transaction.
        other = marker + "-2"
        store.transact_sync(
            ns, lambda tx: tx.defer("INSERT INTO notices_probe (v) VALUES (%s)", (other,)),
            coalesced=True,
        )
        assert _count(store, ns, other) == 1
    finally:
        store.drop_namespace(ns)
        store.close()


async def test_a_deferred_statement_that_fails_rolls_the_transaction_back(db_url: str) -> None:
    store, ns = _store(db_url)
    try:
        store.transact_sync(ns, _create)
        marker = uuid.uuid4().hex
        store.transact_sync(ns, lambda tx: tx.execute("INSERT INTO notices_probe (v) VALUES (%s)", (marker,)))
        fresh = marker + "-new"

        def clash(tx: Tx) -> None:
            tx.execute("INSERT INTO notices_probe (v) VALUES (%s)", (fresh,))
            tx.defer("INSERT INTO notices_probe (v) VALUES (%s)", (marker,))  # a duplicate key

        with pytest.raises(Exception) as err:
            store.transact_sync(ns, clash, coalesced=True)
        if not store.is_sqlite:
            assert isinstance(err.value, psycopg.errors.UniqueViolation)
        assert _count(store, ns, fresh) == 0
        # The store goes on working after the failure.
        store.transact_sync(ns, lambda tx: tx.defer("INSERT INTO notices_probe (v) VALUES (%s)", (fresh,)), coalesced=True)
        assert _count(store, ns, fresh) == 1
    finally:
        store.drop_namespace(ns)
        store.close()
