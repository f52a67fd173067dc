"""Listing and counting by a translated filter: what workflow and activity visibility share.

A list is newest first and paged with an opaque token: a keyset position (start time, run id)
for the default order, an offset for an explicit ORDER BY. A count may be grouped by status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from dbosify._errors import ServiceError
from dbosify._server.visibility_sql import Translated
from dbosify._store import Tx

DEFAULT_PAGE = 1000


def read_token(token: bytes) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token))
        if isinstance(data, dict):
            return data
    except ValueError:
        pass
    raise ServiceError.invalid("invalid next page token")


def page(tx: Tx, table: str, columns: str, q: Translated, size: int, after: dict[str, Any] | None) -> list[Any]:
    """One page of ``table`` (aliased ``e``, with start_time and run_id columns) matching ``q``."""
    if q.group_by_status:
        raise ServiceError.invalid("invalid query: GROUP BY is only supported by count")
    where, params = q.where, list(q.params)
    if q.order_by:
        offset = int(after.get("o", 0)) if after else 0
        return tx.all(
            f"SELECT {columns} FROM {table} e WHERE {where} ORDER BY {q.order_by}, e.run_id"
            " LIMIT %s OFFSET %s",
            (*params, size, offset),
        )
    if after is not None:
        where = f"({where}) AND (e.start_time < %s OR (e.start_time = %s AND e.run_id < %s))"
        params += [after["s"], after["s"], after["r"]]
    return tx.all(
        f"SELECT {columns} FROM {table} e WHERE {where} ORDER BY e.start_time DESC, e.run_id DESC LIMIT %s",
        (*params, size),
    )


def next_token(
    got: int, size: int, ordered: bool, after: dict[str, Any] | None, last_start: float, last_run: str
) -> bytes:
    """The token for the page after one of ``got`` rows (empty when it was the last)."""
    if got < size:
        return b""
    data: dict[str, Any] = (
        {"o": (int(after.get("o", 0)) if after else 0) + size} if ordered else {"s": last_start, "r": last_run}
    )
    return base64.urlsafe_b64encode(json.dumps(data).encode())


def count(tx: Tx, table: str, q: Translated) -> int | list[tuple[int, int]]:
    """How many rows match; by status (ascending) for GROUP BY ExecutionStatus."""
    if not q.group_by_status:
        return int(tx.one(f"SELECT count(*) FROM {table} e WHERE {q.where}", q.params)[0])
    rows = tx.all(
        f"SELECT e.status, count(*) FROM {table} e WHERE {q.where} GROUP BY e.status ORDER BY e.status",
        q.params,
    )
    return [(int(s), int(n)) for s, n in rows]


def fill_count(resp: Message, result: int | list[tuple[int, int]], names: Mapping[int, str]) -> Message:
    """A Count*ExecutionsResponse: the total, and each status group named as Temporal names it."""
    out: Any = resp
    if isinstance(result, int):
        out.count = result
        return resp
    out.count = sum(n for _, n in result)
    for status, n in result:
        out.groups.add(count=n).group_values.add(
            metadata={"encoding": b"json/plain", "type": b"Keyword"},
            data=json.dumps(names.get(status, "Unspecified")).encode(),
        )
    return resp
