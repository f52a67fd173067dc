"""The storage layer: where the data goes, each namespace's tables, transactions and wake-ups.

- `urls`: resolving a connect target to a database URL, and reading it;
- `namespaces`: the catalog that maps each namespace name to its own tables;
- `migrations`: the versioned schema of those tables;
- `store`: connections, transactions (transient errors retried) and cross-process wake-ups;
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
