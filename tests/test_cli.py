"""``dbosify workflow ...`` run as a subprocess against Postgres and SQLite, a worker in this process.

Each verb is checked for its output and exit code, and so are the failures a user meets: a
missing workflow, a closed workflow, a malformed List Filter.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import cli_app
import pytest
from conftest import new_namespace
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

pytestmark = pytest.mark.timeout(120)


@dataclass
class Result:
    rc: int
    out: str
    err: str


class Cli:
    def __init__(self, client: Client, db_url: str, extra_env: dict[str, str] | None = None) -> None:
        self.client = client
        self.db_url = db_url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DBOSIFY_")}
        self.env.update(extra_env or {})

    async def __call__(self, *args: str, stdin: str = "", timeout: float = 60) -> Result:
        """``dbosify workflow ARGS --db URL -n NAMESPACE``."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbosify", "workflow", *args,
            "--db", self.db_url, "-n", self.client.namespace,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return Result(proc.returncode or 0, out.decode(), err.decode())

    async def ok(self, *args: str, stdin: str = "") -> str:
        r = await self(*args, stdin=stdin)
        assert r.rc == 0, f"dbosify workflow {' '.join(args)} failed ({r.rc}): {r.err}"
        return r.out

    async def fails(self, *args: str, error: str, rc: int = 1) -> Result:
        r = await self(*args)
        assert r.rc == rc, (r.rc, r.out, r.err)
        assert error in r.err, r.err
        return r


@pytest.fixture
async def cli(client: Client, db_url: str) -> AsyncIterator[Cli]:
    async with cli_app.worker(client):
        yield Cli(client, db_url)


async def test_start_signal_query_update_result_show(cli: Cli) -> None:
    out = await cli.ok("start", "--type", "Steps", "-t", cli_app.TASK_QUEUE, "-w", "s1",
                       "-i", '"ann"', "-i", "2")
    assert "Running execution:" in out and "WorkflowId  s1" in out
    started = json.loads(await cli.ok("describe", "-w", "s1", "-o", "json"))
    run_id = started["workflowExecutionInfo"]["execution"]["runId"]
    assert run_id in out

    listed = await cli.ok("list")
    assert listed.splitlines()[0].split() == ["Status", "WorkflowId", "RunId", "Type", "StartTime", "CloseTime"]
    assert listed.splitlines()[1].split()[:4] == ["Running", "s1", run_id, "Steps"]
    assert (await cli.ok("count", "-q", "WorkflowType = 'Steps'")).strip() == "Total: 1"
    assert json.loads(await cli.ok("count", "-o", "json"))["count"] == 1
    described = await cli.ok("describe", "-w", "s1")
    assert "Status         Running" in described and f"TaskQueue      {cli_app.TASK_QUEUE}" in described

    assert (await cli.ok("signal", "-w", "s1", "--name", "advance")).strip() == "Signal workflow succeeded"
    queried = json.loads(await cli.ok("query", "-w", "s1", "--type", "progress", "-o", "json"))
    assert queried["queryResult"]["name"] == "ann"
    assert "Stack for" in await cli.ok("stack", "-w", "s1")
    updated = await cli.ok("update", "execute", "-w", "s1", "--name", "rename", "-i", '"bob"')
    assert 'Result    "ann"' in updated
    await cli.fails("update", "execute", "-w", "s1", "--name", "rename", "-i", '""',
                    error="Error: update failed: the new name is empty")

    await cli.ok("signal", "-w", "s1", "--name", "advance", "-i", "1")
    result = await cli.ok("result", "-w", "s1")
    assert "Status  Completed" in result and 'Result  "done bob"' in result
    assert json.loads(await cli.ok("result", "-w", "s1", "-o", "json")) == {
        "status": "Completed", "result": "done bob"}

    shown = await cli.ok("show", "-w", "s1", "-r", run_id)
    assert "WorkflowExecutionSignaled" in shown and '"BOB 1"' in shown
    assert shown.rstrip().endswith('Result  "done bob"')
    # The JSON history is Temporal's: the SDK's Replayer replays it.
    history = WorkflowHistory.from_json("s1", await cli.ok("show", "-w", "s1", "-o", "json"))
    await Replayer(workflows=[cli_app.Steps], workflow_runner=UnsandboxedWorkflowRunner()
                   ).replay_workflow(history)


