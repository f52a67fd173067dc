"""Listing and counting by a translated filter: what workflow and activity visibility share.

A list is newest first and paged with an opaque token: a keyset position (start time, run id)
for the default order, an offset for an explicit ORDER BY. A count may be grouped by status.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from dbosify._engine.errors import ServiceError
from dbosify._engine.visibility_sql import Translated
from dbosify._store import Tx

DEFAULT_PAGE = 1000


MAX_OFFSET = 2**62  # past any table; keeps OFFSET inside a 64-bit integer on both stores
MAX_TOKEN_BYTES = 4096


def _bad_token() -> ServiceError:
    return ServiceError.invalid("invalid next page token")


def read_token(token: bytes) -> dict[str, Any] | None:
    """The position a list page token names, checked strictly: a token that is not one this
    module made (forged, truncated, from another RPC) is INVALID_ARGUMENT, whatever it holds.

    Two shapes: ``{"o": offset}`` (an explicit ORDER BY) and ``{"s": start time, "r": run id}``
    (the default order's keyset position).
    """
    if not token:
        return None
    if len(token) > MAX_TOKEN_BYTES:
        raise _bad_token()
    try:
        data = json.loads(base64.urlsafe_b64decode(token).decode("utf-8"))
    except (ValueError, TypeError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise _bad_token() from None
    if not isinstance(data, dict):
        raise _bad_token()
    if set(data) == {"o"}:
        o = data["o"]
        if type(o) is int and 0 <= o <= MAX_OFFSET:
            return data
    elif set(data) == {"s", "r"}:
        start, run = data["s"], data["r"]
        if (
            type(start) in (int, float)
            and math.isfinite(start)
            and abs(start) < 1e13
            and isinstance(run, str)
            and 0 < len(run) <= 256
            and "\x00" not in run
        ):
            return {"s": float(start), "r": run}
    raise _bad_token()


def read_int_token(token: bytes) -> int:
    """A page token that is a decimal event id (GetWorkflowExecutionHistory); 0 when empty."""
    if not token:
        return 0
    if len(token) > 19 or not token.isdigit():  # ASCII digits only, below 2**63
        raise _bad_token()
    return int(token)


def read_key_token(token: bytes) -> str:
    """A page token that is the last key listed (ListSchedules); "" when empty."""
    if not token:
        return ""
    try:
        key = token.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_token() from None
    if len(token) > MAX_TOKEN_BYTES or "\x00" in key:
        raise _bad_token()
    return key


def page(tx: Tx, table: str, columns: str, q: Translated, size: int, after: dict[str, Any] | None) -> list[Any]:
    """One page of ``table`` (aliased ``e``, with start_time and run_id columns) matching ``q``."""
    if q.group_by_status:
        raise ServiceError.invalid("invalid query: GROUP BY is only supported by count")
    where, params = q.where, list(q.params)
    if after is not None and ("o" in after) != bool(q.order_by):
        raise ServiceError.invalid("invalid next page token: it was made for another query")
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
