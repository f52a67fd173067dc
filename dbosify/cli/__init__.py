"""The ``dbosify`` command: ``run`` an app, operate its runs (``workflow``, ``schedule``), register
its ``namespace``s, look into a ``task-queue``, ``ui``.

``dbosify run`` is parsed by hand (everything after the script belongs to the script) and
imports nothing else; the other commands are `click` groups, a module per verb family, whose
names and flags follow the ``temporal`` CLI's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from dbosify import __version__
from dbosify.cli import failures

SUMMARY = """\
Run an unmodified Temporal Python app on dbosify (DBOS on Postgres/SQLite)
instead of a Temporal server, and operate its runs.

\b
  dbosify run SCRIPT [ARG ...]     run a Python script as __main__, like `python SCRIPT`
  dbosify run -m MODULE [ARG ...]  run a module as __main__, like `python -m MODULE`

Setting DBOSIFY_ACTIVATE=1 in the environment has the same effect as `run` for any
Python process started afterwards.
"""


class _Root(click.Group):
    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("dbosify", "run SCRIPT [ARG ...] | run -m MODULE [ARG ...]", "usage: ")
        formatter.write_usage("", "COMMAND [ARGS]...", "       dbosify")


@click.group(cls=_Root, help=SUMMARY, no_args_is_help=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="dbosify", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True,
              callback=failures.set_debug, help=failures.DEBUG_HELP)
def cli() -> None:
    pass


@cli.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_cmd(args: tuple[str, ...]) -> None:
    """Run a script (or -m MODULE) as __main__ with dbosify active."""
    from dbosify.cli.run import run_main

    sys.exit(run_main(args))


@cli.group("workflow")
def workflow_group() -> None:
    """Start, list and operate on Workflow Executions (the `temporal workflow` verbs)."""


@cli.group("schedule")
def schedule_group() -> None:
    """Create, list and operate on Schedules (the `temporal schedule` verbs)."""


@cli.group("namespace")
def namespace_group() -> None:
    """Register and list namespaces (`temporal operator namespace create|list`)."""


@cli.group("task-queue")
def task_queue_group() -> None:
    """Task Queue insight (`temporal task-queue describe`): pollers and backlog."""


@cli.group("worker")
def worker_group() -> None:
    """Worker verbs (`temporal worker`): Worker Deployments and their versions."""


@worker_group.group("deployment")
def deployment_group() -> None:
    """Describe and list Worker Deployments; set their current and ramping versions."""


@cli.group("operator")
def operator_group() -> None:
    """Operator verbs (`temporal operator`): Nexus endpoints."""


def _register() -> None:
    """The verbs, with the hook active first: their modules import temporalio."""
    from dbosify.cli.common import activate

    activate()
    if workflow_group.commands:
        return
    from dbosify.cli import deployment as deployment_verbs
    from dbosify.cli import namespace as namespace_verbs
    from dbosify.cli import nexus as nexus_verbs
    from dbosify.cli import schedule as schedule_verbs
    from dbosify.cli import task_queue as task_queue_verbs
    from dbosify.cli import ui as ui_verb
    from dbosify.cli import workflow_read, workflow_write

    workflow_read.register(workflow_group)
    workflow_write.register(workflow_group)
    schedule_verbs.register(schedule_group)
    namespace_verbs.register(namespace_group)
    task_queue_verbs.register(task_queue_group)
    deployment_verbs.register(deployment_group)
    nexus_verbs.register(operator_group)
    cli.add_command(ui_verb.ui_cmd)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dbosify`` and the ``dbosify`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":  # as before click: nothing else imported, argv untouched
        from dbosify.cli.run import run_main

        return run_main(args[1:])
    _register()
    try:
        cli.main(args, prog_name="dbosify", standalone_mode=True)
    except SystemExit as exc:
        code: Any = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        click.echo(f"Error: {failures.error_line(str(code))}", err=True)
        return 1
    except Exception as exc:  # not a verb's own error: still one line (--debug: the traceback)
        return failures.report(exc)
    return 0
