"""Search attributes and memo of runs: the registry, validation, and the indexed rows.

A namespace's custom search attributes and their types live in ``search_attribute_types`` (the
operator service's registry; the dev server's defaults are there from the start). A run's current
search attributes are kept whole in ``executions.search_attributes`` (what describe and list
return) and, for filtering, as one row per value in ``search_attributes`` (see
`visibility_sql` for how filters read them). Both change in the transaction that starts the run
or records its upsert, so a list sees an upsert as soon as its workflow task has committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import common_pb2 as enums

from dbosify._engine.errors import ServiceError
from dbosify._store import Tx

TEXT = enums.INDEXED_VALUE_TYPE_TEXT
KEYWORD = enums.INDEXED_VALUE_TYPE_KEYWORD
INT = enums.INDEXED_VALUE_TYPE_INT
DOUBLE = enums.INDEXED_VALUE_TYPE_DOUBLE
BOOL = enums.INDEXED_VALUE_TYPE_BOOL
DATETIME = enums.INDEXED_VALUE_TYPE_DATETIME
KEYWORD_LIST = enums.INDEXED_VALUE_TYPE_KEYWORD_LIST

# The names temporalio puts in a payload's "type" metadata.
TYPE_NAMES: Mapping[int, str] = {
    TEXT: "Text", KEYWORD: "Keyword", INT: "Int", DOUBLE: "Double", BOOL: "Bool",
    DATETIME: "Datetime", KEYWORD_LIST: "KeywordList",
}

# Attributes the server or the SDK sets on a run, which a workflow may upsert without registering.
SERVER_SET: Mapping[str, int] = {
    "TemporalChangeVersion": KEYWORD_LIST,
    "BinaryChecksums": KEYWORD_LIST,
    "BuildIds": KEYWORD_LIST,
    "TemporalScheduledById": KEYWORD,
    "TemporalScheduledStartTime": DATETIME,
    "TemporalPauseInfo": KEYWORD_LIST,
}

_MAX_NAME = 255  # Temporal's limit on a search attribute name's length


def registry(tx: Tx) -> dict[str, int]:
    """The namespace's custom search attributes: name -> IndexedValueType."""
    return {str(n): int(t) for n, t in tx.all("SELECT name, value_type FROM search_attribute_types")}


def writable(tx: Tx) -> dict[str, int]:
    """What a start or an upsert may set: the custom attributes and the server-set ones."""
    return {**SERVER_SET, **registry(tx)}


def add(tx: Tx, attrs: Mapping[str, int], system: Iterable[str]) -> None:
    """Register custom attributes (the operator service's add_search_attributes)."""
    known = registry(tx)
    reserved = set(system) | set(SERVER_SET)
    for name, value_type in attrs.items():
        if not name or len(name) > _MAX_NAME:
            raise ServiceError.invalid(f"Search attribute name {name!r} is not valid.")
        if name in reserved:
            raise ServiceError.invalid(f"Search attribute {name} is reserved by system.")
        if value_type not in TYPE_NAMES:
            raise ServiceError.invalid(f"Unable to read search attribute type: {value_type}.")
        if name in known:
            if known[name] != value_type:
                raise ServiceError.already_exists(
                    f"Search attribute {name} already exists with type {TYPE_NAMES[known[name]]}."
                )
            continue  # adding what exists is a no-op, as on Temporal
        tx.execute(
            "INSERT INTO search_attribute_types (name, value_type) VALUES (%s, %s)", (name, value_type)
        )


def remove(tx: Tx, names: Iterable[str]) -> None:
    """Unregister custom attributes (values already stored stay, as on Temporal, unqueryable)."""
    known = registry(tx)
    for name in names:
        if name not in known:
            raise ServiceError.not_found(f"Search attribute {name} doesn't exist.")
        tx.execute("DELETE FROM search_attribute_types WHERE name = %s", (name,))


def _decoded(payload: common.Payload) -> Any:
    if payload.metadata.get("encoding") == b"binary/null":
        return None
    try:
        return json.loads(payload.data) if payload.data else None
    except ValueError:
        raise ServiceError.invalid("search attribute value is not valid JSON") from None


def _values(name: str, value_type: int, payload: common.Payload) -> list[Any] | None:
    """The values of one attribute's payload, checked against its type; None means unset."""
    raw = _decoded(payload)
    if raw is None or raw == []:
        return None
    items = raw if isinstance(raw, list) else [raw]
    out: list[Any] = []
    for v in items:
        ok = (
            (value_type in (TEXT, KEYWORD, KEYWORD_LIST) and isinstance(v, str))
            or (value_type == INT and isinstance(v, int) and not isinstance(v, bool))
            or (value_type == DOUBLE and isinstance(v, (int, float)) and not isinstance(v, bool))
            or (value_type == BOOL and isinstance(v, bool))
            or (value_type == DATETIME and isinstance(v, str) and _timestamp(v) is not None)
        )
        if not ok:
            raise ServiceError.invalid(
                f"invalid value for search attribute {name} of type {TYPE_NAMES[value_type]}: {v!r}"
            )
        out.append(v)
    return out


def _timestamp(text: str) -> float | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def _index_rows(name: str, value_type: int, values: list[Any]) -> list[tuple[str, Any, Any, Any]]:
    """The ``search_attributes`` rows of one attribute: (name, v_text, v_int, v_num)."""
    from dbosify._engine.visibility_sql import text_tokens

    rows: list[tuple[str, Any, Any, Any]] = []
    for v in values:
        if value_type == TEXT:
            rows.extend((name, t, None, None) for t in dict.fromkeys(text_tokens(v)))
        elif value_type in (KEYWORD, KEYWORD_LIST):
            rows.append((name, v, None, None))
        elif value_type in (INT, BOOL):
            rows.append((name, None, int(v), None))
        elif value_type == DOUBLE:
            rows.append((name, None, None, float(v)))
        else:
            rows.append((name, None, None, _timestamp(v)))
    return rows


