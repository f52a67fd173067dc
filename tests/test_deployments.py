"""Worker deployments and versioning, on Postgres and SQLite: versions registered at a worker's
first poll, the routing RPCs and their errors, and where workflow tasks go (current vs ramping
version, a PINNED run stays, an AUTO_UPGRADE run moves at its next task, an override at start).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio import workflow
from temporalio.api.deployment.v1 import WorkerDeploymentVersion as DeploymentVersion
from temporalio.api.enums.v1 import VersioningBehavior as VB
from temporalio.api.workflowservice.v1 import (
    DeleteWorkerDeploymentVersionRequest,
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    ListWorkerDeploymentsRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client
from temporalio.common import PinnedVersioningOverride, VersioningBehavior, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import (
    UnsandboxedWorkflowRunner,
    Worker,
    WorkerDeploymentConfig,
    WorkerDeploymentVersion,
)

T = TypeVar("T")


@workflow.defn(name="Pinned", versioning_behavior=VersioningBehavior.PINNED)
class PinnedV1:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "pinned-v1"

    @workflow.signal
    def finish(self) -> None:
        self.go = True


@workflow.defn(name="Pinned", versioning_behavior=VersioningBehavior.PINNED)
class PinnedV2:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "pinned-v2"

    @workflow.signal
    def finish(self) -> None:
        self.go = True


@workflow.defn(name="Auto", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class AutoV1:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "auto-v1"

    @workflow.signal
    def finish(self) -> None:
        self.go = True


@workflow.defn(name="Auto", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class AutoV2:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "auto-v2"

    @workflow.signal
    def finish(self) -> None:
        self.go = True


@workflow.defn(name="Quick", versioning_behavior=VersioningBehavior.PINNED)
class QuickV1:
    @workflow.run
    async def run(self) -> str:
        return "v1"


@workflow.defn(name="Quick", versioning_behavior=VersioningBehavior.PINNED)
class QuickV2:
    @workflow.run
    async def run(self) -> str:
        return "v2"


@workflow.defn(name="QuickAuto", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class QuickAutoV1:
    @workflow.run
    async def run(self) -> str:
        return "v1"


@workflow.defn(name="QuickAuto", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class QuickAutoV2:
    @workflow.run
    async def run(self) -> str:
        return "v2"


async def _eventually(fn: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await fn()
        except (AssertionError, RPCError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


def _worker(client: Client, tq: str, wf: type, deployment: str, build: str) -> Worker:
    return Worker(
        client, task_queue=tq, workflows=[wf], workflow_runner=UnsandboxedWorkflowRunner(),
        deployment_config=WorkerDeploymentConfig(
            version=WorkerDeploymentVersion(deployment_name=deployment, build_id=build), use_worker_versioning=True,
        ),
    )


async def _describe(client: Client, deployment: str) -> Any:
    return await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
    )


async def _visible(client: Client, deployment: str, *builds: str) -> bytes:
    async def look() -> bytes:
        resp = await _describe(client, deployment)
        seen = {v.deployment_version.build_id for v in resp.worker_deployment_info.version_summaries}
        assert set(builds) <= seen, seen
        return bytes(resp.conflict_token)

    return await _eventually(look)


async def _set_current(client: Client, deployment: str, build: str, token: bytes = b"") -> bytes:
    resp = await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace, deployment_name=deployment, build_id=build, conflict_token=token,
        )
    )
    return bytes(resp.conflict_token)


async def _set_ramping(client: Client, deployment: str, build: str, pct: float) -> None:
    await client.workflow_service.set_worker_deployment_ramping_version(
        SetWorkerDeploymentRampingVersionRequest(
            namespace=client.namespace, deployment_name=deployment, build_id=build, percentage=pct,
        )
    )


async def test_routing_rpcs_and_errors(client: Client) -> None:
    """A version appears when its worker polls; set current/ramping with conflict tokens; errors."""
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    wf = QuickV1
    with pytest.raises(RPCError) as missing:
        await _describe(client, dep)
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    async with _worker(client, tq, wf, dep, "1.0"), _worker(client, tq, wf, dep, "2.0"):
        token = await _visible(client, dep, "1.0", "2.0")
        with pytest.raises(RPCError) as unknown:
            await _set_current(client, dep, "9.9")
        assert unknown.value.status == RPCStatusCode.NOT_FOUND
        token2 = await _set_current(client, dep, "1.0", token)
        with pytest.raises(RPCError) as stale:
            await _set_current(client, dep, "2.0", token)  # the token before the last change
        assert stale.value.status == RPCStatusCode.FAILED_PRECONDITION
        with pytest.raises(RPCError) as bad_pct:
            await _set_ramping(client, dep, "2.0", 120)
        assert bad_pct.value.status == RPCStatusCode.INVALID_ARGUMENT
        await _set_ramping(client, dep, "2.0", 30)
        info = (await _describe(client, dep)).worker_deployment_info
        rc = info.routing_config
        assert (rc.current_deployment_version.build_id, rc.ramping_deployment_version.build_id) == ("1.0", "2.0")
        assert rc.ramping_version_percentage == 30 and rc.current_version == f"{dep}.1.0"
        assert bytes((await _describe(client, dep)).conflict_token) != token2
        listed = await client.workflow_service.list_worker_deployments(
            ListWorkerDeploymentsRequest(namespace=client.namespace)
        )
        assert dep in [d.name for d in listed.worker_deployments]
        ver = await client.workflow_service.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(namespace=client.namespace, version=f"{dep}.2.0")
        )
        assert [q.name for q in ver.worker_deployment_version_info.task_queue_infos] == [tq]
        assert ver.worker_deployment_version_info.ramp_percentage == 30
        # Making the ramping version current ends the ramp.
        await _set_current(client, dep, "2.0")
        rc = (await _describe(client, dep)).worker_deployment_info.routing_config
        assert rc.current_deployment_version.build_id == "2.0" and not rc.ramping_version


async def test_new_runs_go_to_current_then_ramping_by_workflow_id(client: Client) -> None:
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    v1, v2 = QuickV1, QuickV2
    async with _worker(client, tq, v1, dep, "1.0"), _worker(client, tq, v2, dep, "2.0"):
        await _visible(client, dep, "1.0", "2.0")
        await _set_current(client, dep, "1.0")
        assert await client.execute_workflow("Quick", id=f"c-{tq}", task_queue=tq) == "v1"
        await _set_ramping(client, dep, "2.0", 100)
        assert await client.execute_workflow("Quick", id=f"r100-{tq}", task_queue=tq) == "v2"
        await _set_ramping(client, dep, "2.0", 50)
        ids = [f"r50-{i}-{tq}" for i in range(16)]
        first = [await client.execute_workflow("Quick", id=i, task_queue=tq) for i in ids]
        assert set(first) == {"v1", "v2"}, first
        # Deterministic by workflow id: the same ids land on the same versions again.
        for i, was in zip(ids, first, strict=True):
            assert await client.execute_workflow(
                "Quick", id=i, task_queue=tq, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            ) == was


async def test_pinned_stays_and_auto_upgrade_moves(client: Client) -> None:
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    pinned, auto = [PinnedV1, PinnedV2], [AutoV1, AutoV2]

    def worker(build: str, i: int) -> Worker:
        return Worker(
            client, task_queue=tq, workflows=[pinned[i], auto[i]], workflow_runner=UnsandboxedWorkflowRunner(),
            deployment_config=WorkerDeploymentConfig(
                version=WorkerDeploymentVersion(deployment_name=dep, build_id=build), use_worker_versioning=True,
            ),
        )

    async with worker("1.0", 0), worker("2.0", 1):
        await _visible(client, dep, "1.0", "2.0")
        await _set_current(client, dep, "1.0")
        p = await client.start_workflow("Pinned", id=f"p-{tq}", task_queue=tq)
        a = await client.start_workflow("Auto", id=f"a-{tq}", task_queue=tq)

        async def on_v1(handle: Any, behavior: int) -> None:
            info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
            assert info.deployment_version.build_id == "1.0" and info.behavior == behavior, info

        await _eventually(lambda: on_v1(p, VB.VERSIONING_BEHAVIOR_PINNED))
        await _eventually(lambda: on_v1(a, VB.VERSIONING_BEHAVIOR_AUTO_UPGRADE))
        await _set_current(client, dep, "2.0")
        await p.signal("finish")
        await a.signal("finish")
        assert await p.result() == "pinned-v1"
        assert await a.result() == "auto-v2"
        events = [e async for e in a.fetch_history_events()]
        done = [e.workflow_task_completed_event_attributes for e in events if e.HasField(
            "workflow_task_completed_event_attributes")]
        assert [d.deployment_version.build_id for d in done] == ["1.0", "2.0"]


async def test_pinned_override_at_start(client: Client) -> None:
    """An AUTO_UPGRADE workflow started with a pinned override stays on that version."""
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    v1, v2 = QuickAutoV1, QuickAutoV2
    async with _worker(client, tq, v1, dep, "1.0"), _worker(client, tq, v2, dep, "2.0"):
        await _visible(client, dep, "1.0", "2.0")
        await _set_current(client, dep, "2.0")
        h = await client.start_workflow(
            "QuickAuto", id=f"o-{tq}", task_queue=tq,
            versioning_override=PinnedVersioningOverride(WorkerDeploymentVersion(dep, "1.0")),
        )
        assert await h.result() == "v1"
        info = (await h.describe()).raw_description.workflow_execution_info.versioning_info
        assert info.versioning_override.pinned.version.build_id == "1.0"
        assert info.behavior == VB.VERSIONING_BEHAVIOR_PINNED


FIXTURE = Path(__file__).parent / "fixtures" / "deployments_devserver.json"


async def test_errors_as_a_dev_server(client: Client) -> None:
    """The errors of the deployment RPCs, compared with a dev server's (tests/fixtures)."""
    dev = json.loads(FIXTURE.read_text())
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    ns, ws = client.namespace, client.workflow_service
    v1 = DeploymentVersion(deployment_name=dep, build_id="1.0")
    v9 = DeploymentVersion(deployment_name=dep, build_id="9.9")

    async def error(call: Awaitable[Any]) -> dict[str, str]:
        with pytest.raises(RPCError) as err:
            await call
        return {"status": err.value.status.name, "message": err.value.message.replace(dep, "DEP")}

    got = {"describe_missing": await error(_describe(client, dep)),
           "describe_empty_name": await error(_describe(client, ""))}
    async with _worker(client, tq, QuickV1, dep, "1.0"):
        await _visible(client, dep, "1.0")
        got["set_current_unknown"] = await error(_set_current(client, dep, "9.9"))
        got["set_current_bad_token"] = await error(_set_current(client, dep, "1.0", b"zzz"))
        await _set_current(client, dep, "1.0")
        got["set_ramping_current"] = await error(_set_ramping(client, dep, "1.0", 10))
        got["set_ramping_bad_pct"] = await error(_set_ramping(client, dep, "1.0", 120))
        got["set_ramping_unknown"] = await error(_set_ramping(client, dep, "9.9", 10))
        got["describe_version_missing"] = await error(ws.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(namespace=ns, deployment_version=v9)))
        got["delete_current_version"] = await error(ws.delete_worker_deployment_version(
            DeleteWorkerDeploymentVersionRequest(namespace=ns, deployment_version=v1)))
        h = await client.start_workflow("Quick", id=f"q-{tq}", task_queue=tq)
        await h.result()
        info = (await h.describe()).raw_description.workflow_execution_info.versioning_info
        events = (await h.fetch_history()).events
    assert got == {k: dev[k] for k in got}
    want = dev["describe_wf_versioning_info"]
    assert VB.Name(info.behavior) == want["behavior"] and info.version.replace(dep, "DEP") == want["version"]
    wft = [e.workflow_task_completed_event_attributes for e in events if e.HasField(
        "workflow_task_completed_event_attributes")][0]
    assert VB.Name(wft.versioning_behavior) == dev["wft_completed"]["versioningBehavior"]
    assert wft.worker_deployment_name == dep and wft.deployment_version == v1


