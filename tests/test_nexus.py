"""Nexus: endpoints (the operator service's CRUD and errors, as on the dev server), operations
called from workflows (sync and workflow-run), handler and operation errors, retries, and a
handler worker killed mid-operation. On Postgres and SQLite.

The history of the same workflows on a Temporal dev server is in
tests/fixtures/nexus_devserver_history.json (recorded with tests/nexus_app.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nexusrpc
import pytest
from conftest import new_namespace
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.nexus.v1 import message_pb2 as nx
from temporalio.api.operatorservice.v1 import request_response_pb2 as ops
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, NexusOperationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, Worker

sys.path.insert(0, str(Path(__file__).parent))
import nexus_app as app  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "nexus_devserver_history.json"


def _spec(name: str, ns: str, tq: str, desc: str | None = None) -> nx.EndpointSpec:
    s = nx.EndpointSpec(name=name)
    s.target.worker.namespace = ns
    s.target.worker.task_queue = tq
    if desc is not None:
        s.description.data = json.dumps(desc).encode()
        s.description.metadata["encoding"] = b"json/plain"
    return s


async def _create_endpoint(client: Client, tq: str) -> nx.Endpoint:
    resp = await client.operator_service.create_nexus_endpoint(
        ops.CreateNexusEndpointRequest(spec=_spec(app.endpoint_name(tq), client.namespace, tq))
    )
    return resp.endpoint


def _tq() -> str:
    return f"nx-{uuid.uuid4().hex[:10]}"


async def _status(coro: object) -> tuple[RPCStatusCode, str]:
    with pytest.raises(RPCError) as err:
        await coro  # type: ignore[misc]
    return err.value.status, err.value.message


async def test_endpoint_crud_and_errors(client: Client) -> None:
    o = client.operator_service
    name = f"ep-{uuid.uuid4().hex[:8]}"
    created = (await o.create_nexus_endpoint(
        ops.CreateNexusEndpointRequest(spec=_spec(name, client.namespace, "tq1", "hello"))
    )).endpoint
    assert created.version == 1 and created.id and created.spec.name == name
    assert created.url_prefix == f"/nexus/endpoints/{created.id}/services"
    assert json.loads(created.spec.description.data) == "hello"
    # As on the dev server (messages recorded there).
    assert await _status(o.create_nexus_endpoint(
        ops.CreateNexusEndpointRequest(spec=_spec(name, client.namespace, "tq1")))) == (
        RPCStatusCode.ALREADY_EXISTS,
        f"error creating Nexus endpoint. Endpoint with name {name} already registered")
    regex = 'endpoint name must match the regex: "^[a-zA-Z][a-zA-Z0-9\\\\-]*[a-zA-Z0-9]$"'
    for bad, message in [("", "endpoint name not set"), ("1abc", regex), ("a_b", regex), ("ab-", regex),
                         ("a", regex), ("a" * 201, "endpoint name exceeds length limit of 200")]:
        assert await _status(o.create_nexus_endpoint(
            ops.CreateNexusEndpointRequest(spec=_spec(bad, client.namespace, "tq1")))) == (
            RPCStatusCode.INVALID_ARGUMENT, message), bad
    assert await _status(o.create_nexus_endpoint(
        ops.CreateNexusEndpointRequest(spec=_spec("x" + name, "no-such-ns", "tq1")))) == (
        RPCStatusCode.FAILED_PRECONDITION,
        "could not verify namespace referenced by target exists: Namespace no-such-ns is not found.")
    assert await _status(o.create_nexus_endpoint(
        ops.CreateNexusEndpointRequest(spec=_spec("y" + name, client.namespace, "")))) == (
        RPCStatusCode.INVALID_ARGUMENT, 'invalid target task queue: "taskQueue is not set"')
    assert await _status(o.create_nexus_endpoint(ops.CreateNexusEndpointRequest())) == (
        RPCStatusCode.INVALID_ARGUMENT, "endpoint name not set, empty target variant")

    got = (await o.get_nexus_endpoint(ops.GetNexusEndpointRequest(id=created.id))).endpoint
    assert got == created
    missing = str(uuid.uuid4())
    assert await _status(o.get_nexus_endpoint(ops.GetNexusEndpointRequest(id=missing))) == (
        RPCStatusCode.NOT_FOUND, f"Nexus endpoint with ID `{missing}` not found")
    assert await _status(o.get_nexus_endpoint(ops.GetNexusEndpointRequest(id=""))) == (
        RPCStatusCode.INVALID_ARGUMENT, "endpoint ID not set")

    assert await _status(o.update_nexus_endpoint(ops.UpdateNexusEndpointRequest(
        id=created.id, version=7, spec=_spec(name, client.namespace, "tq2")))) == (
        RPCStatusCode.FAILED_PRECONDITION, "nexus endpoint version mismatch. received: 7 expected 1")
    updated = (await o.update_nexus_endpoint(ops.UpdateNexusEndpointRequest(
        id=created.id, version=1, spec=_spec(name, client.namespace, "tq2")))).endpoint
    assert updated.version == 2 and updated.spec.target.worker.task_queue == "tq2"
    assert updated.HasField("last_modified_time")

    listed = (await o.list_nexus_endpoints(ops.ListNexusEndpointsRequest(name=name))).endpoints
    assert [e.id for e in listed] == [created.id]
    assert not (await o.list_nexus_endpoints(ops.ListNexusEndpointsRequest(name="no-match-x"))).endpoints
    # Paging over every endpoint of the database.
    more = [(await o.create_nexus_endpoint(ops.CreateNexusEndpointRequest(
        spec=_spec(f"p{i}-{uuid.uuid4().hex[:6]}", client.namespace, "tq")))).endpoint.id for i in range(3)]
    seen: list[str] = []
    token = b""
    while True:
        page = await o.list_nexus_endpoints(ops.ListNexusEndpointsRequest(page_size=2, next_page_token=token))
        assert len(page.endpoints) <= 2
        seen += [e.id for e in page.endpoints]
        token = page.next_page_token
        if not token:
            break
    assert {created.id, *more} <= set(seen) and len(seen) == len(set(seen))

    await o.delete_nexus_endpoint(ops.DeleteNexusEndpointRequest(id=created.id, version=1))
    assert await _status(o.delete_nexus_endpoint(ops.DeleteNexusEndpointRequest(id=created.id, version=2))) == (
        RPCStatusCode.NOT_FOUND, f"error deleting nexus endpoint with ID: {created.id}")
    # Endpoints are shared by the database's namespaces: another namespace's client sees them.
    other = await Client.connect(client.service_client.config.target_host, namespace=new_namespace(
        client.service_client.config.target_host))
    got2 = (await other.operator_service.get_nexus_endpoint(ops.GetNexusEndpointRequest(id=more[0]))).endpoint
    assert got2.id == more[0]


def _events(history: object) -> list[tuple[str, object]]:
    out = []
    for e in history.events:  # type: ignore[attr-defined]
        out.append((et.EventType.Name(e.event_type), e))
    return out


def _fixture_types(key: str) -> list[str]:
    data = json.loads(FIXTURE.read_text())
    return [e["eventType"] for e in data[key]["events"]]


def _without_workflow_tasks(types: list[str]) -> list[str]:
    """A history's events but its workflow tasks': a handler run that ends within milliseconds
    can complete before the caller's worker takes the task its Started event scheduled, or while
    that task runs, and the engine writes a task's events when a worker takes it (see
    docs/COMPATIBILITY.md, `fetch_history()`): where the workflow tasks fall differs from the
    dev server's by timing, the operation's events and their order do not."""
    return [t for t in types if not t.startswith("EVENT_TYPE_WORKFLOW_TASK_")]


async def test_sync_and_workflow_run_operations(client: Client) -> None:
    tq = _tq()
    ep = await _create_endpoint(client, tq)
    async with Worker(client, task_queue=tq, workflows=[app.Caller, app.Echo], nexus_service_handlers=[app.Greeter()]):
        t0 = time.monotonic()
        sync = await client.start_workflow(app.Caller.run, args=["hello", "sync"], id=f"s-{tq}", task_queue=tq)
        assert await sync.result() == "Hello, sync!"
        assert time.monotonic() - t0 < 10
        wfrun = await client.start_workflow(app.Caller.run, args=["echo", "async"], id=f"a-{tq}", task_queue=tq)
        assert await wfrun.result() == "echo async"
        # The event sequence of the same workflows on the dev server.
        sync_events = _events(await sync.fetch_history())
        assert _without_workflow_tasks([t for t, _ in sync_events]) == _without_workflow_tasks(_fixture_types("hello:sync"))
        sched = next(e for t, e in sync_events if t == "EVENT_TYPE_NEXUS_OPERATION_SCHEDULED")
        sa = sched.nexus_operation_scheduled_event_attributes  # type: ignore[attr-defined]
        assert (sa.endpoint, sa.service, sa.operation, sa.endpoint_id) == (app.endpoint_name(tq), "Greeter", "hello", ep.id)
        assert sa.request_id and sa.workflow_task_completed_event_id == 4
        done = next(e for t, e in sync_events if t == "EVENT_TYPE_NEXUS_OPERATION_COMPLETED")
        da = done.nexus_operation_completed_event_attributes  # type: ignore[attr-defined]
        assert da.scheduled_event_id == sched.event_id and da.request_id == sa.request_id  # type: ignore[attr-defined]
        async_events = _events(await wfrun.fetch_history())
        got = [t for t, _ in async_events]
        assert _without_workflow_tasks(got) == _without_workflow_tasks(_fixture_types("echo:async")), got
        # However the workflow tasks fell, the history replays as it ran.
        await Replayer(workflows=[app.Caller, app.Echo]).replay_workflow(await wfrun.fetch_history())
        started = next(e for t, e in async_events if t == "EVENT_TYPE_NEXUS_OPERATION_STARTED")
        st = started.nexus_operation_started_event_attributes  # type: ignore[attr-defined]
        assert st.operation_token and st.scheduled_event_id == 5
        # Links both ways: the caller's Started event names the handler's run, whose started
        # event carries the completion callback that names the caller's Scheduled event.
        [link] = started.links  # type: ignore[attr-defined]
        handler_wf = link.workflow_event.workflow_id
        assert handler_wf.startswith("echo-") and link.workflow_event.event_ref.event_id == 1
        handler_events = _events(await client.get_workflow_handle(handler_wf).fetch_history())
        assert [t for t, _ in handler_events] == _fixture_types("echo:handler")
        [cb] = handler_events[0][1].workflow_execution_started_event_attributes.completion_callbacks  # type: ignore[attr-defined]
        assert cb.nexus.url == "temporal://system"
        [back] = cb.links
        assert (back.workflow_event.workflow_id, back.workflow_event.event_ref.event_id) == (f"a-{tq}", 5)
        # DescribeWorkflowExecution lists the callback, delivered, with the operation's token.
        [info] = (await client.get_workflow_handle(handler_wf).describe()).raw_description.callbacks
        assert info.callback.nexus.header["nexus-operation-token"] == st.operation_token
        assert info.trigger.HasField("workflow_closed") and info.state == 5  # CALLBACK_STATE_SUCCEEDED


async def test_handler_errors(client: Client, tmp_path: Path) -> None:
    tq = _tq()
    await _create_endpoint(client, tq)
    async with Worker(client, task_queue=tq, workflows=[app.Caller, app.Echo], nexus_service_handlers=[app.Greeter()]):
        # Not retryable (BAD_REQUEST): fails at once, with Temporal's chain.
        h1 = await client.start_workflow(app.Caller.run, args=["fail", "bad-request"], id=f"b-{tq}", task_queue=tq)
        with pytest.raises(WorkflowFailureError) as err:
            await h1.result()
        op = err.value.cause
        assert isinstance(op, NexusOperationError)
        assert (op.endpoint, op.service, op.operation) == (app.endpoint_name(tq), "Greeter", "fail")
        assert isinstance(op.cause, nexusrpc.HandlerError)
        assert op.cause.type == nexusrpc.HandlerErrorType.BAD_REQUEST and str(op.cause) == "no good"
        assert [t for t, _ in _events(await h1.fetch_history())] == _fixture_types("fail:bad-request")
        # An operation error: the operation fails, not retried.
        h2 = await client.start_workflow(app.Caller.run, args=["fail", "operation"], id=f"o-{tq}", task_queue=tq)
        with pytest.raises(WorkflowFailureError) as err:
            await h2.result()
        assert isinstance(err.value.cause, NexusOperationError)
        assert isinstance(err.value.cause.cause, ApplicationError)
        assert err.value.cause.cause.type == "OperationError" and err.value.cause.cause.message == "refused"
        assert [t for t, _ in _events(await h2.fetch_history())] == _fixture_types("fail:operation")
        # Retryable (UNAVAILABLE): retried after a backoff; the second attempt succeeds.
        marker = tmp_path / "flaky"
        t0 = time.monotonic()
        h3 = await client.start_workflow(app.Caller.run, args=["fail", f"flaky:{marker}"], id=f"r-{tq}", task_queue=tq)
        assert await h3.result() == "recovered"
        assert marker.exists() and 0.9 < time.monotonic() - t0 < 15


async def test_unknown_endpoint_fails_the_workflow_task(client: Client) -> None:
    tq = _tq()  # no endpoint created for it
    async with Worker(client, task_queue=tq, workflows=[app.Caller, app.Echo], nexus_service_handlers=[app.Greeter()]):
        h = await client.start_workflow(app.Caller.run, args=["hello", "x"], id=f"u-{tq}", task_queue=tq)
        for _ in range(100):
            types = [t for t, _ in _events(await h.fetch_history())]
            if "EVENT_TYPE_WORKFLOW_TASK_FAILED" in types:
                break
            await asyncio.sleep(0.1)
        assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" in types and "EVENT_TYPE_NEXUS_OPERATION_SCHEDULED" not in types
        # Creating the endpoint lets the workflow go on at its next task, as on Temporal.
        await _create_endpoint(client, tq)
        await h.terminate("done")


HANDLER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import dbosify
dbosify.activate()
from temporalio.client import Client
from temporalio.worker import Worker
import nexus_app as app

async def main():
    client = await Client.connect({url!r}, namespace={ns!r})
    async with Worker(client, task_queue={tq!r}, nexus_service_handlers=[app.Greeter()]):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_handler_killed_mid_operation_is_retried_by_another_worker(client: Client, db_url: str,
                                                                        tmp_path: Path) -> None:
    """A handler process is SIGKILLed inside a sync operation: the reaper hands the task back
    and a second handler process answers it; the caller gets that answer."""
    tq = _tq()
    await _create_endpoint(client, tq)
    script = tmp_path / "handler.py"
    script.write_text(HANDLER.format(tests=str(Path(__file__).parent), url=db_url, ns=client.namespace, tq=tq))
    env = {**os.environ, "DBOSIFY_ACTIVATE": ""}

    def spawn() -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    first = spawn()
    marker = tmp_path / "crashed"
    procs = [first]
    try:
        async with Worker(client, task_queue=tq, workflows=[app.Caller]):
            h = await client.start_workflow(app.Caller.run, args=["crash_once", str(marker)], id=f"k-{tq}", task_queue=tq)
            for _ in range(300):
                if marker.exists():
                    break
                await asyncio.sleep(0.05)
            assert marker.exists(), "the first handler never ran the operation"
            first.wait(timeout=10)
            assert first.returncode == -signal.SIGKILL
            second = spawn()
            procs.append(second)
            assert await asyncio.wait_for(h.result(), 40) == f"done by {second.pid}"
            types = [t for t, _ in _events(await h.fetch_history())]
            assert types.count("EVENT_TYPE_NEXUS_OPERATION_COMPLETED") == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_cli_endpoint_verbs(db_url: str) -> None:
    """``dbosify operator nexus endpoint create|list|get|delete`` with the temporal CLI's flags."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    ns = new_namespace(db_url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dbosify", "operator", "nexus", "endpoint", *args,
                               "--address", db_url], capture_output=True, text=True, timeout=60)

    made = cli("create", "--name", name, "--target-namespace", ns, "--target-task-queue", "q1",
               "--description", "routes to q1")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"Endpoint {name} successfully created."
    again = cli("create", "--name", name, "--target-namespace", ns, "--target-task-queue", "q1")
    assert again.returncode != 0 and "already registered" in again.stderr
    got = cli("get", "--name", name, "-o", "json")
    assert got.returncode == 0, got.stderr
    info = json.loads(got.stdout)
    assert (info["name"], info["targetNamespace"], info["targetTaskQueue"], info["description"]) == (
        name, ns, "q1", "routes to q1")
    assert name in cli("list").stdout
    assert cli("delete", "--name", name).returncode == 0
    gone = cli("get", "--name", name)
    assert gone.returncode != 0 and "not found" in gone.stderr