def _checked(
    namespace: str, attrs: common.SearchAttributes, types: Mapping[str, int]
) -> dict[str, list[Any] | None]:
    """Each attribute's values (None: unset); each payload gets its "type" metadata, as the
    server adds it to what it records, so that workflows and clients decode values by type."""
    out: dict[str, list[Any] | None] = {}
    for name, payload in attrs.indexed_fields.items():
        value_type = types.get(name)
        if value_type is None:
            raise ServiceError.invalid(
                f"Namespace {namespace} has no mapping defined for search attribute {name}"
            )
        out[name] = _values(name, value_type, payload)
        if out[name] is not None:
            payload.metadata["type"] = TYPE_NAMES[value_type].encode()
    return out


def check(tx: Tx, attrs: common.SearchAttributes) -> None:
    """Refuse, as Temporal does, attributes that are not registered or not of their type."""
    if attrs.indexed_fields:
        _checked(tx.namespace, attrs, writable(tx))


def typed(attrs: common.SearchAttributes, types: Mapping[str, int]) -> common.SearchAttributes:
    """The attributes as the server returns them: each payload names its type."""
    out = common.SearchAttributes()
    for name, payload in attrs.indexed_fields.items():
        p = out.indexed_fields[name]
        p.CopyFrom(payload)
        value_type = types.get(name)
        if value_type is not None:
            p.metadata["type"] = TYPE_NAMES[value_type].encode()
    return out


def _write(tx: Tx, run_id: str, values: Mapping[str, list[Any] | None], types: Mapping[str, int]) -> None:
    names = list(values)
    if not names:
        return
    marks = ", ".join(["%s"] * len(names))
    tx.execute(f"DELETE FROM search_attributes WHERE run_id = %s AND name IN ({marks})", (run_id, *names))
    rows = [
        (run_id, *row)
        for name, vals in values.items()
        if vals is not None
        for row in _index_rows(name, types[name], vals)
    ]
    if rows:
        tx.executemany(
            "INSERT INTO search_attributes (run_id, name, v_text, v_int, v_num) VALUES (%s, %s, %s, %s, %s)",
            rows,
        )


def on_start(tx: Tx, run_id: str, attrs: common.SearchAttributes) -> bytes | None:
    """Index a new run's attributes (typing their payloads in place, before the started event
    records them); returns what to keep in ``executions.search_attributes``."""
    if not attrs.indexed_fields:
        return None
    types = writable(tx)
    values = _checked(tx.namespace, attrs, types)
    kept = common.SearchAttributes()
    for name, vals in values.items():
        if vals is not None:
            kept.indexed_fields[name].CopyFrom(attrs.indexed_fields[name])
    _write(tx, run_id, values, types)
    return kept.SerializeToString() if kept.indexed_fields else None


def on_upsert(tx: Tx, run_id: str, upsert: common.SearchAttributes) -> None:
    """Merge a workflow's upsert into its run's attributes (an unset value removes one); its
    payloads are typed in place, before the upsert event records them."""
    if not upsert.indexed_fields:
        return
    types = writable(tx)
    values = _checked(tx.namespace, upsert, types)
    row = tx.one("SELECT search_attributes FROM executions WHERE run_id = %s", (run_id,))
    current = common.SearchAttributes()
    if row is not None and row[0] is not None:
        current.ParseFromString(bytes(row[0]))
    for name, vals in values.items():
        if vals is None:
            current.indexed_fields.pop(name, None)
        else:
            current.indexed_fields[name].CopyFrom(upsert.indexed_fields[name])
    tx.execute(
        "UPDATE executions SET search_attributes = %s WHERE run_id = %s",
        (current.SerializeToString() if current.indexed_fields else None, run_id),
    )
    _write(tx, run_id, values, types)


def current(tx: Tx, run_id: str) -> tuple[common.SearchAttributes, common.Memo]:
    """A run's attributes (typed, as returned to clients) and memo, as of now."""
    row = tx.one("SELECT search_attributes, memo FROM executions WHERE run_id = %s", (run_id,))
    attrs, memo = common.SearchAttributes(), common.Memo()
    if row is not None:
        if row[0] is not None:
            attrs.ParseFromString(bytes(row[0]))
        if row[1] is not None:
            memo.ParseFromString(bytes(row[1]))
    return (typed(attrs, writable(tx)) if attrs.indexed_fields else attrs), memo


def memo_on_start(memo: common.Memo) -> bytes | None:
    return memo.SerializeToString() if memo.fields else None


def on_upsert_memo(tx: Tx, run_id: str, upsert: common.Memo) -> None:
    """Merge a workflow's memo upsert (a null value removes its key, as on Temporal)."""
    if not upsert.fields:
        return
    row = tx.one("SELECT memo FROM executions WHERE run_id = %s", (run_id,))
    memo = common.Memo()
    if row is not None and row[0] is not None:
        memo.ParseFromString(bytes(row[0]))
    for key, payload in upsert.fields.items():
        if payload.metadata.get("encoding") == b"binary/null":
            memo.fields.pop(key, None)
        else:
            memo.fields[key].CopyFrom(payload)
    tx.execute(
        "UPDATE executions SET memo = %s WHERE run_id = %s",
        (memo.SerializeToString() if memo.fields else None, run_id),
    )