@workflow.defn(name="Can", versioning_behavior=VersioningBehavior.PINNED)
class CanV1:
    @workflow.run
    async def run(self, step: int, upgrade: bool) -> str:
        if step == 0:
            await workflow.wait_condition(lambda: workflow.info().is_target_worker_deployment_version_changed())
            workflow.continue_as_new(args=[1, upgrade], initial_versioning_behavior=(
                workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE if upgrade
                else workflow.ContinueAsNewVersioningBehavior.UNSPECIFIED))
        return "v1"

    @workflow.signal
    def poke(self) -> None:
        pass


@workflow.defn(name="Can", versioning_behavior=VersioningBehavior.PINNED)
class CanV2:
    @workflow.run
    async def run(self, step: int, upgrade: bool) -> str:
        return "v2"

    @workflow.signal
    def poke(self) -> None:
        pass


@pytest.mark.parametrize("upgrade", [False, True])
async def test_continue_as_new_keeps_the_pin_or_upgrades(client: Client, upgrade: bool) -> None:
    """A pinned run sees its target version change; its continue-as-new stays pinned to its
    version, unless it asks for AUTO_UPGRADE (then it starts on the current version)."""
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    async with _worker(client, tq, CanV1, dep, "1.0"), _worker(client, tq, CanV2, dep, "2.0"):
        await _visible(client, dep, "1.0", "2.0")
        await _set_current(client, dep, "1.0")
        h = await client.start_workflow("Can", args=[0, upgrade], id=f"can-{tq}", task_queue=tq)

        async def on_v1() -> None:
            info = (await h.describe()).raw_description.workflow_execution_info.versioning_info
            assert info.deployment_version.build_id == "1.0"

        await _eventually(on_v1)
        await _set_current(client, dep, "2.0")
        await h.signal("poke")  # a workflow task that sees the change
        assert await h.result() == ("v2" if upgrade else "v1")