async def _outcome(coro: object) -> tuple[RPCStatusCode, str] | None:
    """None when the call succeeds, else its status and message."""
    try:
        await coro  # type: ignore[misc]
    except RPCError as err:
        return err.status, err.message
    return None


async def test_concurrent_endpoint_writes_keep_temporals_rules(client: Client) -> None:
    """Writers that race: one create per name, one update per version (the rest are refused as
    Temporal refuses them, never INTERNAL and never a lost update); a name with a trailing newline
    and a forged page token are INVALID_ARGUMENT."""
    o = client.operator_service
    name = f"race-{uuid.uuid4().hex[:8]}"
    creates = await asyncio.gather(*(
        _outcome(o.create_nexus_endpoint(ops.CreateNexusEndpointRequest(
            spec=_spec(name, client.namespace, f"tq{i}")))) for i in range(6)
    ))
    refused = [c for c in creates if c is not None]
    assert len(refused) == 5 and all(c[0] == RPCStatusCode.ALREADY_EXISTS for c in refused), creates
    listed = (await o.list_nexus_endpoints(ops.ListNexusEndpointsRequest(name=name))).endpoints
    assert len(listed) == 1
    ep = listed[0]
    updates = await asyncio.gather(*(
        _outcome(o.update_nexus_endpoint(ops.UpdateNexusEndpointRequest(
            id=ep.id, version=ep.version, spec=_spec(name, client.namespace, f"new{i}")))) for i in range(6)
    ))
    refused = [u for u in updates if u is not None]
    assert len(refused) == 5 and all(u[0] == RPCStatusCode.FAILED_PRECONDITION for u in refused), updates
    got = (await o.get_nexus_endpoint(ops.GetNexusEndpointRequest(id=ep.id))).endpoint
    assert got.version == ep.version + 1

    assert (await _status(o.create_nexus_endpoint(ops.CreateNexusEndpointRequest(
        spec=_spec(f"nl{uuid.uuid4().hex[:6]}\n", client.namespace, "tq")))))[0] == RPCStatusCode.INVALID_ARGUMENT
    assert (await _status(o.list_nexus_endpoints(ops.ListNexusEndpointsRequest(
        next_page_token=b"\xff\x00bad"))))[0] == RPCStatusCode.INVALID_ARGUMENT


