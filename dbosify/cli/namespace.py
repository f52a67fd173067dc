"""``dbosify namespace create|list``: registering namespaces, as on Temporal.

A namespace other than ``default`` must be registered before anything uses it. ``create`` sends
the RegisterNamespace RPC an app could send itself (``client.workflow_service.register_namespace``);
``list`` is ListNamespaces. ``DBOSIFY_NAMESPACES`` registers names at connect instead.
"""

from __future__ import annotations

import json

import click

from dbosify.cli.common import Conn, client_options, connect, run, table
from dbosify.cli.output import echo, echo_json


def register(group: click.Group) -> None:
    for cmd in (create_cmd, list_cmd):
        group.add_command(cmd)


@click.command("create")
@click.argument("name", required=False)
@client_options
def create_cmd(conn: Conn, name: str | None) -> None:
    """Register namespace NAME (or --namespace); an error if it is registered already."""
    target = name or conn.namespace

    async def go() -> None:
        from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest

        client = await connect(conn)
        await client.workflow_service.register_namespace(RegisterNamespaceRequest(namespace=target))
        if conn.json:
            echo_json(json.dumps({"namespace": target, "registered": True}))
        else:
            echo(f"Registered namespace {target}.")

    run(f"failed registering namespace {target!r}", go())


@click.command("list")
@client_options
def list_cmd(conn: Conn) -> None:
    """Show the registered namespaces (``default`` always exists)."""

    async def go() -> None:
        from temporalio.api.workflowservice.v1 import ListNamespacesRequest

        client = await connect(conn)
        resp = await client.workflow_service.list_namespaces(ListNamespacesRequest())
        names = [n.namespace_info.name for n in resp.namespaces]
        if conn.json:
            echo_json(json.dumps([{"name": n, "state": "Registered"} for n in names], indent=2))
        else:
            table(["Name", "State"], [[n, "Registered"] for n in names])

    run("failed listing namespaces", go())
