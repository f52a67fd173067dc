"""``dbosify operator nexus endpoint create|get|list|delete``: Nexus endpoints, with the
``temporal operator nexus endpoint`` flags (``--name``, ``--target-namespace``,
``--target-task-queue``, ``--description``, ``--description-file``). Endpoints belong to the
database: every namespace's clients see the same ones."""

from __future__ import annotations

import json
from typing import Any

import click

from dbosify.cli.common import Conn, client_options, connect, run, table
from dbosify.cli.output import echo, echo_json


def register(group: click.Group) -> None:
    nexus = click.Group("nexus", help="Nexus endpoints (`temporal operator nexus`).")
    endpoint = click.Group("endpoint", help="Create, get, list and delete Nexus endpoints.")
    for cmd in (create_cmd, get_cmd, list_cmd, delete_cmd):
        endpoint.add_command(cmd)
    nexus.add_command(endpoint)
    group.add_command(nexus)


def _as_dict(e: Any) -> dict[str, Any]:
    desc = ""
    if e.spec.HasField("description"):
        try:
            desc = json.loads(e.spec.description.data)
        except ValueError:
            desc = e.spec.description.data.decode(errors="replace")
    return {
        "id": e.id, "version": e.version, "name": e.spec.name,
        "targetNamespace": e.spec.target.worker.namespace, "targetTaskQueue": e.spec.target.worker.task_queue,
        "description": desc,
    }


def _show(conn: Conn, endpoints: list[Any]) -> None:
    rows = [_as_dict(e) for e in endpoints]
    if conn.json:
        echo_json(json.dumps(rows if len(rows) != 1 else rows[0], indent=2))
    else:
        table(["Name", "Id", "Version", "Target namespace", "Target task queue", "Description"],
              [[r["name"], r["id"], r["version"], r["targetNamespace"], r["targetTaskQueue"], r["description"]]
               for r in rows])


async def _by_name(client: Any, name: str) -> Any:
    from temporalio.api.operatorservice.v1 import ListNexusEndpointsRequest

    resp = await client.operator_service.list_nexus_endpoints(ListNexusEndpointsRequest(name=name))
    if not resp.endpoints:
        raise click.ClickException(f"endpoint not found: {name}")
    return resp.endpoints[0]


@click.command("create")
@click.option("--name", required=True, help="Endpoint name.")
@click.option("--target-namespace", required=True, help="Namespace the endpoint's requests go to.")
@click.option("--target-task-queue", required=True, help="Task queue whose workers handle the requests.")
@click.option("--description", default=None, help="Description (Markdown).")
@click.option("--description-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Read the description from this file.")
@client_options
def create_cmd(conn: Conn, name: str, target_namespace: str, target_task_queue: str,
               description: str | None, description_file: str | None) -> None:
    """Create a Nexus endpoint that routes to workers of a namespace's task queue."""
    if description is not None and description_file is not None:
        raise click.UsageError("give --description or --description-file, not both")
    if description_file is not None:
        with open(description_file, encoding="utf-8") as f:
            description = f.read()

    async def go() -> None:
        from temporalio.api.nexus.v1 import EndpointSpec
        from temporalio.api.operatorservice.v1 import CreateNexusEndpointRequest

        spec = EndpointSpec(name=name)
        spec.target.worker.namespace = target_namespace
        spec.target.worker.task_queue = target_task_queue
        if description is not None:
            spec.description.data = json.dumps(description).encode()
            spec.description.metadata["encoding"] = b"json/plain"
        client = await connect(conn)
        resp = await client.operator_service.create_nexus_endpoint(CreateNexusEndpointRequest(spec=spec))
        if conn.json:
            echo_json(json.dumps(_as_dict(resp.endpoint), indent=2))
        else:
            echo(f"Endpoint {name} successfully created.")

    run(f"failed creating Nexus endpoint {name!r}", go())


@click.command("get")
@click.option("--name", required=True, help="Endpoint name.")
@client_options
def get_cmd(conn: Conn, name: str) -> None:
    """Show a Nexus endpoint."""

    async def go() -> None:
        _show(conn, [await _by_name(await connect(conn), name)])

    run(f"failed getting Nexus endpoint {name!r}", go())


@click.command("list")
@client_options
def list_cmd(conn: Conn) -> None:
    """List the database's Nexus endpoints."""

    async def go() -> None:
        from temporalio.api.operatorservice.v1 import ListNexusEndpointsRequest

        client = await connect(conn)
        found: list[Any] = []
        token = b""
        while True:
            resp = await client.operator_service.list_nexus_endpoints(
                ListNexusEndpointsRequest(page_size=100, next_page_token=token))
            found.extend(resp.endpoints)
            token = resp.next_page_token
            if not token:
                break
        _show(conn, found)

    run("failed listing Nexus endpoints", go())


@click.command("delete")
@click.option("--name", required=True, help="Endpoint name.")
@client_options
def delete_cmd(conn: Conn, name: str) -> None:
    """Delete a Nexus endpoint."""

    async def go() -> None:
        from temporalio.api.operatorservice.v1 import DeleteNexusEndpointRequest

        client = await connect(conn)
        e = await _by_name(client, name)
        await client.operator_service.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=e.id, version=e.version))
        if conn.json:
            echo_json(json.dumps({"name": name, "deleted": True}))
        else:
            echo(f"Endpoint {name} successfully deleted.")

    run(f"failed deleting Nexus endpoint {name!r}", go())
