"""Visibility RPCs: list, scan and count runs with Temporal's filter language, and run summaries.

Filters are parsed and translated to parameterised SQL by `visibility_sql`; this module runs
them and shapes the answers (`WorkflowExecutionInfo`) that list and describe return. Listing is
newest first by default and paged with an opaque token: a keyset position (start time, run id)
for the default order, an offset for an explicit ORDER BY.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.workflow.v1 import message_pb2 as wf
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._errors import ServiceError
from dbosify._server import search_attributes as sa
from dbosify._server.visibility_sql import Translated, translate
from dbosify._store import Store, Tx

_COLUMNS = (
    "e.run_id, e.workflow_id, e.workflow_type, e.task_queue, e.status, e.start_time, e.close_time,"
    " e.execution_time, e.next_event_id, e.history_size_bytes, e.parent_workflow_id,"
    " e.parent_run_id, e.root_workflow_id, e.root_run_id, e.first_execution_run_id, e.memo,"
    " e.search_attributes"
)
_DEFAULT_PAGE = 1000
STATUS_NAMES = {
    1: "Running", 2: "Completed", 3: "Failed", 4: "Canceled", 5: "Terminated",
    6: "ContinuedAsNew", 7: "TimedOut",
}


def _ts(field: Any, seconds: float) -> None:
    field.FromNanoseconds(int(round(seconds * 1e9)))


def _info(row: Any, types: dict[str, int]) -> wf.WorkflowExecutionInfo:
    (run_id, wid, wtype, tq, status, start, close, exec_time, next_id, size, p_wid, p_rid,
     root_wid, root_rid, first_rid, memo, attrs) = row
    info = wf.WorkflowExecutionInfo(task_queue=tq, status=status, history_length=next_id - 1)
    info.execution.workflow_id = wid
    info.execution.run_id = run_id
    info.type.name = wtype
    _ts(info.start_time, start)
    execution_time = exec_time if exec_time is not None else start
    _ts(info.execution_time, execution_time)
    if close is not None:
        _ts(info.close_time, close)
        info.execution_duration.FromNanoseconds(max(0, int((close - execution_time) * 1e9)))
    info.history_size_bytes = int(size or 0)
    if p_rid:
        info.parent_execution.workflow_id = p_wid or ""
        info.parent_execution.run_id = p_rid
    info.root_execution.workflow_id = root_wid or wid
    info.root_execution.run_id = root_rid or run_id
    info.first_run_id = first_rid
    if memo is not None:
        info.memo.ParseFromString(bytes(memo))
    if attrs is not None:
        raw = common.SearchAttributes.FromString(bytes(attrs))
        info.search_attributes.CopyFrom(sa.typed(raw, types))
    return info


def run_info(tx: Tx, run_id: str) -> wf.WorkflowExecutionInfo:
    """One run's summary as describe returns it."""
    row = tx.one(f"SELECT {_COLUMNS} FROM executions e WHERE e.run_id = %s", (run_id,))
    return _info(row, sa.writable(tx))


def _translate(tx: Tx, query: str) -> Translated:
    return translate(query, sa.registry(tx), sqlite=tx.store.is_sqlite)


def _token(data: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(data).encode())


def _untoken(token: bytes) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token))
        if isinstance(data, dict):
            return data
    except ValueError:
        pass
    raise ServiceError.invalid("invalid next page token")


async def list_executions(store: Store, req: Any) -> Message:
    """ListWorkflowExecutions and ScanWorkflowExecutions (same request shape)."""
    page = req.page_size if req.page_size > 0 else _DEFAULT_PAGE
    after = _untoken(req.next_page_token) if req.next_page_token else None

    def fn(tx: Tx) -> tuple[list[Any], dict[str, int], bool]:
        q = _translate(tx, req.query)
        if q.group_by_status:
            raise ServiceError.invalid("invalid query: GROUP BY is only supported by count")
        where, params = q.where, list(q.params)
        if q.order_by:
            offset = int(after.get("o", 0)) if after else 0
            sql = f"SELECT {_COLUMNS} FROM executions e WHERE {where} ORDER BY {q.order_by}, e.run_id"
            rows = tx.all(sql + " LIMIT %s OFFSET %s", (*params, page, offset))
        else:
            if after is not None:
                where = f"({where}) AND (e.start_time < %s OR (e.start_time = %s AND e.run_id < %s))"
                params += [after["s"], after["s"], after["r"]]
            rows = tx.all(
                f"SELECT {_COLUMNS} FROM executions e WHERE {where}"
                " ORDER BY e.start_time DESC, e.run_id DESC LIMIT %s",
                (*params, page),
            )
        return rows, sa.writable(tx), bool(q.order_by)

    rows, types, ordered = await store.transact(req.namespace, fn)
    resp = (
        rr.ScanWorkflowExecutionsResponse()
        if isinstance(req, rr.ScanWorkflowExecutionsRequest)
        else rr.ListWorkflowExecutionsResponse()
    )
    for row in rows:
        resp.executions.add().CopyFrom(_info(row, types))
    if len(rows) == page:
        if ordered:
            resp.next_page_token = _token({"o": (int(after.get("o", 0)) if after else 0) + page})
        else:
            resp.next_page_token = _token({"s": rows[-1][5], "r": rows[-1][0]})
    return resp


async def count_executions(store: Store, req: rr.CountWorkflowExecutionsRequest) -> Message:
    def fn(tx: Tx) -> Any:
        q = _translate(tx, req.query)
        if not q.group_by_status:
            return tx.one(f"SELECT count(*) FROM executions e WHERE {q.where}", q.params)
        return tx.all(
            f"SELECT e.status, count(*) FROM executions e WHERE {q.where}"
            " GROUP BY e.status ORDER BY e.status",
            q.params,
        )

    result = await store.transact(req.namespace, fn)
    if not isinstance(result, list):
        return rr.CountWorkflowExecutionsResponse(count=int(result[0]))
    resp = rr.CountWorkflowExecutionsResponse(count=sum(int(r[1]) for r in result))
    for status, n in result:
        group = resp.groups.add(count=int(n))
        name = STATUS_NAMES.get(int(status), "Unspecified")
        group.group_values.add(metadata={"encoding": b"json/plain", "type": b"Keyword"},
                               data=json.dumps(name).encode())
    return resp
