"""``dbosify workflow start|execute|signal|update|cancel|terminate|delete|reset``: changing runs."""

from __future__ import annotations

import getpass
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import click

from dbosify.cli import payloads
from dbosify.cli.batch import Operation, check_target, run_batch
from dbosify.cli.common import (
    CliError,
    Conn,
    client_options,
    connect,
    parse_duration,
    parse_key_values,
    run,
    section,
)
from dbosify.cli.output import echo_json
from dbosify.cli.workflow_read import RUN_ID, WORKFLOW_ID, outcome, print_events, print_outcome

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle


def register(group: click.Group) -> None:
    for cmd in (start_cmd, execute_cmd, signal_cmd, update_group, cancel_cmd, terminate_cmd,
                delete_cmd, reset_cmd):
        group.add_command(cmd)


def _inputs(inputs: tuple[str, ...], files: tuple[str, ...]) -> list[Any]:
    try:
        return payloads.parse_inputs(inputs, files)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def input_options(f: Any) -> Any:
    f = click.option("--input-file", "input_files", multiple=True, help="A file holding a JSON argument.")(f)
    return click.option("--input", "-i", "inputs", multiple=True, help="A JSON argument; repeat for more.")(f)


# -- start, execute --------------------------------------------------------------------------

REUSE = ["AllowDuplicate", "AllowDuplicateFailedOnly", "RejectDuplicate", "TerminateIfRunning"]
CONFLICT = ["Fail", "UseExisting", "TerminateExisting"]


def start_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--workflow-id", "-w", default=None, help="Workflow ID (default: a new UUID)."),
        click.option("--type", "--name", "wf_type", required=True, help="Workflow Type name."),
        click.option("--task-queue", "-t", required=True, help="Workflow task queue."),
        click.option("--run-timeout", default=None, help="Fail the run after this long (e.g. 1h)."),
        click.option("--execution-timeout", default=None, help="Fail the execution after this long."),
        click.option("--task-timeout", default=None, help="Workflow task timeout (e.g. 10s)."),
        click.option("--start-delay", default=None, help="Delay before the run starts (e.g. 30s)."),
        click.option("--search-attribute", "search_attributes", multiple=True, help="KEY=JSON; repeatable."),
        click.option("--memo", "memos", multiple=True, help="KEY=JSON; repeatable."),
        click.option("--id-reuse-policy", type=click.Choice(REUSE), default=None),
        click.option("--id-conflict-policy", type=click.Choice(CONFLICT), default=None),
    ]):
        f = opt(f)
    return input_options(f)


