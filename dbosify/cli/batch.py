"""Batch operations (``--query``): the matching runs, a confirmation, then one call per run.

Temporal runs a batch as a server-side job; here the CLI applies the operation itself, run by
run, with a progress bar on a terminal (stderr), at most ``--rps`` calls a second, and reports
how many succeeded and why the others failed.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

from dbosify.cli import payloads
from dbosify.cli.common import CliError, Conn, connect
from dbosify.cli.output import echo, echo_json

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

# One run's operation, given the client and the run's handle.
Operation = Callable[["Client", "WorkflowHandle[Any, Any]"], Awaitable[Any]]


def check_target(
    workflow_id: str | None, run_id: str | None, query: str | None, yes: bool, rps: float | None
) -> None:
    """The ``temporal`` CLI's rules: exactly one of -w and -q; -r only with -w; -y, --rps only with -q."""
    if bool(workflow_id) == bool(query):
        raise click.UsageError("set either --workflow-id or --query (not both)")
    if run_id and not workflow_id:
        raise click.UsageError("--run-id can only be set with --workflow-id")
    if not query and (yes or rps is not None):
        raise click.UsageError("--yes and --rps can only be used with --query")


async def run_batch(
    conn: Conn, query: str, verb: str, operation: Operation, *, yes: bool, rps: float | None
) -> None:
    client = await connect(conn)
    targets = [(wf.id, wf.run_id) async for wf in client.list_workflows(query)]
    if not targets:
        _report(conn, verb, 0, [])
        return
    if not yes:
        prompt = f"Start batch to {verb} {len(targets)} workflow(s) matching {query!r}?"
        try:
            confirmed = click.confirm(prompt, default=False, err=True)
        except click.Abort:  # end of input: nobody to ask
            raise CliError("batch not confirmed (no answer on standard input): pass --yes") from None
        if not confirmed:
            raise CliError("batch not confirmed")
    failed: list[dict[str, str]] = []
    interval = 1.0 / rps if rps else 0.0
    show = sys.stderr.isatty() and not conn.json
    with click.progressbar(
        length=len(targets), label=verb, file=sys.stderr if show else io.StringIO()
    ) as bar:
        for wid, rid in targets:
            started = time.monotonic()
            try:
                await operation(client, client.get_workflow_handle(wid, run_id=rid))
            except Exception as exc:  # reported per run, like a batch job's failures
                failed.append({"workflowId": wid, "runId": rid or "", "error": _message(exc)})
            bar.update(1)
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    _report(conn, verb, len(targets), failed)


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", "") or exc) or type(exc).__name__


def _report(conn: Conn, verb: str, total: int, failed: list[dict[str, str]]) -> None:
    done = total - len(failed)
    if conn.json:
        echo_json(payloads.dumps({"matched": total, "succeeded": done, "failed": failed}, indent=2))
    else:
        click.echo(f"Batch {verb}: {done} of {total} workflow(s) succeeded")
        for f in failed:
            echo(f"  failed {f['workflowId']} ({f['runId']}): {f['error']}")
    if failed:
        raise CliError(f"batch {verb}: {len(failed)} of {total} workflow(s) failed")
