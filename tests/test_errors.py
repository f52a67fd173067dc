"""Every failure a client sees is a Temporal status with one line, on Postgres and on SQLite.

- The store classifies driver errors: a value the database refuses (a number out of range, more
  parameters than the driver can send, ...) is `InvalidData`, raised at once; only a lost
  connection is retried as one (it used to retry such a statement for 15 s as a lost connection).
- Through the client, that is INVALID_ARGUMENT: a search attribute value out of the Int range.
- Page tokens are checked strictly: forged ones (``{"o": -1}``, ``{"x": 1}``, out of range,
  wrong types, garbage bytes) are INVALID_ARGUMENT on every paged RPC.
- The list filter refuses NUL (raw or ``\\0``), numbers past a float64, and more than
  `MAX_QUERY_VALUES` values (70,000 in an IN list used to be retried for 17 s, then UNAVAILABLE).
- An exception nothing expected is INTERNAL with one line, its traceback on the `dbosify` logger.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload, SearchAttributes, WorkflowExecution, WorkflowType
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from dbosify._engine.visibility_sql import MAX_QUERY_VALUES
from dbosify._store import Tx, get_store, resolve_url
from dbosify._store.errors import InvalidData


def _token(data: Any) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(data).encode())


async def _invalid(coro: Any, fragment: str = "") -> str:
    """Await ``coro``; it must fail with INVALID_ARGUMENT and one line (containing ``fragment``)."""
    with pytest.raises(RPCError) as info:
        await coro
    assert info.value.status == RPCStatusCode.INVALID_ARGUMENT, info.value
    assert "\n" not in info.value.message
    assert fragment in info.value.message
    return info.value.message


# -- the store's classification ------------------------------------------------------------


def test_store_raises_invalid_data_for_a_number_out_of_range(client: Client, db_url: str) -> None:
    store = get_store(resolve_url(db_url))

    def fn(tx: Tx) -> None:  # Postgres: bigint out of range; SQLite: int past 64 bits
        tx.execute("UPDATE executions SET next_event_id = %s WHERE run_id = %s", (10**30, "none"))

    with pytest.raises(InvalidData):
        store.transact_sync(client.namespace, fn)


def test_too_many_parameters_is_invalid_data_at_once_not_a_lost_connection(
    client: Client, db_url: str
) -> None:
    store = get_store(resolve_url(db_url))
    if store.is_sqlite:
        import sqlite3

        probe = sqlite3.connect(":memory:")
        n = probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) + 1
        probe.close()
    else:
        n = 70_000  # libpq sends at most 65,535; it refused before sending, the session is fine
    marks = ", ".join(["%s"] * n)

    def fn(tx: Tx) -> Any:
        return tx.all(f"SELECT run_id FROM executions WHERE workflow_id IN ({marks})", [f"w{i}" for i in range(n)])

    started = time.monotonic()
    with pytest.raises(InvalidData):
        store.transact_sync(client.namespace, fn)
    assert time.monotonic() - started < 5  # not retried as a lost connection
    assert store.transact_sync(client.namespace, lambda tx: tx.one("SELECT 1")[0]) == 1


async def test_int_search_attribute_out_of_range_is_invalid_argument(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={"Big": IndexedValueType.INDEXED_VALUE_TYPE_INT},
        )
    )
    huge = Payload(metadata={"encoding": b"json/plain", "type": b"Int"}, data=b"1" + b"0" * 30)
    req = rr.StartWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_id=f"big-{uuid.uuid4().hex[:8]}",
        workflow_type=WorkflowType(name="Wf"),
        task_queue=TaskQueue(name="tq"),
        request_id=str(uuid.uuid4()),
        search_attributes=SearchAttributes(indexed_fields={"Big": huge}),
    )
    await _invalid(client.workflow_service.start_workflow_execution(req))
    assert (await client.count_workflows()).count == 0  # nothing written, and the client still works


# -- page tokens ---------------------------------------------------------------------------

FORGED = [
    _token({"o": -1}),
    _token({"o": 10**30}),
    _token({"o": True}),
    _token({"x": 1}),
    _token({"s": "x", "r": 5}),
    _token({"s": 1e300, "r": "r"}),
    _token({"s": 1.0, "r": "a\x00"}),
    _token([1, 2]),
    b"\xff\x00garbage",
]


async def test_forged_list_tokens_are_invalid_argument(client: Client) -> None:
    svc, ns = client.workflow_service, client.namespace
    for query in ("", "ORDER BY StartTime DESC"):
        for token in FORGED:
            await _invalid(
                svc.list_workflow_executions(
                    rr.ListWorkflowExecutionsRequest(namespace=ns, query=query, next_page_token=token)
                ),
                "next page token",
            )
            await _invalid(
                svc.list_activity_executions(
                    rr.ListActivityExecutionsRequest(namespace=ns, query=query, next_page_token=token)
                ),
                "next page token",
            )
    # A real token of the default order does not page an ORDER BY query (and the reverse).
    await _invalid(
        svc.list_workflow_executions(
            rr.ListWorkflowExecutionsRequest(
                namespace=ns, query="ORDER BY StartTime", next_page_token=_token({"s": 1.5, "r": "r"})
            )
        ),
        "another query",
    )
    await _invalid(
        svc.list_workflow_executions(
            rr.ListWorkflowExecutionsRequest(namespace=ns, next_page_token=_token({"o": 5}))
        ),
        "another query",
    )


async def test_forged_history_and_schedule_tokens_are_invalid_argument(client: Client) -> None:
    svc, ns = client.workflow_service, client.namespace
    for token in (b"zz", b"-1", b"99999999999999999999999", "١".encode()):
        await _invalid(
            svc.get_workflow_execution_history(
                rr.GetWorkflowExecutionHistoryRequest(
                    namespace=ns, execution=WorkflowExecution(workflow_id="w"), next_page_token=token
                )
            ),
            "next page token",
        )
    for token in (b"\xff\xfe", b"a\x00b"):
        await _invalid(
            svc.list_schedules(rr.ListSchedulesRequest(namespace=ns, next_page_token=token)),
            "next page token",
        )


# -- the list filter -----------------------------------------------------------------------


async def test_filter_refuses_nul_on_both_stores(client: Client) -> None:
    for query in ("WorkflowId = 'a\x00'", "WorkflowId = 'a\\0'", "`Work\x00flowId` = 'a'"):
        await _invalid(client.count_workflows(query), "NUL")
        await _invalid(client.list_workflows(query).fetch_next_page(), "NUL")


async def test_filter_refuses_numbers_past_float64(client: Client) -> None:
    for number in ("9" * 5000, "1e999"):
        await _invalid(client.count_workflows(f"StartTime > {number}"), "unable to parse value")


async def test_huge_in_list_is_invalid_argument_at_once(client: Client) -> None:
    started = time.monotonic()
    values = ",".join(f"'w{i}'" for i in range(70_000))
    await _invalid(client.count_workflows(f"WorkflowId IN ({values})"), f"at most {MAX_QUERY_VALUES}")
    assert time.monotonic() - started < 10
    # Within the cap, it runs.
    values = ",".join(f"'w{i}'" for i in range(MAX_QUERY_VALUES))
    assert (await client.count_workflows(f"WorkflowId IN ({values})")).count == 0


# -- the catch-all -------------------------------------------------------------------------


async def test_unexpected_exception_is_internal_with_one_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    from temporalio.bridge.client import RpcCall

    bridge = await client.service_client._connected_client()  # type: ignore[attr-defined]
    # The workflow service refuses undecodable bytes as INVALID_ARGUMENT before any handler
    # (the frontend limits); the operator service decodes in its handler, where it is a fault.
    call = RpcCall("list_search_attributes", b"\xff\xff\xff not a protobuf", False, {}, None)
    with caplog.at_level(logging.ERROR, logger="dbosify"):
        with pytest.raises(Exception) as info:
            await bridge._ref.call_operator_service(call)
    err = info.value
    assert type(err).__name__ == "RPCError" and type(err).__module__.startswith("dbosify")
    status, message, _details = err.args
    assert status == RPCStatusCode.INTERNAL
    assert "\n" not in message and "list_search_attributes" in message
    assert any(r.exc_info for r in caplog.records if r.name == "dbosify")
    assert (await client.count_workflows()).count == 0  # the client still works