async def test_a_forged_completion_callback_writes_nothing_in_the_caller(client: Client) -> None:
    """A start's completion callbacks are the client's to give: one naming a caller's operation
    without the operation's own request id changes nothing there; the real handler's close does."""
    import json as _json

    from temporalio.api.common.v1 import message_pb2 as common_pb
    from temporalio.api.workflowservice.v1 import request_response_pb2 as wsr

    tq = _tq()
    await _create_endpoint(client, tq)
    async with Worker(client, task_queue=tq, workflows=[app.Caller, app.Echo, app.Parked],
                      nexus_service_handlers=[app.Greeter()]):
        caller = await client.start_workflow(app.Caller.run, args=["park", tq], id=f"c-{tq}", task_queue=tq)
        deadline = time.monotonic() + 20
        while not any(e.event_type == et.EVENT_TYPE_NEXUS_OPERATION_STARTED
                      for e in (await caller.fetch_history()).events):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        caller_run = (await caller.describe()).run_id
        forged = _json.dumps({"ns": client.namespace, "run": caller_run, "seq": 1, "sched": 5})
        req = wsr.StartWorkflowExecutionRequest(
            namespace=client.namespace, workflow_id=f"forger-{tq}", request_id=str(uuid.uuid4()),
            workflow_type=common_pb.WorkflowType(name="Echo"),
        )
        req.task_queue.name = tq
        req.input.payloads.append((await client.data_converter.encode(["forged"]))[0])
        cb = req.completion_callbacks.add()
        cb.nexus.url = "temporal://system"
        cb.nexus.header["temporal-callback-token"] = forged
        await client.workflow_service.start_workflow_execution(req)
        assert await client.get_workflow_handle(f"forger-{tq}").result() == "echo forged"
        await asyncio.sleep(0.3)
        types = [e.event_type for e in (await caller.fetch_history()).events]
        assert et.EVENT_TYPE_NEXUS_OPERATION_COMPLETED not in types
        await client.get_workflow_handle(f"park-{tq}").signal(app.Parked.release)
        assert await caller.result() == f"parked {tq}"


