"""What the DBOS tests share: DBOS's own client on a test client's store and namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from dbos import DBOSClient
from temporalio.client import Client

from dbosify._store import get_store


def dbos_url(client: Client) -> tuple[str, str | None]:
    """DBOS's system database URL and schema for the client's store and namespace."""
    store = get_store(client.service_client.config.target_host)
    if store.is_sqlite:
        return f"sqlite:///{store.sqlite_path(client.namespace)}", None
    return store.url, store.dbos_schema


@pytest.fixture
async def dbos(client: Client) -> AsyncIterator[DBOSClient]:
    """A `DBOSClient` on the test client's store and namespace (import it into a test module)."""
    url, schema = dbos_url(client)
    kwargs: dict[str, Any] = {"system_database_url": url}
    if schema is not None:
        kwargs["dbos_system_schema"] = schema
    c = DBOSClient(**kwargs)
    yield c
    c.destroy()
