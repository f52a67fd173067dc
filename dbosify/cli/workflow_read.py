"""``dbosify workflow list|count|describe|show|result|query|stack``: reading runs."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from dbosify.cli import payloads
from dbosify.cli.common import (
    CliError,
    Conn,
    client_options,
    connect,
    fmt_time,
    run,
    section,
    status_name,
    table,
)
from dbosify.cli.output import echo, echo_json

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecution, WorkflowHandle

WORKFLOW_ID = click.option("--workflow-id", "-w", required=True, help="Workflow ID.")
RUN_ID = click.option("--run-id", "-r", default=None, help="Run ID (default: the latest run).")


def register(group: click.Group) -> None:
    for cmd in (list_cmd, count_cmd, describe_cmd, show_cmd, result_cmd, query_cmd, stack_cmd):
        group.add_command(cmd)


def _echo_json(value: Any) -> None:
    echo_json(payloads.dumps(value, indent=2))


# -- list, count -------------------------------------------------------------------------------


@click.command("list")
@click.option("--query", "-q", default=None, help="A List Filter, e.g. \"ExecutionStatus = 'Running'\".")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most this many runs.")
@click.option("--page-size", type=click.IntRange(min=1), default=1000, help="Runs fetched at a time.")
@client_options
def list_cmd(conn: Conn, query: str | None, limit: int | None, page_size: int) -> None:
    """Show Workflow Executions, newest first."""

    async def go() -> None:
        client = await connect(conn)
        found: list[WorkflowExecution] = []
        async for wf in client.list_workflows(query or None, limit=limit, page_size=page_size):
            found.append(wf)
        if conn.json:
            _echo_json([await payloads.decoded(wf.raw_info, client.data_converter) for wf in found])
            return
        table(
            ["Status", "WorkflowId", "RunId", "Type", "StartTime", "CloseTime"],
            [
                [status_name(wf.status), wf.id, wf.run_id, wf.workflow_type,
                 fmt_time(wf.start_time), fmt_time(wf.close_time)]
                for wf in found
            ],
        )

    run("failed listing workflows", go())


@click.command("count")
@click.option("--query", "-q", default=None, help="A List Filter; GROUP BY ExecutionStatus is allowed.")
@client_options
def count_cmd(conn: Conn, query: str | None) -> None:
    """Show the number of Workflow Executions matching a List Filter."""

    async def go() -> None:
        client = await connect(conn)
        counted = await client.count_workflows(query or None)
        groups = [
            ([payloads.jsonable(v) for v in g.group_values], g.count) for g in counted.groups
        ]
        if conn.json:
            _echo_json(
                {"count": counted.count, "groups": [{"values": v, "count": c} for v, c in groups]}
            )
            return
        click.echo(f"Total: {counted.count}")
        for values, c in groups:
            echo(f"  {', '.join(str(v) for v in values)}: {c}")

    run("failed counting workflows", go())


# -- describe, show, result ------------------------------------------------------------------


async def _handle(conn: Conn, workflow_id: str, run_id: str | None) -> tuple[Client, WorkflowHandle[Any, Any]]:
    client = await connect(conn)
    return client, client.get_workflow_handle(workflow_id, run_id=run_id)


async def close_details(handle: WorkflowHandle[Any, Any], client: Client) -> list[tuple[str, Any]]:
    """Result or failure of a closed run, from its close event, as (key, text) pairs."""
    from temporalio.client import WorkflowHistoryEventFilterType

    async for event in handle.fetch_history_events(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
    ):
        details = await payloads.event_details(event, client.data_converter)
        pairs: list[tuple[str, Any]] = []
        if "result" in details:
            result = details["result"]  # a run returns one value: shown unwrapped, as `result` does
            pairs.append(("Result", payloads.dumps(result[0] if len(result) == 1 else result)))
        if "failure" in details:
            pairs.append(("Failure", _failure_text(details["failure"])))
        if "reason" in details:
            pairs.append(("Reason", details["reason"]))
        if "newExecutionRunId" in details:
            pairs.append(("NewRunId", details["newExecutionRunId"]))
        return pairs
    return []


def _failure_text(failure: dict[str, Any]) -> str:
    parts = [str(failure.get("message", ""))]
    cause = failure.get("cause")
    while isinstance(cause, dict):
        parts.append(str(cause.get("message", "")))
        cause = cause.get("cause")
    return ": ".join(p for p in parts if p)


@click.command("describe")
@WORKFLOW_ID
@RUN_ID
@client_options
def describe_cmd(conn: Conn, workflow_id: str, run_id: str | None) -> None:
    """Show a Workflow Execution's summary, pending activities and outcome."""

    async def go() -> None:
        client, handle = await _handle(conn, workflow_id, run_id)
        desc = await handle.describe()
        raw = desc.raw_description
        if conn.json:
            _echo_json(await payloads.decoded(raw, client.data_converter))
            return
        info = raw.workflow_execution_info
        parent = info.parent_execution if info.HasField("parent_execution") else None
        section("Execution Info:", [
            ("WorkflowId", desc.id),
            ("RunId", desc.run_id),
            ("Type", desc.workflow_type),
            ("Namespace", conn.namespace),
            ("TaskQueue", desc.task_queue),
            ("Status", status_name(desc.status)),
            ("StartTime", fmt_time(desc.start_time)),
            ("CloseTime", fmt_time(desc.close_time)),
            ("HistoryLength", desc.history_length),
            ("ParentWorkflowId", parent.workflow_id if parent else None),
            ("ParentRunId", parent.run_id if parent else None),
        ])
        if desc.status is not None and desc.close_time is not None:
            section("Results:", await close_details(handle, client))
        if raw.pending_activities:
            click.echo(f"Pending Activities: {len(raw.pending_activities)}")
            for pa in raw.pending_activities:
                pairs: list[tuple[str, Any]] = [
                    ("ActivityId", pa.activity_id),
                    ("Type", pa.activity_type.name),
                    ("State", payloads.enum_words(_activity_state(pa.state), "PENDING_ACTIVITY_STATE_")),
                    ("Attempt", pa.attempt),
                ]
                if pa.HasField("last_failure"):
                    failure = await payloads.decoded(pa.last_failure, client.data_converter)
                    pairs.append(("LastFailure", _failure_text(failure)))
                section(None, pairs)

    run("failed describing workflow", go())


