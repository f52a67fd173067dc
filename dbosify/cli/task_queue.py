"""``dbosify task-queue describe``: who polls a task queue and what waits in it.

Shaped like ``temporal task-queue describe``: the same flags (``--task-queue``/``-t``,
``--task-queue-type``, ``--disable-stats``), a "Task Queue Statistics:" table (backlog count and
age per task type) and a "Pollers:" table (identity, last access, rate), and the same JSON keys
with ``-o json``. It sends the DescribeTaskQueue RPC (ENHANCED mode) an app could send itself
through ``client.workflow_service``. The web view's task-queue page (`dbosify.ui`) reads the same
`describe`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from dbosify.cli.common import Conn, client_options, connect, run
from dbosify.cli.output import echo, echo_json

if TYPE_CHECKING:
    from temporalio.client import Client

TYPES = {"workflow": 1, "activity": 2, "nexus": 3}  # temporalio's TaskQueueType
DEFAULT_TYPES = ("workflow", "activity")  # what Temporal reports when no type is asked for
UNVERSIONED = "UNVERSIONED"  # the BuildID column of unversioned workers, as ``temporal`` shows it


@dataclass
class Poller:
    task_type: str
    identity: str
    last_access: datetime
    rate_per_second: float
    last_access_json: str = ""  # RFC 3339 with nanoseconds, as the RPC carried it


@dataclass
class Stats:
    task_type: str
    backlog_count: int
    backlog_age: float  # seconds
    add_rate: float
    dispatch_rate: float


@dataclass
class Described:
    task_queue: str
    pollers: list[Poller] = field(default_factory=list)
    stats: list[Stats] | None = None  # None: not asked for


async def describe(client: Client, task_queue: str, types: list[str], *, stats: bool = True) -> Described:
    """The ENHANCED DescribeTaskQueue of ``task_queue`` for ``types``, in the client's namespace."""
    from temporalio.api.enums.v1 import task_queue_pb2 as tq_enums
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    req = DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=task_queue, kind=tq_enums.TASK_QUEUE_KIND_NORMAL),
        api_mode=tq_enums.DESCRIBE_TASK_QUEUE_MODE_ENHANCED, report_pollers=True, report_stats=stats,
        task_queue_types=[tq_enums.TaskQueueType.ValueType(TYPES[t]) for t in types],
    )
    resp = await client.workflow_service.describe_task_queue(req)
    out = Described(task_queue, stats=[] if stats else None)
    version = resp.versions_info.get("")
    for name in types:
        info = version.types_info.get(TYPES[name]) if version is not None else None
        if info is None:
            continue
        for p in info.pollers:
            out.pollers.append(Poller(name, p.identity, p.last_access_time.ToDatetime(timezone.utc),
                                      p.rate_per_second, p.last_access_time.ToJsonString()))
        if out.stats is not None:
            s = info.stats
            out.stats.append(Stats(name, s.approximate_backlog_count, s.approximate_backlog_age.ToNanoseconds() / 1e9,
                                   s.tasks_add_rate, s.tasks_dispatch_rate))
    return out


# -- formatting, as ``temporal`` writes it ---------------------------------------------------


