"""``dbosify ui``: the web view (dbosify/ui/), served by Uvicorn on 127.0.0.1 by default."""

from __future__ import annotations

import ipaddress
import socket

import click

from dbosify.cli.common import CliError, Conn, client_options

TOKEN_ENV = "DBOSIFY_UI_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


@click.command("ui")
@click.option("--ip", "--host", "host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs a token.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8233, show_default=True)
@click.option("--token", envvar=TOKEN_ENV, default=None,
              help=f"Access token, required off loopback (or set {TOKEN_ENV}).")
@client_options
def ui_cmd(conn: Conn, host: str, port: int, token: str | None) -> None:
    """Serve a web view of the runs: list, filter, history, live updates, signal/cancel/terminate."""
    if not token and not is_loopback(host):
        raise CliError(
            f"refusing to serve on {host} without a token: pass --token or set {TOKEN_ENV}"
            " (or bind 127.0.0.1)"
        )
    try:
        from dbosify.ui.server import serve
    except ImportError as exc:
        raise CliError(f"dbosify ui needs its extra: pip install 'dbosify[ui]' ({exc})") from None
    serve(conn, host=host, port=port, token=token or None)
