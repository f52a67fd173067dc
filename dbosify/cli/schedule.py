"""``dbosify schedule list|describe|create|toggle|trigger|delete`` on temporalio's schedule client.

Flag names follow ``temporal schedule``. Each verb is one call of temporalio's schedule API
(`Client.create_schedule`, `ScheduleHandle.describe|pause|unpause|trigger|delete`,
`Client.list_schedules`), so it works wherever an app's schedule calls work.
"""

from __future__ import annotations

import uuid
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
    parse_duration,
    run,
    section,
    table,
)
from dbosify.cli.output import echo_json

if TYPE_CHECKING:
    from temporalio.client import Schedule

SCHEDULE_ID = click.option("--schedule-id", "-s", required=True, help="Schedule ID.")
OVERLAP = ["Skip", "BufferOne", "BufferAll", "CancelOther", "TerminateOther", "AllowAll"]


def register(group: click.Group) -> None:
    for cmd in (list_cmd, describe_cmd, create_cmd, toggle_cmd, trigger_cmd, delete_cmd):
        group.add_command(cmd)


def _overlap(name: str) -> Any:
    from temporalio.client import ScheduleOverlapPolicy

    return ScheduleOverlapPolicy["".join("_" + c if c.isupper() and i else c
                                         for i, c in enumerate(name)).upper()]


@click.command("list")
@click.option("--query", "-q", default=None, help="A List Filter over the schedules.")
@client_options
def list_cmd(conn: Conn, query: str | None) -> None:
    """Show the namespace's Schedules."""

    async def go() -> None:
        client = await connect(conn)
        found = [s async for s in await client.list_schedules(query or None)]
        if conn.json:
            echo_json(payloads.dumps(
                [await payloads.decoded(s.raw_entry, client.data_converter) for s in found], indent=2))
            return
        rows = []
        for s in found:
            action = s.schedule.action if s.schedule else None
            state = s.schedule.state if s.schedule else None
            nxt = s.info.next_action_times[0] if s.info and s.info.next_action_times else None
            rows.append([s.id, getattr(action, "workflow", ""), "yes" if state and state.paused else "no",
                         fmt_time(nxt), (state.note if state else "") or ""])
        table(["ScheduleId", "WorkflowType", "Paused", "NextRunTime", "Notes"], rows)

    run("failed listing schedules", go())


@click.command("describe")
@SCHEDULE_ID
@client_options
def describe_cmd(conn: Conn, schedule_id: str) -> None:
    """Show a Schedule: its spec, action, state and recent and next runs."""

    async def go() -> None:
        client = await connect(conn)
        desc = await client.get_schedule_handle(schedule_id).describe()
        if conn.json:
            echo_json(payloads.dumps(
                await payloads.decoded(desc.raw_description, client.data_converter), indent=2))
            return
        sched, info = desc.schedule, desc.info
        action: Any = sched.action
        spec = sched.spec
        section("Schedule:", [
            ("ScheduleId", desc.id),
            ("WorkflowType", getattr(action, "workflow", "")),
            ("WorkflowId", getattr(action, "id", "")),
            ("TaskQueue", getattr(action, "task_queue", "")),
            ("Cron", ", ".join(spec.cron_expressions)),
            ("Intervals", ", ".join(str(i.every) for i in spec.intervals)),
            ("TimeZone", spec.time_zone_name),
            ("Paused", "yes" if sched.state.paused else "no"),
            ("Notes", sched.state.note),
            ("Actions", info.num_actions),
            ("CreatedAt", fmt_time(info.created_at)),
            ("NextRunTimes", ", ".join(fmt_time(t) for t in info.next_action_times[:3])),
            ("RecentRuns", ", ".join(
                f"{a.action.workflow_id} ({fmt_time(a.started_at)})" for a in info.recent_actions[-3:]
                if hasattr(a.action, "workflow_id"))),
        ])

    run("failed describing schedule", go())


