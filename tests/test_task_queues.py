"""DescribeTaskQueue, ``dbosify task-queue describe`` and the web view's task-queue page.

The RPC on Postgres and SQLite: pollers appear with their identity while their worker runs and
stay listed five minutes after it leaves or dies; the backlog rises while no worker takes the
tasks and falls once one does. Its answers have the shape of a Temporal dev server's
(tests/fixtures/devserver_describe_task_queue.json, temporal CLI 1.9.1, server 1.32.0), and so
do its errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from temporalio import activity, workflow
from temporalio.api.enums.v1 import task_queue_pb2 as tq_enums
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from ui_support import free_port, http, start_ui, stop

from dbosify._engine import task_queues
from dbosify._store import get_store, resolve_url
from dbosify._worker import liveness

pytestmark = pytest.mark.timeout(90)

DEV = json.loads((Path(__file__).parent / "fixtures" / "devserver_describe_task_queue.json").read_text())
ENHANCED = tq_enums.DESCRIBE_TASK_QUEUE_MODE_ENHANCED
WORKFLOW, ACTIVITY = tq_enums.TASK_QUEUE_TYPE_WORKFLOW, tq_enums.TASK_QUEUE_TYPE_ACTIVITY


@activity.defn
async def echo(text: str) -> str:
    return text


@workflow.defn
class CallsOnce:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(echo, text, start_to_close_timeout=timedelta(seconds=20))


def _tq() -> str:
    return f"tq-{uuid.uuid4().hex[:8]}"


def _worker(client: Client, tq: str, identity: str, *, workflows: bool = True, activities: bool = True) -> Worker:
    return Worker(
        client, task_queue=tq, identity=identity, workflows=[CallsOnce] if workflows else [],
        activities=[echo] if activities else [], workflow_runner=UnsandboxedWorkflowRunner(),
    )


async def _describe(client: Client, tq: str, **kw: Any) -> rr.DescribeTaskQueueResponse:
    kw.setdefault("namespace", client.namespace)
    return await client.workflow_service.describe_task_queue(
        rr.DescribeTaskQueueRequest(task_queue=TaskQueue(name=tq), **kw)
    )


async def _types(client: Client, tq: str) -> dict[int, Any]:
    """The ENHANCED answer's pollers and stats per task type."""
    resp = await _describe(client, tq, api_mode=ENHANCED, report_pollers=True, report_stats=True)
    return dict(resp.versions_info[""].types_info)


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _start(client: Client, tq: str, n: int) -> list[Any]:
    return [
        await client.start_workflow(CallsOnce.run, f"t{i}", id=f"{tq}-{i}", task_queue=tq) for i in range(n)
    ]


# -- the RPC ---------------------------------------------------------------------------------


async def test_backlog_rises_without_a_worker_and_falls_with_one_and_pollers_appear(client: Client) -> None:
    tq = _tq()
    handles = await _start(client, tq, 3)
    await asyncio.sleep(0.2)
    resp = await _describe(client, tq, report_stats=True, include_task_queue_status=True)
    assert resp.stats.approximate_backlog_count == 3  # before: UNIMPLEMENTED
    assert resp.stats.approximate_backlog_age.ToTimedelta() >= timedelta(seconds=0.2)
    assert resp.stats_by_priority_key[3] == resp.stats
    assert resp.task_queue_status.backlog_count_hint == 3
    assert list(resp.pollers) == []

    # A worker of workflows only takes the runs; their activities wait for a worker of activities.
    async with _worker(client, tq, "wf-worker", activities=False):
        async def activities_wait() -> bool:
            types = await _types(client, tq)
            return types[WORKFLOW].stats.approximate_backlog_count == 0 and (
                types[ACTIVITY].stats.approximate_backlog_count == 3)

        await _until(activities_wait, "three activity tasks in the backlog")
        types = await _types(client, tq)
        assert [p.identity for p in types[WORKFLOW].pollers] == ["wf-worker"]
        assert list(types[ACTIVITY].pollers) == []
        assert types[ACTIVITY].stats.approximate_backlog_age.ToTimedelta() > timedelta(0)
        seen = types[WORKFLOW].pollers[0].last_access_time.ToDatetime().timestamp()
        assert abs(seen - time.time()) < 5  # a live worker's last access is its last beat
        assert types[WORKFLOW].pollers[0].rate_per_second == 100_000  # no limit, as Temporal says it

        async with _worker(client, tq, "act-worker", workflows=False):
            assert [await h.result() for h in handles] == ["t0", "t1", "t2"]
            types = await _types(client, tq)
            assert types[ACTIVITY].stats.approximate_backlog_count == 0
            assert types[ACTIVITY].stats.approximate_backlog_age.ToTimedelta() == timedelta(0)
            assert [p.identity for p in types[ACTIVITY].pollers] == ["act-worker"]
            legacy = await _describe(client, tq, task_queue_type=ACTIVITY)
            assert [p.identity for p in legacy.pollers] == ["act-worker"]
    left = time.time()

    # Both left: still listed, with their last access, as a dev server lists a poller after its last poll.
    types = await _types(client, tq)
    assert [p.identity for p in types[WORKFLOW].pollers] == ["wf-worker"]
    assert [p.identity for p in types[ACTIVITY].pollers] == ["act-worker"]
    assert types[ACTIVITY].pollers[0].last_access_time.ToDatetime().timestamp() <= left + 0.01
    assert types[WORKFLOW].stats.approximate_backlog_count == 0