async def _start(conn: Conn, opts: dict[str, Any]) -> tuple[Client, WorkflowHandle[Any, Any]]:
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

    client = await connect(conn)
    kwargs: dict[str, Any] = {}
    for flag, key in (("run_timeout", "run_timeout"), ("execution_timeout", "execution_timeout"),
                      ("task_timeout", "task_timeout"), ("start_delay", "start_delay")):
        if opts[flag]:
            kwargs[key] = parse_duration(opts[flag], "--" + flag.replace("_", "-"))
    if opts["id_reuse_policy"]:
        kwargs["id_reuse_policy"] = WorkflowIDReusePolicy[_upper(opts["id_reuse_policy"])]
    if opts["id_conflict_policy"]:
        kwargs["id_conflict_policy"] = WorkflowIDConflictPolicy[_upper(opts["id_conflict_policy"])]
    if opts["memos"]:
        kwargs["memo"] = parse_key_values(opts["memos"], "--memo")
    if opts["search_attributes"]:
        attrs = parse_key_values(opts["search_attributes"], "--search-attribute")
        # The untyped form: the store types each value by its registered search attribute.
        kwargs["search_attributes"] = {k: v if isinstance(v, list) else [v] for k, v in attrs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handle = await client.start_workflow(
            opts["wf_type"], args=_inputs(opts["inputs"], opts["input_files"]),
            id=opts["workflow_id"] or str(uuid.uuid4()), task_queue=opts["task_queue"], **kwargs,
        )
    return client, handle


def _upper(camel: str) -> str:
    """``AllowDuplicateFailedOnly`` -> ``ALLOW_DUPLICATE_FAILED_ONLY``."""
    return "".join("_" + c if c.isupper() and i else c for i, c in enumerate(camel)).upper()


def _running(conn: Conn, handle: WorkflowHandle[Any, Any], wf_type: str, task_queue: str) -> dict[str, str]:
    return {"workflowId": handle.id, "runId": handle.result_run_id or "", "type": wf_type,
            "namespace": conn.namespace, "taskQueue": task_queue}


@click.command("start")
@start_options
@client_options
def start_cmd(conn: Conn, **opts: Any) -> None:
    """Start a Workflow Execution and print its IDs."""
    _, handle = run("failed starting workflow", _start(conn, opts))
    info = _running(conn, handle, opts["wf_type"], opts["task_queue"])
    if conn.json:
        echo_json(payloads.dumps(info, indent=2))
    else:
        section("Running execution:", [(k[0].upper() + k[1:], v) for k, v in info.items()])


@click.command("execute")
@start_options
@click.option("--detailed", is_flag=True, help="Every event's attributes in full.")
@client_options
def execute_cmd(conn: Conn, detailed: bool, **opts: Any) -> None:
    """Start a Workflow Execution, follow its progress and print its result."""

    async def go() -> tuple[str, dict[str, Any]]:
        client, handle = await _start(conn, opts)
        info = _running(conn, handle, opts["wf_type"], opts["task_queue"])
        if not conn.json:
            section("Running execution:", [(k[0].upper() + k[1:], v) for k, v in info.items()])
            click.echo("Progress:")
            await print_events(handle, client, follow=True, detailed=detailed)
        status, result = await outcome(client, handle)
        return status, {**info, **result} if conn.json else result

    print_outcome(conn, *run("failed executing workflow", go()))


# -- signal, update ----------------------------------------------------------------------------


def target_options(f: Any) -> Any:
    """``-w``/``-r`` for one run, or ``-q`` for a batch with ``-y``/``--rps``/``--reason``."""
    for opt in reversed([
        click.option("--workflow-id", "-w", default=None, help="Workflow ID (or use --query)."),
        click.option("--run-id", "-r", default=None, help="Run ID; only with --workflow-id."),
        click.option("--query", "-q", default=None, help="A List Filter: every matching run."),
        click.option("--reason", default=None, help="Reason (default: names the current user)."),
        click.option("--yes", "-y", is_flag=True, help="Don't ask to confirm a --query batch."),
        click.option("--rps", type=click.FloatRange(min=0.01), default=None,
                     help="At most this many calls a second in a --query batch."),
    ]):
        f = opt(f)
    return f


def _single_or_batch(
    conn: Conn, verb: str, action: str, done: str, op: Operation, t: dict[str, Any]
) -> None:
    check_target(t["workflow_id"], t["run_id"], t["query"], t["yes"], t["rps"])
    if t["query"]:
        run(f"failed to {verb} workflows", run_batch(conn, t["query"], verb, op, yes=t["yes"], rps=t["rps"]))
        return

    async def one() -> None:
        client = await connect(conn)
        await op(client, client.get_workflow_handle(t["workflow_id"], run_id=t["run_id"]))

    run(action, one())
    if conn.json:
        echo_json(payloads.dumps({"workflowId": t["workflow_id"], "runId": t["run_id"] or "",
                                   "result": done}))
    else:
        click.echo(done)


def _reason(reason: str | None, what: str) -> str:
    if reason:
        return reason
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{what} by dbosify CLI ({user})"


@click.command("signal")
@target_options
@click.option("--name", "--type", "name", required=True, help="Signal name.")
@input_options
@client_options
def signal_cmd(conn: Conn, name: str, inputs: tuple[str, ...], input_files: tuple[str, ...],
               **target: Any) -> None:
    """Send a Signal to a Workflow Execution (or to every run a --query matches)."""
    args = _inputs(inputs, input_files)

    async def op(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
        await handle.signal(name, args=args)

    _single_or_batch(conn, "signal", "failed signalling workflow", "Signal workflow succeeded", op, target)


@click.group("update")
def update_group() -> None:
    """Send Updates to a Workflow Execution."""


@update_group.command("execute")
@WORKFLOW_ID
@RUN_ID
@click.option("--name", "--type", "name", required=True, help="Update handler name.")
@click.option("--update-id", default=None, help="Update ID (default: a new UUID).")
@input_options
@client_options
def update_execute_cmd(conn: Conn, workflow_id: str, run_id: str | None, name: str,
                       update_id: str | None, inputs: tuple[str, ...],
                       input_files: tuple[str, ...]) -> None:
    """Send an Update and wait for its result."""
    args = _inputs(inputs, input_files)
    uid = update_id or str(uuid.uuid4())

    async def go() -> Any:
        from temporalio.client import WorkflowUpdateFailedError

        client = await connect(conn)
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        try:
            return await handle.execute_update(name, args=args, id=uid)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            raise CliError(f"update failed: {getattr(cause, 'message', None) or cause}") from exc

    value = run("failed updating workflow", go())
    if conn.json:
        echo_json(payloads.dumps({"updateId": uid, "result": payloads.jsonable(value)}, indent=2))
    else:
        section("Update result:", [("UpdateId", uid), ("Result", payloads.dumps(value))])


# -- cancel, terminate, delete, reset ----------------------------------------------------------


@click.command("cancel")
@target_options
@client_options
def cancel_cmd(conn: Conn, **target: Any) -> None:
    """Request cancellation of a Workflow Execution (or of every run a --query matches)."""

    async def op(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
        await handle.cancel()

    _single_or_batch(conn, "cancel", "failed cancelling workflow", "Cancellation requested", op, target)


@click.command("terminate")
@target_options
@client_options
def terminate_cmd(conn: Conn, **target: Any) -> None:
    """Terminate a Workflow Execution (or every run a --query matches) at once."""
    reason = _reason(target["reason"], "Terminated")

    async def op(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
        await handle.terminate(reason=reason)

    _single_or_batch(conn, "terminate", "failed terminating workflow", "Workflow terminated", op, target)


@click.command("delete")
@target_options
@client_options
def delete_cmd(conn: Conn, **target: Any) -> None:
    """Delete a Workflow Execution and its history (a running one is terminated first)."""

    async def op(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
        from temporalio.api.common.v1 import WorkflowExecution
        from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=conn.namespace,
                workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=handle.run_id or ""),
            )
        )

    _single_or_batch(conn, "delete", "failed deleting workflow", "Delete workflow succeeded", op, target)


@click.command(
    "reset", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def reset_cmd(args: tuple[str, ...]) -> None:
    """Not supported: dbosify has no workflow reset yet."""
    raise CliError("workflow reset is not supported by dbosify yet (no reset); see docs/COMPATIBILITY.md")