async def test_unversioned_and_versioned_workers_on_one_queue(client: Client) -> None:
    """With no current version, new runs go to unversioned workers; once one is set, to it."""
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    plain = Worker(client, task_queue=tq, workflows=[QuickV1], workflow_runner=UnsandboxedWorkflowRunner())
    async with plain, _worker(client, tq, QuickV2, dep, "2.0"):
        await _visible(client, dep, "2.0")
        assert await client.execute_workflow("Quick", id=f"u1-{tq}", task_queue=tq) == "v1"
        await _set_current(client, dep, "2.0")
        for i in range(3):
            assert await client.execute_workflow("Quick", id=f"u2-{i}-{tq}", task_queue=tq) == "v2"


async def _cli(db_url: str, namespace: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOSIFY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbosify", "worker", "deployment", *args, "--db", db_url, "-n", namespace,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_sets_and_describes_like_temporal(client: Client, db_url: str) -> None:
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    ns = client.namespace
    async with _worker(client, tq, QuickV1, dep, "1.0"), _worker(client, tq, QuickV2, dep, "2.0"):
        await _visible(client, dep, "1.0", "2.0")
        rc, out, err = await _cli(db_url, ns, "set-current-version", "--deployment-name", dep, "--build-id", "1.0", "-y")
        assert rc == 0 and out.strip() == "Successfully set the current worker deployment version", (out, err)
        rc, out, err = await _cli(db_url, ns, "set-ramping-version", "--deployment-name", dep, "--build-id", "1.0",
                                  "--percentage", "5", "-y")
        assert rc == 1 and "requested ramping version" in err and "is already current" in err, (out, err)
        rc, out, err = await _cli(db_url, ns, "set-ramping-version", "--deployment-name", dep, "--build-id", "2.0",
                                  "--percentage", "25", "-y")
        assert rc == 0, err
        rc, out, err = await _cli(db_url, ns, "describe", "-d", dep)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0] == "Worker Deployment:" and lines[1].split() == ["Name", dep]
        fields = {ln.split()[0]: ln.split()[1:] for ln in lines[1:] if ln.strip() and not ln.startswith("Version")}
        assert fields["CurrentVersionBuildID"] == ["1.0"] and fields["RampingVersionBuildID"] == ["2.0"]
        assert fields["RampingVersionPercentage"] == ["25"]
        assert "Version Summaries:" in lines
        rc, out, err = await _cli(db_url, ns, "describe", "-d", dep, "-o", "json")
        doc = json.loads(out)
        assert doc["routingConfig"]["currentVersionBuildID"] == "1.0"
        assert doc["routingConfig"]["rampingVersionPercentage"] == 25
        # In the order the versions were created: the two workers register at the same time.
        assert sorted(v["BuildID"] for v in doc["versionSummaries"]) == ["1.0", "2.0"]
        rc, out, err = await _cli(db_url, ns, "list", "-o", "json")
        assert dep in [d["name"] for d in json.loads(out)]
        rc, out, err = await _cli(db_url, ns, "set-ramping-version", "--deployment-name", dep, "--delete", "-y")
        assert rc == 0, err
        assert not (await _describe(client, dep)).worker_deployment_info.routing_config.ramping_version