async def test_a_poller_is_listed_for_five_minutes_after_its_last_access(client: Client, db_url: str) -> None:
    tq = _tq()
    async with _worker(client, tq, "leaves"):
        await _until(lambda: _identities(client, tq), "the worker's row")
    store = get_store(resolve_url(db_url))
    assert await _identities(client, tq) == ["leaves"]

    # Its last access six minutes ago: no longer listed, and dropped at the next departure.
    await store.transact(client.namespace, lambda tx: tx.execute(
        "UPDATE pollers SET last_access = %s WHERE task_queue = %s", (time.time() - 360, tq)))
    assert await _identities(client, tq) == []
    async with _worker(client, tq, "next"):
        await _until(lambda: _identities(client, tq), "the next worker's row")
    assert await _identities(client, tq) == ["next"]
    rows = await store.transact(client.namespace, lambda tx: tx.all(
        "SELECT identity FROM pollers WHERE task_queue = %s", (tq,)))
    assert [r[0] for r in rows] == ["next"]


async def test_a_dead_worker_stays_listed_from_its_last_beat(client: Client, db_url: str) -> None:
    """A worker whose beats stopped (its machine died): reaped, it stays listed until five
    minutes after its last beat; one dead for longer is not listed at all."""
    tq = _tq()
    store = get_store(resolve_url(db_url))
    now = time.time()
    bits = task_queues.type_bits([task_queues.WORKFLOW, task_queues.ACTIVITY])

    def dead_workers(tx: Any) -> None:
        for worker_id, identity, beat in (("w-recent", "died-recently", now - 10), ("w-old", "died-long-ago", now - 400)):
            tx.execute(
                "INSERT INTO workers (worker_id, task_queue, heartbeat_at, identity, task_types, build_id)"
                " VALUES (%s, %s, %s, %s, %s, '')", (worker_id, tq, beat, identity, bits))

    await store.transact(client.namespace, dead_workers)
    assert await _identities(client, tq) == ["died-recently"]  # its row's last beat
    await store.transact(client.namespace, lambda tx: liveness.reap(tx, own=set()))
    left = await store.transact(client.namespace, lambda tx: tx.all(
        "SELECT worker_id FROM workers WHERE task_queue = %s", (tq,)))
    assert left == []  # both reaped
    resp = await _describe(client, tq)
    assert [p.identity for p in resp.pollers] == ["died-recently"]
    assert abs(resp.pollers[0].last_access_time.ToDatetime().timestamp() - (now - 10)) < 0.01


async def _identities(client: Client, tq: str) -> list[str]:
    return [p.identity for p in (await _describe(client, tq)).pollers]


# -- as the dev server answers ---------------------------------------------------------------


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for v in value:
            out.update(_leaves(v, f"{prefix}[]"))
        return out
    return {prefix: value}


# What the dev server fills that this engine has not: rates (not measured), the queue's rate limit
# (none applied), and the matching service's own counters.
NOT_HAD = {
    "effectiveRateLimit.requestsPerSecond", "effectiveRateLimit.rateLimitSource",
    "taskQueueStatus.readLevel", "taskQueueStatus.ratePerSecond", "taskQueueStatus.taskIdBlock.startId",
    "taskQueueStatus.taskIdBlock.endId",
}


