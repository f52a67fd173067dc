"""Serving the web view: the app behind its gate (`gate`), and Uvicorn, with TLS when given."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import click
import uvicorn
from starlette.types import ASGIApp

from dbosify.cli.common import Conn
from dbosify.ui.gate import Gate, SecurityHeaders
from dbosify.ui.streams import STREAMS_PER_CLIENT, STREAMS_TOTAL


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8233
    token: str | None = None
    token_source: str = ""  # where the token came from, for the banner (never the token)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_upstream: bool = False  # a reverse proxy in front terminates TLS
    streams: int = STREAMS_TOTAL
    streams_per_client: int = STREAMS_PER_CLIENT

    @property
    def secure(self) -> bool:
        return bool(self.tls_cert) or self.tls_upstream


def make_app(conn: Conn, opts: Options) -> ASGIApp:
    from dbosify.ui.app import build

    app = build(conn, streams=opts.streams, streams_per_client=opts.streams_per_client)
    return SecurityHeaders(Gate(app, opts.token, secure=opts.secure))


def serve(conn: Conn, opts: Options) -> None:
    app = make_app(conn, opts)
    config = uvicorn.Config(
        app, host=opts.host, port=opts.port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=1,  # live history streams never end on their own
        ssl_certfile=opts.tls_cert, ssl_keyfile=opts.tls_key,
    )
    server = uvicorn.Server(config)
    shown = f"[{opts.host}]" if ":" in opts.host else opts.host
    scheme = "https" if opts.tls_cert else "http"
    sign_in = f"; sign in with the token {opts.token_source}" if opts.token else ""
    click.echo(f"dbosify ui: {scheme}://{shown}:{opts.port}/ (namespace {conn.namespace}){sign_in};"
               " Ctrl-C stops", err=True)
    asyncio.run(server.serve())
