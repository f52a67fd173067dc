"""The storage layer: where the data goes, each namespace's tables, transactions and wake-ups.

- `urls`: resolving a connect target to a database URL, and reading it;
- `namespaces`: the catalog that maps each namespace name to its own tables;
- `migrations`: the versioned schema of those tables;
- `store`: the `Store` of one database URL and its transactions (`Tx`), built on `catalog` (each
  namespace's tables), `retrying` (transient errors), `pg` and `sqlite` (the two backends), with
  `lanes` (threads and connections per kind of work) and `delivery` (cross-process wake-ups);
- `limits`: each namespace's limits (the values; checked in `_server` and `_engine`);
- `dbos_setup`, `dbos_ids`, `dbos_requote`, `dbos_inbound_triggers`: DBOS's system tables and
  triggers beside a namespace's tables, and the DBOS IDs of runs;
- `wakeups`: the in-process hub that wakes waiters on commit;
- `threads`: blocking work handed to threads and back, on any asyncio-compatible loop.
"""

from dbosify._store.errors import StoreError
from dbosify._store.store import ENV_NAMESPACES, Store, Tx, forget_store, get_store
from dbosify._store.urls import ENV_DATABASE_URL, ENV_HOME, SERVER_PARAM, mask_url, resolve_url

__all__ = [
    "ENV_DATABASE_URL",
    "ENV_HOME",
    "ENV_NAMESPACES",
    "SERVER_PARAM",
    "Store",
    "StoreError",
    "Tx",
    "forget_store",
    "get_store",
    "mask_url",
    "resolve_url",
]