def _activity_state(state: int) -> str:
    from temporalio.api.enums.v1 import workflow_pb2

    return workflow_pb2.PendingActivityState.Name(state)  # type: ignore[arg-type]


async def print_events(
    handle: WorkflowHandle[Any, Any], client: Client, *, follow: bool, detailed: bool
) -> None:
    async for event in handle.fetch_history_events(wait_new_event=follow):
        details = await payloads.event_details(event, client.data_converter)
        head = f"{event.event_id:>5}  {fmt_time(payloads.event_time(event))}  {payloads.event_type(event)}"
        if detailed:
            echo(head)
            for line in payloads.dumps(details, indent=2).splitlines():
                echo(f"         {line}")
        else:
            text = payloads.dumps(details)
            echo(f"{head:<72}  {text if len(text) <= 160 else text[:157] + '...'}")


@click.command("show")
@WORKFLOW_ID
@RUN_ID
@click.option("--follow", "-f", is_flag=True, help="Follow the run's progress as it happens.")
@click.option("--detailed", is_flag=True, help="Every event's attributes in full.")
@client_options
def show_cmd(conn: Conn, workflow_id: str, run_id: str | None, follow: bool, detailed: bool) -> None:
    """Show a Workflow Execution's Event History (JSON output can be replayed)."""

    async def go() -> None:
        client, handle = await _handle(conn, workflow_id, run_id)
        if conn.json:
            history = await handle.fetch_history()
            echo_json(history.to_json())
            return
        click.echo("Progress:")
        await print_events(handle, client, follow=follow, detailed=detailed)
        desc = await handle.describe()
        if desc.close_time is not None:
            section("Results:", [("Status", status_name(desc.status)),
                                 *await close_details(handle, client)])

    run("failed showing workflow", go())


async def outcome(client: Client, handle: WorkflowHandle[Any, Any]) -> tuple[str, dict[str, Any]]:
    """Wait for the run (following continue-as-new) to close: its status and result or failure."""
    from temporalio.client import WorkflowFailureError

    try:
        value = await handle.result()
    except WorkflowFailureError as exc:
        desc = await client.get_workflow_handle(handle.id).describe()
        return status_name(desc.status), {"failure": _exc_text(exc.cause)}
    return "Completed", {"result": payloads.jsonable(value)}


