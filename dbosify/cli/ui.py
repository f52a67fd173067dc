"""``dbosify ui``: the web view (dbosify/ui/), served by Uvicorn on 127.0.0.1 by default.

The token comes from ``DBOSIFY_UI_TOKEN`` or ``--token-file`` and is never printed nor taken on
the command line (where ``ps`` shows it). Off loopback the view needs TLS (``--tls-cert`` and
``--tls-key``, or ``--tls-upstream`` behind a reverse proxy that terminates it) and a token; with
none given, one is generated into a file readable by its owner only, whose path is printed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path

import click

from dbosify.cli.common import CliError, Conn, client_options
from dbosify.ui.streams import STREAMS_PER_CLIENT, STREAMS_TOTAL

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


def default_token_file() -> Path:
    from dbosify._store.urls import default_sqlite_dir

    return default_sqlite_dir() / "ui-token"


def read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise CliError(f"the token file {path} is empty")
    return token


def write_token_file(path: Path) -> str:
    """A new random token in ``path``, created with mode 0600 (its directory 0700)."""
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
            os.write(fd, (token + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CliError(f"cannot write the token file {path}: {exc.strerror or exc}") from None
    return token


@click.command("ui")
@click.option("--ip", "--host", "host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs TLS and a token.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8233, show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help=f"A file holding the access token (or set {TOKEN_ENV}). Off loopback without"
              " either, a new token is written to a file readable by you only.")
@click.option("--token", "token_arg", default=None, hidden=True)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS certificate (PEM) to serve HTTPS; needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS private key (PEM).")
@click.option("--tls-upstream", is_flag=True, default=False,
              help="A reverse proxy in front terminates TLS: serve plain HTTP to it, mark the"
              " cookie Secure, and require a token.")
@click.option("--max-streams", type=click.IntRange(1), default=STREAMS_TOTAL, show_default=True,
              help="Live history streams open at once, in all (past it: HTTP 429).")
@click.option("--max-streams-per-client", type=click.IntRange(1), default=STREAMS_PER_CLIENT, show_default=True,
              help="Live history streams open at once from one client address.")
@client_options
def ui_cmd(
    conn: Conn, host: str, port: int, token_file: str | None, token_arg: str | None,
    tls_cert: str | None, tls_key: str | None, tls_upstream: bool, max_streams: int,
    max_streams_per_client: int,
) -> None:
    """Serve a web view of the runs: list, filter, history, live updates, signal/cancel/terminate."""
    if token_arg is not None:
        raise CliError(f"--token is not accepted (other users see it in ps): set {TOKEN_ENV} or use --token-file")
    if bool(tls_cert) != bool(tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    if tls_cert and tls_upstream:
        raise CliError("--tls-upstream is for a proxy that terminates TLS; drop it with --tls-cert")
    loopback = is_loopback(host)
    if not loopback and not (tls_cert or tls_upstream):
        raise CliError(
            f"refusing to serve on {host} over plain HTTP: give --tls-cert and --tls-key, or"
            " --tls-upstream behind a reverse proxy that terminates TLS (or bind 127.0.0.1)"
        )
    env_token = os.environ.get(TOKEN_ENV) or None
    if env_token and token_file:
        raise CliError(f"give the token by {TOKEN_ENV} or by --token-file, not both")
    token, source = None, ""
    if token_file:
        token, source = read_token_file(token_file), f"in {token_file}"
    elif env_token:
        token, source = env_token.strip(), f"from {TOKEN_ENV}"
    elif not loopback or tls_upstream:
        path = default_token_file()
        token, source = write_token_file(path), f"in {path} (new, mode 0600)"
    try:
        from dbosify.ui.server import Options, serve
    except ImportError as exc:
        raise CliError(f"dbosify ui needs its extra: pip install 'dbosify[ui]' ({exc})") from None
    serve(conn, Options(
        host=host, port=port, token=token, token_source=source, tls_cert=tls_cert, tls_key=tls_key,
        tls_upstream=tls_upstream, streams=max_streams, streams_per_client=max_streams_per_client,
    ))