@click.command("create")
@SCHEDULE_ID
@click.option("--cron", "crons", multiple=True, help='A cron string, e.g. "30 12 * * Fri"; repeatable.')
@click.option("--interval", "intervals", multiple=True, help="Every DURATION[/OFFSET], e.g. 45m or 6h/5h.")
@click.option("--time-zone", default=None, help="Time zone of the cron specs, e.g. Europe/Paris.")
@click.option("--jitter", default=None, help="Start each action up to this much later at random.")
@click.option("--catchup-window", default=None, help="How far back missed actions are caught up.")
@click.option("--overlap-policy", type=click.Choice(OVERLAP), default="Skip", show_default=True)
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--notes", default=None, help="The schedule's notes.")
@click.option("--workflow-id", "-w", default=None, help="Workflow ID of each run (default: a new UUID).")
@click.option("--type", "--name", "wf_type", required=True, help="Workflow Type name.")
@click.option("--task-queue", "-t", required=True, help="Workflow task queue.")
@click.option("--input", "-i", "inputs", multiple=True, help="A JSON argument; repeat for more.")
@client_options
def create_cmd(conn: Conn, schedule_id: str, crons: tuple[str, ...], intervals: tuple[str, ...],
               time_zone: str | None, jitter: str | None, catchup_window: str | None,
               overlap_policy: str, paused: bool, notes: str | None, workflow_id: str | None,
               wf_type: str, task_queue: str, inputs: tuple[str, ...]) -> None:
    """Create a Schedule that starts a workflow at the times given."""
    if not crons and not intervals:
        raise click.UsageError("give at least one --cron or --interval")
    try:
        args = payloads.parse_inputs(inputs, ())
    except ValueError as exc:
        raise CliError(str(exc)) from None
    schedule = _schedule(crons, intervals, time_zone, jitter, catchup_window, overlap_policy,
                         paused, notes, workflow_id or f"{schedule_id}-{uuid.uuid4().hex[:8]}",
                         wf_type, task_queue, args)

    async def go() -> None:
        client = await connect(conn)
        await client.create_schedule(schedule_id, schedule)

    run("failed creating schedule", go())
    echo_json(payloads.dumps({"scheduleId": schedule_id}) if conn.json else "Schedule created")


def _schedule(crons: tuple[str, ...], intervals: tuple[str, ...], time_zone: str | None,
              jitter: str | None, catchup: str | None, overlap: str, paused: bool,
              notes: str | None, workflow_id: str, wf_type: str, task_queue: str,
              args: list[Any]) -> Schedule:
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleState,
    )

    every: list[ScheduleIntervalSpec] = []
    for text in intervals:
        period, _, offset = text.partition("/")
        d = parse_duration(period, "--interval")
        assert d is not None
        every.append(ScheduleIntervalSpec(every=d, offset=parse_duration(offset, "--interval")))
    return Schedule(
        action=ScheduleActionStartWorkflow(wf_type, args=args, id=workflow_id, task_queue=task_queue),
        spec=ScheduleSpec(cron_expressions=list(crons), intervals=every, time_zone_name=time_zone,
                          jitter=parse_duration(jitter, "--jitter")),
        policy=SchedulePolicy(overlap=_overlap(overlap),
                              catchup_window=parse_duration(catchup, "--catchup-window")
                              or timedelta(days=365)),
        state=ScheduleState(note=notes, paused=paused),
    )


@click.command("toggle")
@SCHEDULE_ID
@click.option("--pause", is_flag=True, help="Pause the Schedule.")
@click.option("--unpause", is_flag=True, help="Unpause the Schedule.")
@click.option("--reason", default="(no reason provided)", show_default=True)
@client_options
def toggle_cmd(conn: Conn, schedule_id: str, pause: bool, unpause: bool, reason: str) -> None:
    """Pause or unpause a Schedule."""
    if pause == unpause:
        raise click.UsageError("give exactly one of --pause and --unpause")

    async def go() -> None:
        handle = (await connect(conn)).get_schedule_handle(schedule_id)
        await (handle.pause(note=reason) if pause else handle.unpause(note=reason))

    run("failed toggling schedule", go())
    click.echo("Schedule paused" if pause else "Schedule unpaused")


@click.command("trigger")
@SCHEDULE_ID
@click.option("--overlap-policy", type=click.Choice(OVERLAP), default=None)
@client_options
def trigger_cmd(conn: Conn, schedule_id: str, overlap_policy: str | None) -> None:
    """Run a Schedule's action now."""

    async def go() -> None:
        handle = (await connect(conn)).get_schedule_handle(schedule_id)
        await handle.trigger(overlap=_overlap(overlap_policy) if overlap_policy else None)

    run("failed triggering schedule", go())
    click.echo("Trigger schedule succeeded")


@click.command("delete")
@SCHEDULE_ID
@client_options
def delete_cmd(conn: Conn, schedule_id: str) -> None:
    """Delete a Schedule (its running workflows go on)."""

    async def go() -> None:
        await (await connect(conn)).get_schedule_handle(schedule_id).delete()

    run("failed deleting schedule", go())
    click.echo("Schedule deleted")