async def test_cancel_request_answer_is_recorded_in_the_callers_history(client: Client) -> None:
    # As on Temporal: the handler's answer to a cancel request becomes
    # NexusOperationCancelRequestCompleted (after NexusOperationCancelRequested) in the caller's
    # history, while the operation itself goes on (this handler workflow ignores the request).
    tq = _tq()
    await _create_endpoint(client, tq)
    name = f"stubborn-{tq}"
    async with Worker(client, task_queue=tq, workflows=[app.Caller, app.Parked], nexus_service_handlers=[app.Greeter()]):
        caller = await client.start_workflow(app.Caller.run, args=["park_cancel", name], id=f"c-{tq}", task_queue=tq)
        deadline = time.monotonic() + 15
        types: list[str] = []
        while "EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED" not in types:
            assert time.monotonic() < deadline, types
            await asyncio.sleep(0.2)
            types = [t for t, _ in _events(await caller.fetch_history())]
        assert types.index("EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED") < types.index(
            "EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED")
        handler = client.get_workflow_handle(f"park-{name}")
        await handler.signal(app.Parked.release)
        assert await handler.result() == f"parked {name}"
        await caller.result()
        done = [t for t, _ in _events(await caller.fetch_history())]
        assert done.count("EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_COMPLETED") == 1