async def test_errors_in_one_line(cli: Cli) -> None:
    r = await cli.fails("execute", "--type", "Broken", "-t", cli_app.TASK_QUEUE, "-w", "closed",
                        error="Error: workflow failed")
    assert "Status   Failed" in r.out and "Failure  it broke" in r.out

    missing = await cli.fails("describe", "-w", "nope",
                              error="Error: failed describing workflow: workflow not found for ID: nope")
    assert missing.err.count("\n") == 1 and missing.out == ""
    await cli.fails("result", "-w", "nope", error="workflow not found for ID: nope")
    await cli.fails("signal", "-w", "closed", "--name", "advance",
                    error="Error: failed signalling workflow: workflow execution already completed")
    await cli.fails("terminate", "-w", "closed",
                    error="Error: failed terminating workflow: workflow execution already completed")
    await cli.fails("list", "-q", "WorkflowId = ",
                    error="Error: failed listing workflows: invalid query: ")
    await cli.fails("count", "-q", "Nonsense = 'x'", error="Error: failed counting workflows: invalid query: ")
    await cli.fails("terminate", "-q", "ExecutionStatus = ", "--yes",
                    error="Error: failed to terminate workflows: invalid query: ")
    reset = await cli.fails("reset", "-w", "closed", "--event-id", "3",
                            error="Error: workflow reset is not supported by dbosify")
    assert reset.err.count("\n") == 1
    await cli.fails("signal", "-w", "x", "-q", "WorkflowId = 'x'", "--name", "s", rc=2,
                    error="set either --workflow-id or --query")
    await cli.fails("start", "--type", "Steps", "-t", "q", "-i", "{nope", error="not valid JSON")
    await cli.fails("start", "--type", "Steps", "-t", "q", "--run-timeout", "soon",
                    error="invalid --run-timeout 'soon'")


async def test_batches_confirm_then_apply(cli: Cli) -> None:
    for i in range(3):
        await cli.client.start_workflow(cli_app.Steps.run, args=["b", 5], id=f"batch-{i}",
                                        task_queue=cli_app.TASK_QUEUE)
    await cli.client.start_workflow(cli_app.Steps.run, args=["k", 5], id="keep",
                                    task_queue=cli_app.TASK_QUEUE)
    query = "WorkflowId STARTS_WITH 'batch-'"
    r = await cli("terminate", "-q", query)  # no one answers the prompt
    assert r.rc == 1 and "Start batch to terminate 3 workflow(s)" in r.err
    assert "pass --yes" in r.err
    r = await cli("cancel", "-q", query, stdin="n\n")
    assert r.rc == 1 and "Error: batch not confirmed" in r.err

    assert "Batch signal: 3 of 3" in await cli.ok("signal", "-q", query, "--name", "advance", "-y")
    out = await cli.ok("terminate", "-q", query, "--reason", "cleanup", "--rps", "50", stdin="y\n")
    assert "Batch terminate: 3 of 3 workflow(s) succeeded" in out
    counted = await cli.ok("count", "-q", "GROUP BY ExecutionStatus")
    assert "Terminated: 3" in counted and "Running: 1" in counted
    described = await cli.ok("describe", "-w", "batch-0")
    assert "Status         Terminated" in described and "Reason  cleanup" in described
    # A second terminate fails for each (closed) run and says why.
    again = await cli("terminate", "-q", query, "-y", "-o", "json")
    assert again.rc == 1 and json.loads(again.out)["failed"][0]["error"] == "workflow execution already completed"

    assert "Batch delete: 3 of 3" in await cli.ok("delete", "-q", query, "--yes")
    assert (await cli.ok("count")).strip() == "Total: 1"
    assert (await cli.ok("cancel", "-w", "keep")).strip() == "Cancellation requested"
    assert (await cli.ok("delete", "-w", "keep")).strip() == "Delete workflow succeeded"
    await cli.fails("describe", "-w", "keep", error="workflow not found for ID: keep")
    assert (await cli.ok("list")).strip().splitlines()[1:] == []


