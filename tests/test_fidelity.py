"""Behaviour checked against a Temporal dev server (temporal CLI 1.9.1, server 1.32.0, temporalio
1.35): the dev server's observations are kept here as constants (and, for DescribeNamespace, as a
fixture saved with protobuf's MessageToJson), and each test expects them of dbosify.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from temporalio import activity, workflow
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, RetryState, TimeoutError, TimeoutType
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

FIXTURES = Path(__file__).parent / "fixtures"

# -- updates admitted while the closing workflow task runs ---------------------------------------

# Dev server: an update admitted while the task that continues as new runs is handled by the new
# run and its caller gets that run's result; when the task completes, fails or cancels the run (or
# the run is terminated) it gets NOT_FOUND with these words.
DEV_UPDATE_ABORTED = (RPCStatusCode.NOT_FOUND, "workflow update was aborted by closing workflow")


@workflow.defn
class ClosesUnderAnUpdate:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.run
    async def run(self, how: str, generation: int) -> str:
        if generation:
            await workflow.wait_condition(lambda: bool(self.seen))
            await workflow.wait_condition(workflow.all_handlers_finished)
            return f"run {generation} saw {self.seen}"
        time.sleep(1.5)  # the update is admitted while this first task runs
        if how == "continue":
            workflow.continue_as_new(args=[how, generation + 1])
        return f"run {generation} saw {self.seen}"

    @workflow.update
    async def note(self, x: str) -> str:
        self.seen.append(x)
        return f"{x} handled by {workflow.info().run_id}"


async def _update_during_first_task(client: Client, how: str) -> tuple[Any, Any]:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[ClosesUnderAnUpdate],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(
            ClosesUnderAnUpdate.run, args=[how, 0], id=f"w-{uuid.uuid4()}", task_queue=tq
        )
        await asyncio.sleep(0.5)
        try:
            answer: Any = await asyncio.wait_for(handle.execute_update(ClosesUnderAnUpdate.note, "u1"), 20)
        except RPCError as err:
            answer = (err.status, err.message)
        return answer, await asyncio.wait_for(handle.result(), 20)


async def test_update_admitted_during_continue_as_new_goes_to_the_new_run(client: Client) -> None:
    answer, result = await _update_during_first_task(client, "continue")
    assert isinstance(answer, str), answer  # before: (NOT_FOUND, "workflow execution already completed")
    assert result == "run 1 saw ['u1']"


async def test_update_admitted_during_completion_is_aborted_in_temporals_words(client: Client) -> None:
    answer, result = await _update_during_first_task(client, "complete")
    assert answer == DEV_UPDATE_ABORTED  # before: "workflow execution already completed"
    assert result == "run 0 saw []"


# -- activity timeouts ---------------------------------------------------------------------------

@activity.defn
async def hangs() -> None:
    await asyncio.sleep(60)


@workflow.defn
class TimesOut:
    @workflow.run
    async def run(self, opts: dict[str, float]) -> dict[str, Any]:
        kw: Any = {k: timedelta(seconds=v) for k, v in opts.items() if k.endswith("timeout")}
        if "max_attempts" in opts:
            kw["retry_policy"] = RetryPolicy(maximum_attempts=int(opts["max_attempts"]))
        try:
            await workflow.execute_activity(hangs, **kw)
            return {}
        except ActivityError as err:
            cause = err.cause
            assert isinstance(cause, TimeoutError)
            inner = cause.__cause__
            return {
                "type": cause.type, "message": cause.message, "retry_state": err.retry_state,
                "cause_type": inner.type if isinstance(inner, TimeoutError) else None,
            }


# Dev server observations: (options, does a worker run activities) -> what the workflow sees.
NO_TIME = "Not enough time to schedule next retry before activity ScheduleToClose timeout, giving up retrying"
DEV_TIMEOUTS: dict[str, tuple[dict[str, float], bool, dict[str, Any]]] = {
    # schedule-to-start defaults to schedule-to-close and is checked first (before: SCHEDULE_TO_CLOSE)
    "schedule_to_close_only_never_picked_up": (
        {"schedule_to_close_timeout": 2}, False,
        {"type": TimeoutType.SCHEDULE_TO_START, "message": "activity ScheduleToStart timeout",
         "retry_state": RetryState.TIMEOUT, "cause_type": None},
    ),
    # schedule-to-start is capped by schedule-to-close (before: SCHEDULE_TO_CLOSE)
    "schedule_to_start_longer_than_schedule_to_close": (
        {"schedule_to_start_timeout": 5, "schedule_to_close_timeout": 2}, False,
        {"type": TimeoutType.SCHEDULE_TO_START, "message": "activity ScheduleToStart timeout",
         "retry_state": RetryState.TIMEOUT, "cause_type": None},
    ),
    # no room left for a retry: reported as schedule-to-close in these words (before:
    # "activity ScheduleToClose timeout")
    "schedule_to_close_while_running": (
        {"schedule_to_close_timeout": 2}, True,
        {"type": TimeoutType.SCHEDULE_TO_CLOSE, "message": NO_TIME,
         "retry_state": RetryState.TIMEOUT, "cause_type": None},
    ),
    # the previous attempt's failure is the cause (before: no cause)
    "start_to_close_second_attempt": (
        {"start_to_close_timeout": 1, "max_attempts": 2}, True,
        {"type": TimeoutType.START_TO_CLOSE, "message": "activity StartToClose timeout",
         "retry_state": RetryState.MAXIMUM_ATTEMPTS_REACHED, "cause_type": TimeoutType.START_TO_CLOSE},
    ),
    # start-to-close and heartbeat due at once: start-to-close (already so before)
    "start_to_close_with_heartbeat_due_at_once": (
        {"start_to_close_timeout": 2, "heartbeat_timeout": 2, "max_attempts": 1}, True,
        {"type": TimeoutType.START_TO_CLOSE, "message": "activity StartToClose timeout",
         "retry_state": RetryState.MAXIMUM_ATTEMPTS_REACHED, "cause_type": None},
    ),
}


async def test_activity_timeouts_as_the_dev_server_reports_them(client: Client) -> None:
    async def one(name: str) -> tuple[str, dict[str, Any]]:
        opts, runs_activities, _ = DEV_TIMEOUTS[name]
        tq = f"tq-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=tq, workflows=[TimesOut], activities=[hangs],
                          no_remote_activities=not runs_activities,
                          workflow_runner=UnsandboxedWorkflowRunner()):
            got = await client.execute_workflow(
                TimesOut.run, opts, id=f"w-{uuid.uuid4()}", task_queue=tq,
                execution_timeout=timedelta(seconds=30),
            )
        return name, got

    results = dict(await asyncio.gather(*(one(n) for n in DEV_TIMEOUTS)))
    assert results == {name: expected for name, (_, _, expected) in DEV_TIMEOUTS.items()}


@activity.defn
async def quick() -> None:
    return None


@workflow.defn
class SchedulesOne:
    @workflow.run
    async def run(self, opts: dict[str, float]) -> None:
        await workflow.execute_activity(quick, **{k: timedelta(seconds=v) for k, v in opts.items()})  # type: ignore[arg-type]


# Dev server: the ActivityTaskScheduled event's timeouts (MessageToDict of the event's attributes).
DEV_SCHEDULED_TIMEOUTS = [
    ({"schedule_to_close_timeout": 3},
     {"scheduleToCloseTimeout": "3s", "scheduleToStartTimeout": "3s", "startToCloseTimeout": "3s",
      "heartbeatTimeout": "0s"}),
    ({"schedule_to_close_timeout": 3, "schedule_to_start_timeout": 5, "start_to_close_timeout": 7,
      "heartbeat_timeout": 9},
     {"scheduleToCloseTimeout": "3s", "scheduleToStartTimeout": "3s", "startToCloseTimeout": "3s",
      "heartbeatTimeout": "3s"}),
    ({"start_to_close_timeout": 3, "heartbeat_timeout": 9},
     {"scheduleToCloseTimeout": "0s", "scheduleToStartTimeout": "0s", "startToCloseTimeout": "3s",
      "heartbeatTimeout": "3s"}),
    ({"start_to_close_timeout": 3, "schedule_to_start_timeout": 9},
     {"scheduleToCloseTimeout": "0s", "scheduleToStartTimeout": "9s", "startToCloseTimeout": "3s",
      "heartbeatTimeout": "0s"}),
]


async def test_scheduled_event_timeouts_filled_in_as_on_temporal(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[SchedulesOne], activities=[quick],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        for given, recorded in DEV_SCHEDULED_TIMEOUTS:
            handle = await client.start_workflow(SchedulesOne.run, given, id=f"w-{uuid.uuid4()}", task_queue=tq)
            await handle.result()
            history = await handle.fetch_history()
            attrs = next(e for e in history.events if e.HasField("activity_task_scheduled_event_attributes"))
            got = MessageToDict(attrs.activity_task_scheduled_event_attributes)
            assert {k: v for k, v in got.items() if k.endswith("Timeout")} == recorded, given


# -- DescribeNamespace -----------------------------------------------------------------------------

# What this engine does not have, so leaves unset where the dev server sets it (see
# dbosify/_server/namespace_info.py), and what it has that the dev server leaves off by default.
NOT_HAD = {
    "namespaceInfo.capabilities.workerHeartbeats",
    "namespaceInfo.capabilities.reportedProblemsSearchAttribute",
    "namespaceInfo.capabilities.pollerAutoscaling",
    "namespaceInfo.capabilities.standaloneActivityBatchOperations",
    "namespaceInfo.capabilities.standaloneActivityOperatorCommands",
    "namespaceInfo.limits.memoSizeLimitError",
    "namespaceInfo.limits.workflowTaskCompletionSizeLimitError",
}
HAD_ONLY_HERE = {"namespaceInfo.capabilities.workerPollCompleteOnShutdown"}


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    """Each set field of a MessageToJson document, by its dotted path (list items as [i])."""
    if isinstance(d, dict):
        if not d and prefix:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else k))
        return out
    if isinstance(d, list):
        out = {}
        for i, v in enumerate(d):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


async def test_describe_namespace_has_the_dev_servers_shape(client: Client) -> None:
    from google.protobuf.json_format import MessageToJson

    dev = _leaves(json.loads((FIXTURES / "devserver_describe_namespace.json").read_text()))
    resp = await client.workflow_service.describe_namespace(rr.DescribeNamespaceRequest(namespace="default"))
    ours = _leaves(json.loads(MessageToJson(resp)))
    assert set(ours) == (set(dev) - NOT_HAD) | HAD_ONLY_HERE
    for path, value in ours.items():
        if ".capabilities." in path or path.endswith(("state", "State", "Name", "supportsSchedules")):
            assert value == dev.get(path, True), path
    assert ours["namespaceInfo.limits.blobSizeLimitError"] == dev["namespaceInfo.limits.blobSizeLimitError"]
    uuid.UUID(ours["namespaceInfo.id"])  # an id like Temporal's
    # ListNamespaces shows each namespace as DescribeNamespace does.
    listed = await client.workflow_service.list_namespaces(rr.ListNamespacesRequest())
    default = next(n for n in listed.namespaces if n.namespace_info.name == "default")
    assert default == resp


async def test_namespace_capabilities_a_client_checks(client: Client) -> None:
    resp = await client.workflow_service.describe_namespace(rr.DescribeNamespaceRequest(namespace="default"))
    caps = resp.namespace_info.capabilities
    assert caps.eager_workflow_start and caps.sync_update and caps.async_update  # before: all false
    assert caps.worker_poll_complete_on_shutdown and caps.standalone_activities
    assert not caps.workflow_pause and not caps.worker_commands