async def test_handler_sees_the_request_deadline(client: Client) -> None:
    # Each Nexus request carries its deadline (Temporal's per-request timeout, 10 s by default),
    # in UTC, even when the operation has no schedule-to-close timeout.
    tq = _tq()
    await _create_endpoint(client, tq)
    async with Worker(client, task_queue=tq, workflows=[app.Caller], nexus_service_handlers=[app.Greeter()]):
        before = datetime.now(timezone.utc)
        got = await client.execute_workflow(app.Caller.run, args=["deadline", "x"], id=f"d-{tq}", task_queue=tq)
    deadline = datetime.fromisoformat(got)
    assert deadline.tzinfo is not None and deadline.utcoffset() == timedelta(0)
    assert before < deadline <= datetime.now(timezone.utc) + timedelta(seconds=10)


async def test_cancel_request_carries_the_operations_headers(client: Client) -> None:
    tq = _tq()
    await _create_endpoint(client, tq)
    token = f"held-{tq}"
    async with Worker(client, task_queue=tq, workflows=[app.Caller], nexus_service_handlers=[app.Held()]):
        caller = await client.start_workflow(app.Caller.run, args=["held_cancel", tq], id=f"h-{tq}", task_queue=tq)
        deadline = time.monotonic() + 15
        while token not in app.CANCEL_HEADERS:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert app.CANCEL_HEADERS[token].get("x-note") == "kept"
        await caller.terminate()


