"""Workflows and Nexus services used by tests/test_nexus.py (and to record the dev server's
history fixture, tests/fixtures/nexus_devserver_history.json)."""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import nexusrpc
from temporalio import nexus, workflow
from temporalio.exceptions import ApplicationError


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
    async def crash_once(self, _ctx: nexusrpc.handler.StartOperationContext, path: str) -> str:
        # The first attempt kills its own process (SIGKILL) mid-operation; the next one answers.
        if not os.path.exists(path):
            open(path, "w").close()
            sys.stdout.flush()
            os.kill(os.getpid(), 9)
        return f"done by {os.getpid()}"


# What a Held operation's cancel handler was given: (token, the request's headers).
CANCELS: list[tuple[str, dict[str, str]]] = []


class _HoldHandler(nexusrpc.handler.OperationHandler[str, str]):
    """Starts asynchronously (the token names the input) and never completes by itself."""

    async def start(
        self, ctx: nexusrpc.handler.StartOperationContext, input: str
    ) -> nexusrpc.handler.StartOperationResultAsync:
        return nexusrpc.handler.StartOperationResultAsync(f"held-{input}")

    async def cancel(self, ctx: nexusrpc.handler.CancelOperationContext, token: str) -> None:
        CANCELS.append((token, dict(ctx.headers)))


@nexusrpc.service
class Holder:
    hold: nexusrpc.Operation[str, str]


@nexusrpc.handler.service_handler(service=Holder)
class HolderHandler:
    @nexusrpc.handler.operation_handler
    def hold(self) -> nexusrpc.handler.OperationHandler[str, str]:
        return _HoldHandler()


@workflow.defn
class HoldAndCancel:
    """Starts a Held operation with a header, cancels it once started, and waits to be ended."""

    @workflow.run
    async def run(self, name: str) -> None:
        client = workflow.create_nexus_client(endpoint=endpoint_name(workflow.info().task_queue), service=Holder)
        handle = await client.start_operation(Holder.hold, name, headers={"x-caller-trace": f"trace-{name}"})
        handle.cancel()
        await workflow.wait_condition(lambda: False)


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
        if op == "crash_once":
            return await client.execute_operation(
                Greeter.crash_once, arg, schedule_to_close_timeout=timedelta(seconds=60)
            )
        return await client.execute_operation(Greeter.fail, arg, schedule_to_close_timeout=timedelta(seconds=30))