async def test_delete_version_once_its_workers_left(client: Client) -> None:
    dev = json.loads(FIXTURE.read_text())["delete_version_with_pollers"]
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    v2 = DeploymentVersion(deployment_name=dep, build_id="2.0")
    req = DeleteWorkerDeploymentVersionRequest(namespace=client.namespace, deployment_version=v2)
    async with _worker(client, tq, QuickV1, dep, "1.0"):
        async with _worker(client, tq, QuickV2, dep, "2.0"):
            await _visible(client, dep, "1.0", "2.0")
            with pytest.raises(RPCError) as err:
                await client.workflow_service.delete_worker_deployment_version(req)
            assert err.value.status.name == dev["status"]
            assert err.value.message.replace(dep, "DEP").replace("2.0", "1.0") == dev["message"]
        await client.workflow_service.delete_worker_deployment_version(req)
        info = (await _describe(client, dep)).worker_deployment_info
        assert [v.deployment_version.build_id for v in info.version_summaries] == ["1.0"]


@workflow.defn(name="Parent", versioning_behavior=VersioningBehavior.PINNED)
class ParentV1:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return await workflow.execute_child_workflow("Quick", id=f"{workflow.info().workflow_id}-child")

    @workflow.signal
    def finish(self) -> None:
        self.go = True


async def test_child_of_a_pinned_parent_starts_on_its_version(client: Client) -> None:
    dep, tq = f"dep-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    w1 = Worker(client, task_queue=tq, workflows=[ParentV1, QuickV1], workflow_runner=UnsandboxedWorkflowRunner(),
                deployment_config=WorkerDeploymentConfig(
                    version=WorkerDeploymentVersion(deployment_name=dep, build_id="1.0"), use_worker_versioning=True))
    async with w1, _worker(client, tq, QuickV2, dep, "2.0"):
        await _visible(client, dep, "1.0", "2.0")
        await _set_current(client, dep, "1.0")
        h = await client.start_workflow("Parent", id=f"parent-{tq}", task_queue=tq)

        async def pinned() -> None:
            info = (await h.describe()).raw_description.workflow_execution_info.versioning_info
            assert info.behavior == VB.VERSIONING_BEHAVIOR_PINNED

        await _eventually(pinned)
        await _set_current(client, dep, "2.0")
        await h.signal("finish")
        assert await h.result() == "v1"
        child = client.get_workflow_handle(f"parent-{tq}-child")
        events = (await child.fetch_history()).events
        assert events[0].workflow_execution_started_event_attributes.inherited_pinned_version.build_id == "1.0"