async def test_pending_activity_follow_and_execute(cli: Cli) -> None:
    await cli.ok("start", "--type", "Stuck", "-t", cli_app.TASK_QUEUE, "-w", "stuck")
    for _ in range(100):
        desc = await cli.client.get_workflow_handle("stuck").describe()
        if desc.raw_description.pending_activities and desc.raw_description.pending_activities[0].attempt > 1:
            break
        await asyncio.sleep(0.1)
    described = await cli.ok("describe", "-w", "stuck")
    assert "Pending Activities: 1" in described and "always_fails" in described
    assert "LastFailure  the printer is broken" in described
    await cli.ok("terminate", "-w", "stuck", "--reason", "enough")

    # show --follow prints events as they happen and ends when the run closes.
    handle = await cli.client.start_workflow(cli_app.Steps.run, args=["f", 1], id="follow",
                                             task_queue=cli_app.TASK_QUEUE)
    follow = asyncio.ensure_future(cli("show", "-w", "follow", "--follow"))
    await asyncio.sleep(1.0)
    assert not follow.done()
    await handle.signal(cli_app.Steps.advance)
    shown = await asyncio.wait_for(follow, 30)
    assert shown.rc == 0 and "ActivityTaskCompleted" in shown.out
    assert "Status  Completed" in shown.out

    # execute: started, progress, result; JSON output is one object.
    out = json.loads(await cli.ok("execute", "--type", "Steps", "-t", cli_app.TASK_QUEUE, "-w", "ex",
                                  "-i", '"e"', "-i", "0", "-o", "json"))
    assert out["workflowId"] == "ex" and out["status"] == "Completed" and out["result"] == "done e"


CONVERTER = """
import dataclasses
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec

class Reverse(PayloadCodec):
    async def encode(self, payloads):
        return [Payload(metadata={"encoding": b"binary/reversed"},
                        data=p.SerializeToString()[::-1]) for p in payloads]

    async def decode(self, payloads):
        return [Payload.FromString(p.data[::-1]) if p.metadata.get("encoding") == b"binary/reversed"
                else p for p in payloads]

converter = dataclasses.replace(DataConverter.default, payload_codec=Reverse())
"""


async def test_custom_data_converter(tmp_path: Path, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the converter is the CLI's, not the store's: one backend is enough")
    (tmp_path / "reversing.py").write_text(textwrap.dedent(CONVERTER))
    sys.path.insert(0, str(tmp_path))
    try:
        import reversing

        client = await Client.connect(db_url, namespace=new_namespace(db_url),
                                      data_converter=reversing.converter)
        async with cli_app.worker(client):
            cli = Cli(client, db_url, {"PYTHONPATH": str(tmp_path)})
            await client.execute_workflow(cli_app.Steps.run, args=["secret", 0], id="c",
                                          task_queue=cli_app.TASK_QUEUE)
            plain = await cli.ok("describe", "-w", "c")
            assert "done secret" not in plain and "binary/reversed" in plain  # shown undecoded
            decoded = await cli.ok("describe", "-w", "c", "--data-converter", "reversing:converter")
            assert 'Result  "done secret"' in decoded
            await cli.fails("list", "--data-converter", "reversing:nothing",
                            error="can't load data converter 'reversing:nothing'")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("reversing", None)


async def test_schedule_verbs(cli: Cli) -> None:
    async def sched(*args: str) -> Result:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbosify", "schedule", *args, "--db", cli.db_url,
            "-n", cli.client.namespace, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=cli.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return Result(proc.returncode or 0, out.decode(), err.decode())

    created = await sched("create", "-s", "hourly", "--interval", "1h", "--type", "Steps",
                          "-t", cli_app.TASK_QUEUE, "-w", "from-schedule", "-i", '"s"', "-i", "0",
                          "--notes", "every hour")
    assert created.rc == 0 and created.out.strip() == "Schedule created", created.err
    listed = (await sched("list")).out.splitlines()
    assert listed[0].split() == ["ScheduleId", "WorkflowType", "Paused", "NextRunTime", "Notes"]
    assert listed[1].split()[:3] == ["hourly", "Steps", "no"] and "every hour" in listed[1]
    described = await sched("describe", "-s", "hourly")
    assert "WorkflowId    from-schedule" in described.out and "Paused        no" in described.out

    assert (await sched("trigger", "-s", "hourly")).out.strip() == "Trigger schedule succeeded"
    for _ in range(100):
        if (await cli.client.count_workflows("TemporalScheduledById = 'hourly'")).count:
            break
        await asyncio.sleep(0.1)
    assert "from-schedule" in await cli.ok("list", "-q", "TemporalScheduledById = 'hourly'")

    assert (await sched("toggle", "-s", "hourly", "--pause", "--reason", "maintenance")).rc == 0
    raw = json.loads((await sched("describe", "-s", "hourly", "-o", "json")).out)
    assert raw["schedule"]["state"] == {"paused": True, "notes": "maintenance"}
    assert (await sched("delete", "-s", "hourly")).out.strip() == "Schedule deleted"
    gone = await sched("describe", "-s", "hourly")
    assert gone.rc == 1 and gone.err.startswith("Error: failed describing schedule: ")
    bad = await sched("create", "-s", "x", "--cron", "not a cron", "--type", "Steps", "-t", "q")
    assert bad.rc == 1 and bad.err.startswith("Error: failed creating schedule: "), bad.err
