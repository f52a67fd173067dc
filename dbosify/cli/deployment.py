"""``dbosify worker deployment describe|list|set-current-version|set-ramping-version``.

Shaped like ``temporal worker deployment``: the same flags (``--name``/``-d`` for describe;
``--deployment-name``, ``--build-id``, ``--unversioned``, ``--percentage``, ``--delete``, ``--yes``
for the setters), the same tables and ``-o json`` keys. Each verb sends the Worker Deployment RPC
an app could send through ``client.workflow_service``; the conflict token is not used (the last
write wins, as with ``temporal``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from dbosify.cli.common import Conn, client_options, connect, run
from dbosify.cli.output import echo, echo_json
from dbosify.cli.task_queue import _grid, ago, go_float

if TYPE_CHECKING:
    from temporalio.client import Client

GO_ZERO = "0001-01-01T00:00:00Z"


def _time(ts: Any) -> str:
    return str(ts.ToJsonString()) if ts.seconds or ts.nanos else GO_ZERO


def _when(ts: Any, now: datetime) -> str:
    return ago(ts.ToDatetime(timezone.utc), now) if ts.seconds or ts.nanos else ""


def _number(value: float) -> int | float:
    return int(value) if value == int(value) else float(go_float(value))


def routing_json(rc: Any) -> dict[str, Any]:
    return {
        "currentVersionDeploymentName": rc.current_deployment_version.deployment_name,
        "currentVersionBuildID": rc.current_deployment_version.build_id,
        "rampingVersionDeploymentName": rc.ramping_deployment_version.deployment_name,
        "rampingVersionBuildID": rc.ramping_deployment_version.build_id,
        "rampingVersionPercentage": _number(rc.ramping_version_percentage),
        "currentVersionChangedTime": _time(rc.current_version_changed_time),
        "rampingVersionChangedTime": _time(rc.ramping_version_changed_time),
        "rampingVersionPercentageChangedTime": _time(rc.ramping_version_percentage_changed_time),
    }


def describe_json(info: Any) -> dict[str, Any]:
    """The ``-o json`` document of ``temporal worker deployment describe``."""
    return {
        "name": info.name, "createTime": _time(info.create_time),
        "lastModifierIdentity": info.last_modifier_identity, "routingConfig": routing_json(info.routing_config),
        "versionSummaries": [
            {"deploymentName": v.deployment_version.deployment_name, "BuildID": v.deployment_version.build_id,
             "drainageStatus": "unspecified", "createTime": _time(v.create_time)}
            for v in info.version_summaries
        ],
        "managerIdentity": info.manager_identity,
    }


async def _describe(client: Client, name: str) -> Any:
    from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest

    return await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=name)
    )


def register(group: click.Group) -> None:
    for cmd in (describe_cmd, list_cmd, set_current_cmd, set_ramping_cmd):
        group.add_command(cmd)


@click.command("describe")
@click.option("--name", "-d", required=True, help="Name for a Worker Deployment.")
@client_options
def describe_cmd(conn: Conn, name: str) -> None:
    """Describe a Worker Deployment: its routing (current and ramping versions) and versions."""

    async def go() -> None:
        info = (await _describe(await connect(conn), name)).worker_deployment_info
        if conn.json:
            echo_json(json.dumps(describe_json(info), indent=2, ensure_ascii=False))
            return
        now = datetime.now(timezone.utc)
        rc = info.routing_config
        click.echo("Worker Deployment:")
        fields = [("Name", info.name), ("CreateTime", _when(info.create_time, now))]
        if rc.current_deployment_version.build_id:
            fields += [("CurrentVersionDeploymentName", rc.current_deployment_version.deployment_name),
                       ("CurrentVersionBuildID", rc.current_deployment_version.build_id),
                       ("CurrentVersionChangedTime", _when(rc.current_version_changed_time, now))]
        if rc.ramping_deployment_version.build_id:
            fields += [("RampingVersionDeploymentName", rc.ramping_deployment_version.deployment_name),
                       ("RampingVersionBuildID", rc.ramping_deployment_version.build_id),
                       ("RampingVersionPercentage", go_float(rc.ramping_version_percentage)),
                       ("RampingVersionChangedTime", _when(rc.ramping_version_changed_time, now))]
        width = max(len(k) for k, _ in fields)
        for k, v in fields:
            echo(f"  {k.ljust(width)}  {v}".rstrip())
        click.echo("")
        click.echo("Version Summaries:")
        _grid(["DeploymentName", "BuildID", "DrainageStatus", "CreateTime"],
              [[v.deployment_version.deployment_name, v.deployment_version.build_id, "unspecified",
                _when(v.create_time, now)] for v in info.version_summaries])

    run("unable to describe worker deployment", go())


@click.command("list")
@client_options
def list_cmd(conn: Conn) -> None:
    """List the Worker Deployments of the namespace."""
    from temporalio.api.workflowservice.v1 import ListWorkerDeploymentsRequest

    async def go() -> None:
        client = await connect(conn)
        resp = await client.workflow_service.list_worker_deployments(
            ListWorkerDeploymentsRequest(namespace=client.namespace)
        )
        if conn.json:
            echo_json(json.dumps([
                {"name": d.name, "createTime": _time(d.create_time), "routingConfig": routing_json(d.routing_config)}
                for d in resp.worker_deployments
            ], indent=2, ensure_ascii=False))
            return
        now = datetime.now(timezone.utc)
        _grid(["Name", "CreateTime", "CurrentVersionDeploymentName", "CurrentVersionBuildID",
               "RampingVersionDeploymentName", "RampingVersionBuildID", "RampingVersionPercentage"],
              [[d.name, _when(d.create_time, now), d.routing_config.current_deployment_version.deployment_name,
                d.routing_config.current_deployment_version.build_id,
                d.routing_config.ramping_deployment_version.deployment_name,
                d.routing_config.ramping_deployment_version.build_id,
                d.routing_config.ramping_version_percentage] for d in resp.worker_deployments])

    run("unable to list worker deployments", go())


def _target(build_id: str | None, unversioned: bool, *, required: bool = True) -> str:
    if build_id and unversioned:
        raise click.UsageError("--build-id and --unversioned cannot be used together")
    if required and not build_id and not unversioned:
        raise click.UsageError("--build-id is required unless --unversioned is specified")
    return build_id or ""


def _setter_options(f: Any) -> Any:
    for opt in (
        click.option("--yes", "-y", is_flag=True, help="Don't prompt to confirm."),
        click.option("--allow-no-pollers", is_flag=True, help="Set the version even if it has no pollers."),
        click.option("--ignore-missing-task-queues", is_flag=True, help="Override protection to remove task queues."),
        click.option("--unversioned", is_flag=True, help="Target unversioned workers. Cannot be used with --build-id."),
        click.option("--build-id", default=None, help="Build ID of the Worker Deployment Version."),
        click.option("--deployment-name", required=True, help="Name of the Worker Deployment."),
    ):
        f = opt(f)
    return f


@click.command("set-current-version")
@_setter_options
@client_options
def set_current_cmd(conn: Conn, deployment_name: str, build_id: str | None, unversioned: bool,
                    ignore_missing_task_queues: bool, allow_no_pollers: bool, yes: bool) -> None:
    """Set the Current Version of a Deployment: new workflows, and AUTO_UPGRADE ones at their
    next task, go to its Workers."""
    from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest

    build = _target(build_id, unversioned)

    async def go() -> None:
        client = await connect(conn)
        await client.workflow_service.set_worker_deployment_current_version(SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace, deployment_name=deployment_name, build_id=build,
            ignore_missing_task_queues=ignore_missing_task_queues, allow_no_pollers=allow_no_pollers,
        ))
        click.echo("Successfully set the current worker deployment version")

    run("setting the current worker deployment version", go())


@click.command("set-ramping-version")
@_setter_options
@click.option("--percentage", type=float, default=0.0, help="Percentage of tasks redirected to the Ramping Version.")
@click.option("--delete", is_flag=True, help="Delete the Ramping Version.")
@client_options
def set_ramping_cmd(conn: Conn, deployment_name: str, build_id: str | None, unversioned: bool,
                    ignore_missing_task_queues: bool, allow_no_pollers: bool, yes: bool, percentage: float,
                    delete: bool) -> None:
    """Set (or with --delete, remove) the Ramping Version of a Deployment and its percentage:
    that share of new workflows, chosen by workflow id, go to its Workers."""
    from temporalio.api.workflowservice.v1 import SetWorkerDeploymentRampingVersionRequest

    build = "" if delete else _target(build_id, unversioned)
    if delete:
        percentage = 0.0

    async def go() -> None:
        client = await connect(conn)
        await client.workflow_service.set_worker_deployment_ramping_version(SetWorkerDeploymentRampingVersionRequest(
            namespace=client.namespace, deployment_name=deployment_name, build_id=build, percentage=percentage,
            ignore_missing_task_queues=ignore_missing_task_queues, allow_no_pollers=allow_no_pollers,
        ))
        click.echo("Successfully set the ramping worker deployment version")

    run("setting the ramping worker deployment version", go())
