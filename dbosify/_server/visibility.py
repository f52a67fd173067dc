"""Visibility RPCs: list, scan and count runs with Temporal's filter language, and run summaries.

Filters are parsed and translated to parameterised SQL by `visibility_sql`; this module runs
them and shapes the answers (`WorkflowExecutionInfo`) that list and describe return. Listing is
newest first by default and paged with an opaque token: a keyset position (start time, run id)
for the default order, an offset for an explicit ORDER BY.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.workflow.v1 import message_pb2 as wf
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import listing
from dbosify._engine import search_attributes as sa
from dbosify._engine.visibility_sql import Translated, translate
from dbosify._store import Store, Tx

_COLUMNS = (
    "e.run_id, e.workflow_id, e.workflow_type, e.task_queue, e.status, e.start_time, e.close_time,"
    " e.execution_time, e.next_event_id, e.history_size_bytes, e.parent_workflow_id,"
    " e.parent_run_id, e.root_workflow_id, e.root_run_id, e.first_execution_run_id, e.memo,"
    " e.search_attributes"
)
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


async def list_executions(store: Store, req: Any) -> Message:
    """ListWorkflowExecutions and ScanWorkflowExecutions (same request shape)."""
    size = req.page_size if req.page_size > 0 else listing.DEFAULT_PAGE
    after = listing.read_token(req.next_page_token)

    def fn(tx: Tx) -> tuple[list[Any], dict[str, int], bool]:
        q = _translate(tx, req.query)
        return listing.page(tx, "executions", _COLUMNS, q, size, after), sa.writable(tx), bool(q.order_by)

    rows, types, ordered = await store.transact(req.namespace, fn)
    resp = (
        rr.ScanWorkflowExecutionsResponse()
        if isinstance(req, rr.ScanWorkflowExecutionsRequest)
        else rr.ListWorkflowExecutionsResponse()
    )
    for row in rows:
        resp.executions.add().CopyFrom(_info(row, types))
    if rows:
        resp.next_page_token = listing.next_token(len(rows), size, ordered, after, rows[-1][5], rows[-1][0])
    return resp


async def count_executions(store: Store, req: rr.CountWorkflowExecutionsRequest) -> Message:
    result = await store.transact(req.namespace, lambda tx: listing.count(tx, "executions", _translate(tx, req.query)))
    return listing.fill_count(rr.CountWorkflowExecutionsResponse(), result, STATUS_NAMES)