async def test_wait_requested_resolves_once_the_handler_took_the_cancel(client: Client) -> None:
    # WAIT_REQUESTED: the caller's operation resolves as cancelled once the handler answered the
    # cancel request, while the operation itself (this handler workflow ignores it) goes on.
    tq = _tq()
    await _create_endpoint(client, tq)
    name = f"stubborn-{tq}"
    async with Worker(client, task_queue=tq, workflows=[app.Caller, app.Parked], nexus_service_handlers=[app.Greeter()]):
        got = await client.execute_workflow(
            app.Caller.run, args=["park_wait_requested", name], id=f"w-{tq}", task_queue=tq,
            execution_timeout=timedelta(seconds=20),
        )
        assert got == "resolved: CancelledError"
        handler = client.get_workflow_handle(f"park-{name}")
        assert (await handler.describe()).status == 1  # RUNNING
        await handler.signal(app.Parked.release)
        assert await handler.result() == f"parked {name}"


async def test_wait_requested_fails_when_the_cancel_handler_refuses(client: Client) -> None:
    # WAIT_REQUESTED with a cancel handler that fails: NexusOperationCancelRequestFailed, and the
    # caller's operation fails with the handler's error.
    tq = _tq()
    await _create_endpoint(client, tq)
    async with Worker(client, task_queue=tq, workflows=[app.Caller], nexus_service_handlers=[app.Held()]):
        caller = await client.start_workflow(
            app.Caller.run, args=["held_wait_requested", f"refuse-{tq}"], id=f"r-{tq}", task_queue=tq,
            execution_timeout=timedelta(seconds=20),
        )
        assert await caller.result() == "resolved: HandlerError"
        types = [t for t, _ in _events(await caller.fetch_history())]
        assert "EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUEST_FAILED" in types