def _shape(answer: dict[str, Any]) -> set[str]:
    return {k for k in _leaves(answer) if not k.endswith(("tasksAddRate", "tasksDispatchRate"))} - NOT_HAD


async def test_answers_have_the_dev_servers_shape(client: Client) -> None:
    tq = _tq()
    await _start(client, tq, 3)
    await asyncio.sleep(0.2)
    backlog = MessageToDict(await _describe(client, tq, report_stats=True, include_task_queue_status=True))
    assert _shape(backlog) == _shape(DEV["default_three_workflow_tasks_no_worker"]["response"])
    assert backlog["versioningInfo"] == DEV["default_three_workflow_tasks_no_worker"]["response"]["versioningInfo"]
    enhanced = MessageToDict(await _describe(client, tq, api_mode=ENHANCED, report_stats=True, report_pollers=True))
    assert _shape(enhanced) == _shape(DEV["enhanced_three_workflow_tasks_no_worker"]["response"])

    live = _tq()
    async with _worker(client, live, "fixture-worker"):
        await client.execute_workflow(CallsOnce.run, "x", id=f"{live}-0", task_queue=live)
        answer = MessageToDict(await _describe(
            client, live, api_mode=ENHANCED, report_stats=True, report_pollers=True,
            task_queue_types=[WORKFLOW, ACTIVITY]))
        assert _shape(answer) == _shape(DEV["enhanced_live_worker"]["response"])
    after = MessageToDict(await _describe(client, live, task_queue_type=ACTIVITY))
    assert _shape(after) == _shape(DEV["default_activity_after_worker_left"]["response"])


async def test_bad_requests_are_refused_as_the_dev_server_refuses_them(client: Client) -> None:
    asked: dict[str, dict[str, Any]] = {
        "unknown namespace": {"namespace": "nope", "task_queue": TaskQueue(name="x")},
        "unknown namespace, empty task queue name": {"namespace": "nope", "task_queue": TaskQueue(name="")},
        "empty task queue name": {"task_queue": TaskQueue(name="")},
        "empty task queue name, ENHANCED": {"task_queue": TaskQueue(name=""), "api_mode": ENHANCED},
        "no task queue": {},
        "task queue name of 1001 bytes": {"task_queue": TaskQueue(name="x" * 1001)},
        "sticky kind, ENHANCED": {
            "task_queue": TaskQueue(name="x", kind=tq_enums.TASK_QUEUE_KIND_STICKY), "api_mode": ENHANCED},
    }
    assert set(asked) == {e["request"] for e in DEV["errors"]}
    for expected in DEV["errors"]:
        kw = {"namespace": client.namespace, **asked[expected["request"]]}
        with pytest.raises(RPCError) as got:
            await client.workflow_service.describe_task_queue(rr.DescribeTaskQueueRequest(**kw))
        assert got.value.status == RPCStatusCode[expected["response"]["status"]], expected
        # dbosify's NOT_FOUND adds how to register the namespace after the dev server's words
        assert got.value.message.startswith(expected["response"]["message"]), (expected, got.value.message)


# -- the CLI ---------------------------------------------------------------------------------


