"""Property-based fuzzing of the service's edges (hypothesis), on Postgres and on SQLite.

The property: every call either succeeds or raises temporalio's ``RPCError`` with a status a
client can act on (never a driver's exception class, never INTERNAL or UNKNOWN, never
UNAVAILABLE while the database is up), and the service still works afterwards. Two kinds of
input:

- RPC request fields: workflow ids, run ids, type names, task queues, signal names, payload
  bytes and metadata, memo keys, search attribute names and values (typed payloads of any
  shape), page tokens; through start, signal, signal-with-start, describe, history, terminate,
  list and list-schedules requests.
- The list filter language: random token sequences drawn from the grammar's tokens (names,
  keywords, operators, literals) mixed with arbitrary text; a filter either runs or is
  INVALID_ARGUMENT.

The budget is bounded: ``DBOSIFY_FUZZ_EXAMPLES`` examples per test (default 50), each with a
deadline. A longer run, e.g. before a release::

    DBOSIFY_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz.py -p no:cacheprovider

A failure prints the shrunk input and the ``@reproduce_failure`` line that replays it.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import (
    Memo,
    Payload,
    Payloads,
    SearchAttributes,
    WorkflowExecution,
    WorkflowType,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from dbosify._engine.visibility_query import KEYWORDS
from dbosify._engine.visibility_sql import SYSTEM_ATTRIBUTES

FUZZ = settings(
    max_examples=int(os.environ.get("DBOSIFY_FUZZ_EXAMPLES", "50")),
    deadline=timedelta(seconds=20),  # one example; generous for a loaded machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # no example database in the checkout
    print_blob=True,
)

# Statuses that mean "a fault of ours" or "the database is gone": never an answer to bad input.
NOT_CLASSIFIED = {RPCStatusCode.INTERNAL, RPCStatusCode.UNKNOWN, RPCStatusCode.UNAVAILABLE}
TIMEOUT = timedelta(seconds=10)

# -- strategies: RPC fields ----------------------------------------------------------------

# Text of every kind: short and printable, any code point (NUL and controls included), long.
texts = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["", "\x00", "a\x00b", "%", "'", "\\", "default", "Running", "-1", "1e999"]),
    st.text(alphabet="ab\x00", min_size=1000, max_size=1500),
)
ids = st.one_of(texts, st.just("w"))  # "w": now and then the same run is hit again
blobs = st.one_of(st.binary(max_size=64), st.binary(min_size=4096, max_size=70_000))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
TYPES = ["Text", "Keyword", "Int", "Double", "Bool", "Datetime", "KeywordList", "", "Nope"]


@st.composite
def payloads(draw: st.DrawFn, typed: bool = False) -> Payload:
    meta: dict[str, bytes] = {
        "encoding": draw(st.sampled_from([b"json/plain", b"binary/plain", b"binary/null", b"x"]))
    }
    if typed or draw(st.booleans()):
        meta["type"] = draw(st.sampled_from(TYPES)).encode()
    if draw(st.booleans()):
        data = json.dumps(draw(json_values), allow_nan=True).encode()
    else:
        data = draw(blobs)
    return Payload(metadata=meta, data=data)


# Registered search attributes of every type, the server-set ones, and random names.
SA_NAMES = st.one_of(
    st.sampled_from(["FzKeyword", "FzText", "FzInt", "FzDouble", "FzBool", "FzDatetime", "FzList"]),
    st.sampled_from(sorted(SYSTEM_ATTRIBUTES)),
    texts,
)
search_attributes = st.dictionaries(SA_NAMES, payloads(typed=True), max_size=4)
memos = st.dictionaries(texts, payloads(), max_size=3)
tokens = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()), json_values),
    st.builds(lambda s: base64.urlsafe_b64encode(json.dumps({"s": s, "r": "r"}).encode()), json_values),
    st.builds(lambda o: base64.urlsafe_b64encode(json.dumps({"o": o}).encode()), json_values),
    st.integers().map(lambda n: str(n).encode()),
)


@st.composite
def requests(draw: st.DrawFn, ns: str) -> tuple[str, Any]:
    """One RPC name and a request for it, with fuzzed fields."""
    kind = draw(st.sampled_from([
        "start", "signal", "signal_with_start", "describe", "history", "terminate", "list",
        "schedules", "task_queue",
    ]))  # fmt: skip
    execution = WorkflowExecution(workflow_id=draw(ids), run_id=draw(st.one_of(st.just(""), texts)))
    start = dict(
        namespace=ns,
        workflow_id=draw(ids),
        workflow_type=WorkflowType(name=draw(texts)),
        task_queue=TaskQueue(name=draw(texts)),
        input=Payloads(payloads=draw(st.lists(payloads(), max_size=2))),
        memo=Memo(fields=draw(memos)),
        search_attributes=SearchAttributes(indexed_fields=draw(search_attributes)),
        request_id=str(uuid.uuid4()),
        identity=draw(texts),
    )
    if kind == "start":
        return "start_workflow_execution", rr.StartWorkflowExecutionRequest(**start)
    if kind == "signal_with_start":
        return "signal_with_start_workflow_execution", rr.SignalWithStartWorkflowExecutionRequest(
            **start,
            signal_name=draw(texts),
            signal_input=Payloads(payloads=draw(st.lists(payloads(), max_size=2))),
        )
    if kind == "signal":
        return "signal_workflow_execution", rr.SignalWorkflowExecutionRequest(
            namespace=ns,
            workflow_execution=execution,
            signal_name=draw(texts),
            input=Payloads(payloads=draw(st.lists(payloads(), max_size=2))),
            request_id=str(uuid.uuid4()),
        )
    if kind == "describe":
        return "describe_workflow_execution", rr.DescribeWorkflowExecutionRequest(
            namespace=ns, execution=execution
        )
    if kind == "history":
        return "get_workflow_execution_history", rr.GetWorkflowExecutionHistoryRequest(
            namespace=ns,
            execution=execution,
            next_page_token=draw(tokens),
            maximum_page_size=draw(st.integers(-(2**31), 2**31 - 1)),
        )
    if kind == "terminate":
        return "terminate_workflow_execution", rr.TerminateWorkflowExecutionRequest(
            namespace=ns, workflow_execution=execution, reason=draw(texts)
        )
    if kind == "list":
        return "list_workflow_executions", rr.ListWorkflowExecutionsRequest(
            namespace=ns,
            page_size=draw(st.integers(-(2**31), 2**31 - 1)),
            next_page_token=draw(tokens),
            query=draw(st.one_of(st.just(""), st.just("ORDER BY StartTime"), filters())),
        )
    if kind == "task_queue":
        enums = st.integers(-(2**31), 2**31 - 1) | st.integers(0, 4)
        return "describe_task_queue", rr.DescribeTaskQueueRequest(
            namespace=ns,
            task_queue=TaskQueue(name=draw(texts), kind=draw(enums)),
            task_queue_type=draw(enums),
            api_mode=draw(enums),
            task_queue_types=draw(st.lists(enums, max_size=4)),
            report_stats=draw(st.booleans()),
            report_pollers=draw(st.booleans()),
            include_task_queue_status=draw(st.booleans()),
            report_task_reachability=draw(st.booleans()),
        )
    return "list_schedules", rr.ListSchedulesRequest(
        namespace=ns,
        maximum_page_size=draw(st.integers(-(2**31), 2**31 - 1)),
        next_page_token=draw(tokens),
        query=draw(st.one_of(st.just(""), filters())),
    )


# -- strategies: the filter language -------------------------------------------------------

_NAMES = sorted(SYSTEM_ATTRIBUTES) + ["FzKeyword", "FzText", "FzInt", "FzList", "Nope"]
_WORDS = sorted(KEYWORDS) + ["ORDER BY", "GROUP BY", "IS NOT NULL", "NOT IN", "STARTS_WITH"]


def _quote(s: str, q: str) -> str:
    return q + s.replace("\\", "\\\\").replace(q, q + q) + q


filter_tokens = st.one_of(
    st.sampled_from(_NAMES),
    st.sampled_from(_NAMES).map(lambda n: f"`{n}`"),
    st.sampled_from(_WORDS),
    st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">=", "<=>", "(", ")", ",", "-", "'", '"', "`"]),
    st.builds(_quote, st.text(max_size=12), st.sampled_from(["'", '"'])),
    st.sampled_from(["'Running'", "'2024-01-01T00:00:00Z'", "'1h'", "'a\\0'", "'\\'", "''"]),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["9" * 400, "1e999", ".5", "1.", "0x1f", "1e", "--1"]),
    st.text(max_size=8),  # arbitrary text
)


_values = st.one_of(
    st.builds(_quote, st.text(max_size=12), st.sampled_from(["'", '"'])),
    st.sampled_from(["'Running'", "'2024-01-01T00:00:00Z'", "'1h'", "'a\\0'", "'a\x00'", "TRUE"]),
    st.integers().map(str),
    st.floats(allow_nan=False).map(lambda f: repr(f).replace("inf", "1e999")),
    st.sampled_from(["9" * 5000, "-" + "9" * 30, "1e999"]),
)
_ops = st.sampled_from(["=", "!=", "<", ">=", "STARTS_WITH", "NOT STARTS_WITH"])


@st.composite
def _predicates(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_NAMES))
    shape = draw(st.sampled_from(["cmp", "in", "between", "null"]))
    if shape == "cmp":
        return f"{name} {draw(_ops)} {draw(_values)}"
    if shape == "in":
        return f"{name} {draw(st.sampled_from(['IN', 'NOT IN']))} ({', '.join(draw(st.lists(_values, min_size=1, max_size=5)))})"
    if shape == "between":
        return f"{name} BETWEEN {draw(_values)} AND {draw(_values)}"
    return f"{name} IS {draw(st.sampled_from(['NULL', 'NOT NULL']))}"


@st.composite
def _well_formed(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_predicates(), min_size=1, max_size=4))
    text = parts[0]
    for part in parts[1:]:
        text += f" {draw(st.sampled_from(['AND', 'OR', 'AND NOT']))} {part}"
    if draw(st.booleans()):
        text += f" ORDER BY {draw(st.sampled_from(_NAMES))} {draw(st.sampled_from(['', 'ASC', 'DESC']))}"
    return text


def filters() -> st.SearchStrategy[str]:
    """Well-formed filters with fuzzed values, token soup from the grammar, and plain text."""
    return st.one_of(
        _well_formed(),
        st.lists(filter_tokens, max_size=14).map(" ".join),
        st.text(max_size=40),
    )


# -- the properties ------------------------------------------------------------------------


async def _setup(client: Client) -> None:
    from temporalio.api.enums.v1 import IndexedValueType as T
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    types = {
        "FzKeyword": T.INDEXED_VALUE_TYPE_KEYWORD, "FzText": T.INDEXED_VALUE_TYPE_TEXT,
        "FzInt": T.INDEXED_VALUE_TYPE_INT, "FzDouble": T.INDEXED_VALUE_TYPE_DOUBLE,
        "FzBool": T.INDEXED_VALUE_TYPE_BOOL, "FzDatetime": T.INDEXED_VALUE_TYPE_DATETIME,
        "FzList": T.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    }  # fmt: skip
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=client.namespace, search_attributes=types)
    )


async def _classified(call: Any) -> RPCError | None:
    """Await ``call``: success, or an RPCError whose status is an answer to the input."""
    try:
        await call
    except RPCError as err:
        assert err.status not in NOT_CLASSIFIED, f"{err.status.name}: {err.message}"
        assert "\n" not in err.message, err.message
        return err
    return None


async def _still_works(client: Client) -> None:
    """A list and a start succeed after whatever came before."""
    await client.count_workflows()
    await client.workflow_service.start_workflow_execution(
        rr.StartWorkflowExecutionRequest(
            namespace=client.namespace, workflow_id=f"alive-{uuid.uuid4().hex[:8]}",
            workflow_type=WorkflowType(name="W"), task_queue=TaskQueue(name="fuzz-alive"),
            request_id=str(uuid.uuid4()),
        )  # fmt: skip
    )


_ready: set[str] = set()


async def _ensure_setup(client: Client) -> None:
    if client.namespace not in _ready:
        await _setup(client)
        _ready.add(client.namespace)


@FUZZ
@given(data=st.data())
async def test_fuzz_rpc_fields(client: Client, data: st.DataObject) -> None:
    await _ensure_setup(client)
    rpc, req = data.draw(requests(client.namespace))
    await _classified(getattr(client.workflow_service, rpc)(req, timeout=TIMEOUT))
    await _still_works(client)


@FUZZ
@given(query=filters())
async def test_fuzz_filter_language(client: Client, query: str) -> None:
    await _ensure_setup(client)
    for call in (
        client.count_workflows(query),
        client.list_workflows(query, page_size=5).fetch_next_page(),
        client.workflow_service.list_schedules(
            rr.ListSchedulesRequest(namespace=client.namespace, query=query), timeout=TIMEOUT
        ),
    ):
        err = await _classified(call)
        assert err is None or err.status == RPCStatusCode.INVALID_ARGUMENT, err
    await client.count_workflows()