def _exc_text(exc: BaseException) -> str:
    parts = [str(exc)]
    cause = exc.__cause__
    while cause is not None:
        parts.append(str(cause))
        cause = cause.__cause__
    return ": ".join(p for p in parts if p)


def print_outcome(conn: Conn, status: str, result: dict[str, Any]) -> None:
    if conn.json:
        _echo_json({"status": status, **result})
    else:
        pairs: list[tuple[str, Any]] = [("Status", status)]
        if "result" in result:
            pairs.append(("Result", payloads.dumps(result["result"])))
        if "failure" in result:
            pairs.append(("Failure", result["failure"]))
        section("Results:", pairs)
    if status != "Completed":
        raise CliError(f"workflow {status.lower()}")


@click.command("result")
@WORKFLOW_ID
@RUN_ID
@client_options
def result_cmd(conn: Conn, workflow_id: str, run_id: str | None) -> None:
    """Wait for a Workflow Execution to close and show its result."""

    async def go() -> tuple[str, dict[str, Any]]:
        client, handle = await _handle(conn, workflow_id, run_id)
        await handle.describe()  # a missing run fails here, with its not-found message
        return await outcome(client, handle)

    print_outcome(conn, *run("failed getting workflow result", go()))


# -- query, stack ------------------------------------------------------------------------------

REJECT = click.Choice(["not_open", "not_completed_cleanly"])


async def run_query(
    conn: Conn, workflow_id: str, run_id: str | None, name: str, args: list[Any],
    reject: str | None, timeout: float,
) -> Any:
    from temporalio.client import WorkflowQueryRejectedError
    from temporalio.common import QueryRejectCondition

    client, handle = await _handle(conn, workflow_id, run_id)
    condition = QueryRejectCondition[reject.upper()] if reject else None
    try:
        return await handle.query(
            name, args=args, reject_condition=condition, rpc_timeout=timedelta(seconds=timeout)
        )
    except WorkflowQueryRejectedError as exc:
        raise CliError(f"query rejected: the workflow is {status_name(exc.status).lower()}") from None


TIMEOUT = click.option(
    "--command-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
    help="Seconds to wait for a worker to answer.",
)


@click.command("query")
@WORKFLOW_ID
@RUN_ID
@click.option("--name", "--type", "name", required=True, help="Query type (handler name).")
@click.option("--input", "-i", "inputs", multiple=True, help="A JSON argument; repeat for more.")
@click.option("--input-file", "input_files", multiple=True, help="A file holding a JSON argument.")
@click.option("--reject-condition", type=REJECT, default=None, help="Reject the query in these states.")
@TIMEOUT
@client_options
def query_cmd(
    conn: Conn, workflow_id: str, run_id: str | None, name: str, inputs: tuple[str, ...],
    input_files: tuple[str, ...], reject_condition: str | None, command_timeout: float,
) -> None:
    """Query a Workflow Execution (running or closed: a worker replays it)."""
    try:
        args = payloads.parse_inputs(inputs, input_files)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    value = run("failed querying workflow", run_query(
        conn, workflow_id, run_id, name, args, reject_condition, command_timeout))
    if conn.json:
        _echo_json({"queryResult": payloads.jsonable(value)})
    else:
        section("Query result:", [("QueryResult", payloads.dumps(value))])


@click.command("stack")
@WORKFLOW_ID
@RUN_ID
@click.option("--reject-condition", type=REJECT, default=None, help="Reject the query in these states.")
@TIMEOUT
@client_options
def stack_cmd(
    conn: Conn, workflow_id: str, run_id: str | None, reject_condition: str | None,
    command_timeout: float,
) -> None:
    """Show the run's stack trace (the __stack_trace query; needs a worker)."""
    value = run("failed querying workflow", run_query(
        conn, workflow_id, run_id, "__stack_trace", [], reject_condition, command_timeout))
    if conn.json:
        _echo_json({"stackTrace": value})
    else:
        echo(str(value).rstrip(), lines=True)