async def _cli(db_url: str, namespace: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOSIFY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbosify", "task-queue", "describe", *args, "--db", db_url, "-n", namespace,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_describes_pollers_and_backlog_like_temporal(client: Client, db_url: str) -> None:
    tq = _tq()
    await _start(client, tq, 2)
    async with _worker(client, tq, "cli-act-worker", workflows=False):
        await _until(lambda: _has_poller(client, tq, ACTIVITY), "the activity worker's row")
        rc, out, err = await _cli(db_url, client.namespace, "-t", tq)
        assert rc == 0, err
        lines = out.splitlines()
        # The `temporal task-queue describe` tables (their headers as the dev server's CLI prints them).
        assert lines[0] == "Task Queue Statistics:"
        assert lines[1].split() == ["BuildID", "TaskQueueType", "ApproximateBacklogCount", "ApproximateBacklogAge",
                                    "BacklogIncreaseRate", "TasksAddRate", "TasksDispatchRate"]
        assert lines[2].split()[:3] == ["UNVERSIONED", "workflow", "2"]
        assert lines[3].split() == ["UNVERSIONED", "activity", "0", "0s", "0", "0", "0"]
        assert lines[4] == "Pollers:"
        assert lines[5].split() == ["BuildID", "TaskQueueType", "Identity", "LastAccessTime", "RatePerSecond"]
        assert lines[6].split()[:3] == ["UNVERSIONED", "activity", "cli-act-worker"]
        assert lines[6].split()[-1] == "100000" and len(lines) == 7

        rc, out, err = await _cli(db_url, client.namespace, "-t", tq, "-o", "json")
        assert rc == 0, err
        doc = json.loads(out)
        assert set(doc) == {"reachability", "pollers", "stats"} and doc["reachability"] is None
        assert [(p["taskQueueType"], p["identity"], p["ratePerSecond"]) for p in doc["pollers"]] == [
            ("activity", "cli-act-worker", 100000)]
        assert set(doc["pollers"][0]) == {"buildId", "taskQueueType", "identity", "lastAccessTime", "ratePerSecond"}
        workflow_stats = doc["stats"][0]
        assert workflow_stats["taskQueueType"] == "workflow" and workflow_stats["approximateBacklogCount"] == 2
        assert workflow_stats["approximateBacklogAge"].endswith("s") and workflow_stats["approximateBacklogAge"] != "0s"

    rc, out, err = await _cli(db_url, client.namespace, "-t", tq, "--task-queue-type", "workflow", "--disable-stats")
    assert rc == 0, err
    assert out.splitlines()[0] == "Pollers:" and len(out.splitlines()) == 2  # nobody polled workflows

    rc, out, err = await _cli(db_url, client.namespace, "-t", "")
    assert (rc, out) == (1, "") and err == "Error: unable to describe task queue: missing task queue name\n"
    rc, out, err = await _cli(db_url, "nope", "-t", tq)
    assert rc == 1 and err.startswith("Error: unable to describe task queue: Namespace nope is not found.")
    assert len(err.splitlines()) == 1


async def _has_poller(client: Client, tq: str, task_type: int) -> bool:
    return bool((await _describe(client, tq, task_queue_type=task_type)).pollers)


def test_go_style_numbers_and_durations() -> None:
    from dbosify.cli.task_queue import go_duration, go_float

    assert [go_duration(s) for s in (0, 0.25, 1.568496352, 123.5, 3600)] == [
        "0s", "250ms", "1.568496352s", "2m3.5s", "1h0m0s"]
    assert [go_float(v) for v in (0.0, 100000.0, 1.2751121520996094)] == ["0", "100000", "1.2751122"]


# -- the web view ----------------------------------------------------------------------------


@asynccontextmanager
async def _ui(db_url: str, namespace: str) -> AsyncIterator[int]:
    port = free_port()
    proc, _ = await start_ui("--db", db_url, "-n", namespace, port=port)
    try:
        yield port
    finally:
        await stop(proc)


async def test_ui_task_queue_page_shows_backlog_and_pollers_escaped(client: Client, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the page reads the RPC tested on both stores above")
    tq = _tq()
    handles = await _start(client, tq, 2)
    identity = '<b>"w&1</b>'
    async with _worker(client, tq, identity, workflows=False), _ui(db_url, client.namespace) as port:
        await _until(lambda: _has_poller(client, tq, ACTIVITY), "the activity worker's row")
        reply = await http(port, "GET", f"/task-queue?name={tq}")
        assert reply.status == 200
        assert reply.header("x-frame-options") == "DENY"
        assert "frame-ancestors 'none'" in (reply.header("content-security-policy") or "")
        page = reply.body.decode()
        assert '<tr data-type="workflow"><td>workflow</td>\n<td class="backlog-count">2</td>' in page
        assert '<td class="identity">&lt;b&gt;&quot;w&amp;1&lt;/b&gt;</td>' in page and identity not in page
        assert page.count("<script") == 1

        run = await http(port, "GET", f"/run?wid={handles[0].id}")  # the run's page links to its queue
        assert f'<a id="task-queue-link" href="/task-queue?name={tq}">{tq}</a>' in run.body.decode()

        for path in ("/task-queue", "/task-queue?name=", "/task-queue?name=a%00b", f"/task-queue?name={'q' * 1001}"):
            bad = await http(port, "GET", path)
            assert bad.status == 400, (path, bad.status)
            assert bad.header("x-frame-options") == "DENY"