def go_duration(seconds: float) -> str:
    """A duration as Go prints one: ``0s``, ``250ms``, ``1.5s``, ``2m3.25s``, ``1h0m0s``."""
    ns = int(round(seconds * 1e9))
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(f"{ns / size:.{len(str(size)) - 1}f}") + unit
    h, rest = divmod(ns, 3_600_000_000_000)
    m, rest = divmod(rest, 60_000_000_000)
    text = _trim(f"{rest / 1e9:.9f}") + "s"
    if h:
        return f"{sign}{h}h{m}m{text}"
    return f"{sign}{m}m{text}" if m else sign + text


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def go_float(value: float) -> str:
    """A float32 as Go's ``%v`` prints it: ``0``, ``100000``, ``1.2751122``."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    packed = struct.pack("f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack("f", float(text)) == packed:
            return text
    return repr(value)


def ago(then: datetime, now: datetime | None = None) -> str:
    """``now``, ``1 second ago``, ``11 seconds ago``, ``5 minutes ago``: how ``temporal`` says it."""
    seconds = int(((now or datetime.now(timezone.utc)) - then).total_seconds())
    if seconds < 1:
        return "now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "now"


def _json_number(value: float) -> Any:
    return int(value) if value == int(value) and abs(value) < 2**53 else float(go_float(value))


def to_json(d: Described) -> dict[str, Any]:
    """The ``-o json`` document of ``temporal task-queue describe``."""
    pollers = [
        {"buildId": UNVERSIONED, "taskQueueType": p.task_type, "identity": p.identity,
         "lastAccessTime": p.last_access_json, "ratePerSecond": _json_number(p.rate_per_second)}
        for p in d.pollers
    ]
    stats = None if d.stats is None else [
        {"buildId": UNVERSIONED, "taskQueueType": s.task_type, "approximateBacklogCount": s.backlog_count,
         "approximateBacklogAge": go_duration(s.backlog_age),
         "backlogIncreaseRate": _json_number(s.add_rate - s.dispatch_rate),
         "tasksAddRate": _json_number(s.add_rate), "tasksDispatchRate": _json_number(s.dispatch_rate)}
        for s in d.stats
    ]
    return {"reachability": None, "pollers": pollers or None, "stats": stats}


def _grid(headers: list[str], rows: list[list[Any]]) -> None:
    """A table as ``temporal`` writes one: indented, headers centred, numbers to the right."""
    cells = [[go_float(c) if isinstance(c, (int, float)) else str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    echo(("  " + "  ".join(h.center(w) for h, w in zip(headers, widths, strict=True))).rstrip())
    for raw, row in zip(rows, cells, strict=True):
        line = "  ".join(
            c.rjust(w) if isinstance(v, (int, float)) else c.ljust(w)
            for v, c, w in zip(raw, row, widths, strict=True)
        )
        echo(("  " + line).rstrip())


def print_text(d: Described) -> None:
    if d.stats is not None:
        click.echo("Task Queue Statistics:")
        _grid(["BuildID", "TaskQueueType", "ApproximateBacklogCount", "ApproximateBacklogAge",
               "BacklogIncreaseRate", "TasksAddRate", "TasksDispatchRate"],
              [[UNVERSIONED, s.task_type, s.backlog_count, go_duration(s.backlog_age),
                s.add_rate - s.dispatch_rate, s.add_rate, s.dispatch_rate] for s in d.stats])
    click.echo("Pollers:")
    now = datetime.now(timezone.utc)
    _grid(["BuildID", "TaskQueueType", "Identity", "LastAccessTime", "RatePerSecond"],
          [[UNVERSIONED, p.task_type, p.identity, ago(p.last_access, now), p.rate_per_second] for p in d.pollers])


# -- the verb ----------------------------------------------------------------------------------


def register(group: click.Group) -> None:
    group.add_command(describe_cmd)


@click.command("describe")
@click.option("--task-queue", "-t", required=True, help="Task Queue name.")
@click.option(
    "--task-queue-type", type=click.Choice(list(TYPES)), default=None,
    help="Task Queue type. If not specified, workflow and activity are reported.",
)
@click.option("--disable-stats", is_flag=True, help="Disable task queue statistics.")
@client_options
def describe_cmd(conn: Conn, task_queue: str, task_queue_type: str | None, disable_stats: bool) -> None:
    """Show the Workers that polled a Task Queue in the last 5 minutes, and its backlog.

    \b
    A live Worker's LastAccessTime is at most a second old; a Worker that shut down or
    died stays listed for 5 minutes after its last poll, as on Temporal. The backlog is
    the tasks ready and not yet taken by a Worker, and the age of the oldest. The add and
    dispatch rates are not measured (0).
    """
    types = [task_queue_type] if task_queue_type else list(DEFAULT_TYPES)

    async def go() -> None:
        client = await connect(conn)
        described = await describe(client, task_queue, types, stats=not disable_stats)
        if conn.json:
            echo_json(json.dumps(to_json(described), indent=2, ensure_ascii=False))
        else:
            print_text(described)

    run("unable to describe task queue", go())
