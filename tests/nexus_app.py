"""Workflows and Nexus services used by tests/test_nexus.py (and to record the dev server's
history fixture, tests/fixtures/nexus_devserver_history.json)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

import nexusrpc
from temporalio import nexus, workflow
from temporalio.exceptions import ApplicationError, NexusOperationError


@workflow.defn
class Echo:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"echo {name}"


@workflow.defn
class Parked:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def release(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, name: str) -> str:
        try:
            await workflow.wait_condition(lambda: self.go)
        except asyncio.CancelledError:
            if not name.startswith("stubborn"):
                raise
            # A stubborn run takes note of a cancel request and keeps waiting for its signal.
            await workflow.wait_condition(lambda: self.go)
        return f"parked {name}"


@nexusrpc.handler.service_handler
class Greeter:
    @nexusrpc.handler.sync_operation
    async def hello(self, _ctx: nexusrpc.handler.StartOperationContext, name: str) -> str:
        return f"Hello, {name}!"

    @nexus.workflow_run_operation
    async def echo(self, ctx: nexus.WorkflowRunOperationContext, name: str) -> nexus.WorkflowHandle[str]:
        return await ctx.start_workflow(Echo.run, name, id=f"echo-{ctx.request_id}")

    @nexus.workflow_run_operation
    async def park(self, ctx: nexus.WorkflowRunOperationContext, name: str) -> nexus.WorkflowHandle[str]:
        return await ctx.start_workflow(Parked.run, name, id=f"park-{name}")

    @nexusrpc.handler.sync_operation
    async def fail(self, _ctx: nexusrpc.handler.StartOperationContext, kind: str) -> str:
        if kind == "bad-request":
            raise nexusrpc.HandlerError("no good", type=nexusrpc.HandlerErrorType.BAD_REQUEST)
        if kind == "operation":
            raise nexusrpc.OperationError("refused", state=nexusrpc.OperationErrorState.FAILED)
        if kind.startswith("flaky:"):
            # Fails with a retryable handler error until the marker file exists, then creates it.
            path = kind.split(":", 1)[1]
            if not os.path.exists(path):
                open(path, "w").close()
                raise nexusrpc.HandlerError("try again", type=nexusrpc.HandlerErrorType.UNAVAILABLE)
            return "recovered"
        raise ApplicationError("boom", non_retryable=True)

    @nexusrpc.handler.sync_operation
    async def deadline(self, ctx: nexusrpc.handler.StartOperationContext, _arg: str) -> str:
        return ctx.request_deadline.isoformat() if ctx.request_deadline else "none"

    @nexusrpc.handler.sync_operation
    async def crash_once(self, _ctx: nexusrpc.handler.StartOperationContext, path: str) -> str:
        # The first attempt kills its own process (SIGKILL) mid-operation; the next one answers.
        if not os.path.exists(path):
            open(path, "w").close()
            sys.stdout.flush()
            os.kill(os.getpid(), 9)
        return f"done by {os.getpid()}"


# Headers each cancel request of a Held operation came with, by operation token.
CANCEL_HEADERS: dict[str, dict[str, str]] = {}


class _HeldHandler(nexusrpc.handler.OperationHandler[str, str]):
    """An operation that starts asynchronously, never completes, and notes its cancel requests."""

    async def start(
        self, ctx: nexusrpc.handler.StartOperationContext, input: str
    ) -> nexusrpc.handler.StartOperationResultAsync:
        return nexusrpc.handler.StartOperationResultAsync(token=f"held-{input}")

    async def cancel(self, ctx: nexusrpc.handler.CancelOperationContext, token: str) -> None:
        CANCEL_HEADERS[token] = dict(ctx.headers)
        if "refuse" in token:
            raise nexusrpc.HandlerError("will not cancel", type=nexusrpc.HandlerErrorType.BAD_REQUEST)


@nexusrpc.service
class HeldService:
    held: nexusrpc.Operation[str, str]


@nexusrpc.handler.service_handler(service=HeldService)
class Held:
    @nexusrpc.handler.operation_handler
    def held(self) -> nexusrpc.handler.OperationHandler[str, str]:
        return _HeldHandler()


def endpoint_name(task_queue: str) -> str:
    return f"ep-{task_queue}".replace("_", "-")


@workflow.defn
class Caller:
    @workflow.run
    async def run(self, op: str, arg: str) -> str:
        client = workflow.create_nexus_client(endpoint=endpoint_name(workflow.info().task_queue), service=Greeter)
        if op == "hello":
            return await client.execute_operation(Greeter.hello, arg)
        if op == "echo":
            return await client.execute_operation(Greeter.echo, arg)
        if op == "park":
            return await client.execute_operation(Greeter.park, arg)
        if op == "park_cancel":
            handle = await client.start_operation(Greeter.park, arg)
            handle.cancel()
            try:
                return await handle
            except (asyncio.CancelledError, NexusOperationError):
                return "cancelled"
        if op == "park_wait_requested":
            handle = await client.start_operation(
                Greeter.park, arg, cancellation_type=workflow.NexusOperationCancellationType.WAIT_REQUESTED
            )
            handle.cancel()
            await workflow.sleep(0.1)  # a later workflow task sees the handler's answer
            try:
                return await handle
            except NexusOperationError as err:
                return f"resolved: {type(err.cause).__name__}"
        if op == "held_wait_requested":
            held = workflow.create_nexus_client(endpoint=endpoint_name(workflow.info().task_queue), service=HeldService)
            hh = await held.start_operation(
                HeldService.held, arg, cancellation_type=workflow.NexusOperationCancellationType.WAIT_REQUESTED
            )
            hh.cancel()
            await workflow.sleep(0.1)  # a later workflow task sees the handler's answer
            try:
                return await hh
            except NexusOperationError as err:
                return f"resolved: {type(err.cause).__name__}"
        if op == "held_cancel":
            held = workflow.create_nexus_client(endpoint=endpoint_name(workflow.info().task_queue), service=HeldService)
            handle = await held.start_operation(HeldService.held, arg, headers={"x-note": "kept"})
            handle.cancel()
            return await handle
        if op == "deadline":
            return await client.execute_operation(Greeter.deadline, arg)
        if op == "crash_once":
            return await client.execute_operation(
                Greeter.crash_once, arg, schedule_to_close_timeout=timedelta(seconds=60)
            )
        return await client.execute_operation(Greeter.fail, arg, schedule_to_close_timeout=timedelta(seconds=30))
