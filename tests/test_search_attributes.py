"""Search attributes, memo and list filters through temporalio's client, on Postgres and SQLite."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
    RemoveSearchAttributesRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

REGION = SearchAttributeKey.for_keyword("Region")
TAGS = SearchAttributeKey.for_keyword_list("Tags")
SCORE = SearchAttributeKey.for_int("Score")
RATIO = SearchAttributeKey.for_float("Ratio")
VIP = SearchAttributeKey.for_bool("Vip")
DUE = SearchAttributeKey.for_datetime("Due")
NOTES = SearchAttributeKey.for_text("Notes")
ALL = (REGION, TAGS, SCORE, RATIO, VIP, DUE, NOTES)


@workflow.defn
class Tagged:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, hops: int) -> str:
        await workflow.wait_condition(lambda: self.go)
        if hops > 0:
            workflow.continue_as_new(hops - 1)
        return "done"

    @workflow.update
    def retag(self, region: str) -> None:
        workflow.upsert_search_attributes([REGION.value_set(region), SCORE.value_unset()])
        workflow.upsert_memo({"note": f"moved to {region}", "drop": None})

    @workflow.signal
    def finish(self) -> None:
        self.go = True


async def _register(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in ALL},
        )
    )


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Tagged], workflow_runner=UnsandboxedWorkflowRunner())


async def _ids(client: Client, query: str) -> set[str]:
    return {w.id async for w in client.list_workflows(query)}


async def test_registry_lists_dev_server_defaults_and_added(client: Client) -> None:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert listed.custom_attributes["CustomKeywordField"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert "WorkflowId" in listed.system_attributes
    await _register(client)
    await _register(client)  # adding again is a no-op
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert listed.custom_attributes["Tags"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST
    with pytest.raises(RPCError, match="already exists"):
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={"Region": IndexedValueType.INDEXED_VALUE_TYPE_INT},
            )
        )
    await client.operator_service.remove_search_attributes(
        RemoveSearchAttributesRequest(namespace=client.namespace, search_attributes=["Ratio"])
    )
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert "Ratio" not in listed.custom_attributes


async def test_start_refuses_unregistered_and_mistyped(client: Client) -> None:
    with pytest.raises(RPCError, match="no mapping defined for search attribute Region"):
        await client.start_workflow(
            Tagged.run, 0, id=f"w-{uuid.uuid4()}", task_queue="nobody",
            search_attributes=TypedSearchAttributes([SearchAttributePair(REGION, "eu")]),
        )
    await _register(client)
    with pytest.raises(RPCError, match="invalid value for search attribute Score of type Int"):
        await client.start_workflow(
            Tagged.run, 0, id=f"w-{uuid.uuid4()}", task_queue="nobody",
            search_attributes={"Score": ["not a number"]},
        )


async def test_typed_attributes_describe_list_upsert_and_memo(client: Client) -> None:
    await _register(client)
    tq = f"tq-{uuid.uuid4()}"
    due = datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    attrs = TypedSearchAttributes([
        SearchAttributePair(REGION, "eu-west"),
        SearchAttributePair(TAGS, ["gold", "beta"]),
        SearchAttributePair(SCORE, 42),
        SearchAttributePair(RATIO, 0.5),
        SearchAttributePair(VIP, True),
        SearchAttributePair(DUE, due),
        SearchAttributePair(NOTES, "Customer asked for Express shipping"),
    ])
    async with _worker(client, tq):
        a = await client.start_workflow(
            Tagged.run, 1, id=f"a-{uuid.uuid4()}", task_queue=tq, search_attributes=attrs,
            memo={"note": "new", "drop": 1},
        )
        b = await client.start_workflow(Tagged.run, 0, id=f"b-{uuid.uuid4()}", task_queue=tq)
        desc = await a.describe()
        assert desc.typed_search_attributes == attrs
        assert await desc.memo() == {"note": "new", "drop": 1}

        assert await _ids(client, "Region = 'eu-west'") == {a.id}
        assert await _ids(client, "Tags = 'gold' AND Score >= 40") == {a.id}
        assert await _ids(client, f"Due > '{(due - timedelta(days=1)).isoformat()}'") == {a.id}
        assert await _ids(client, "Notes = 'express'") == {a.id}
        assert await _ids(client, "Region IS NULL") == {b.id}
        assert await _ids(client, f"WorkflowId = '{b.id}' OR Vip = true") == {a.id, b.id}

        # The update's workflow task upserts; once it has returned, list sees the change.
        await a.execute_update(Tagged.retag, "us-east")
        assert await _ids(client, "Region = 'us-east'") == {a.id}
        assert await _ids(client, "Region = 'eu-west'") == set()
        assert await _ids(client, "Score IS NULL") == {a.id, b.id}
        desc = await a.describe()
        assert desc.typed_search_attributes.get(REGION) == "us-east"
        assert desc.typed_search_attributes.get(SCORE) is None
        assert await desc.memo() == {"note": "moved to us-east"}
        listed = [w async for w in client.list_workflows(f"WorkflowId = '{a.id}'")]
        assert listed[0].typed_search_attributes.get(REGION) == "us-east"
        assert await listed[0].memo() == {"note": "moved to us-east"}

        # Continue-as-new carries the attributes and memo as they are now.
        await a.signal(Tagged.finish)
        new_run = client.get_workflow_handle(a.id)
        for _ in range(100):
            d = await new_run.describe()
            if d.run_id != desc.run_id:
                break
        assert d.typed_search_attributes.get(REGION) == "us-east"
        assert await d.memo() == {"note": "moved to us-east"}
        await new_run.signal(Tagged.finish)
        await new_run.result()
        await b.signal(Tagged.finish)
        await b.result()

    counts = await client.count_workflows("GROUP BY ExecutionStatus")
    by_status = {g.group_values[0]: g.count for g in counts.groups}
    assert by_status == {"Completed": 2, "ContinuedAsNew": 1}
    assert (await client.count_workflows("ExecutionStatus = 'Completed'")).count == 2
    statuses = {w.status async for w in client.list_workflows(f"WorkflowId = '{a.id}'")}
    assert statuses == {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CONTINUED_AS_NEW}


async def test_list_pages_and_bad_queries(client: Client) -> None:
    for i in range(7):
        await client.start_workflow(Tagged.run, 0, id=f"p{i}", task_queue="nobody")
    seen = [w.id async for w in client.list_workflows(page_size=3)]
    assert seen == [f"p{i}" for i in range(6, -1, -1)]  # newest first, across pages
    ordered = [w.id async for w in client.list_workflows("ORDER BY WorkflowId", page_size=2)]
    assert ordered == [f"p{i}" for i in range(7)]
    with pytest.raises(RPCError) as err:
        await client.count_workflows("WorkflowId = ")
    assert err.value.status.name == "INVALID_ARGUMENT"
    injection = "p1' OR '1'='1"
    assert await _ids(client, f"WorkflowId = \"{injection}\"") == set()
    assert await _ids(client, "WorkflowId = 'p1' OR WorkflowId STARTS_WITH 'p6'") == {"p1", "p6"}
