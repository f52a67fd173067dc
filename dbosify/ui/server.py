"""Serving the web view: the client, the token gate, and Uvicorn."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any
from urllib.parse import parse_qsl, urlencode

import click
import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dbosify.cli.common import Conn

COOKIE = "dbosify_ui_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class Gate:
    """Every request needs the token (``?token=`` once, then a cookie; or a Bearer header) when
    one is set; without one, only loopback Host names are served (no DNS rebinding). A POST
    must carry ``X-Dbosify: 1``, which a cross-site form or script cannot send unasked."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response: Any = None
        if self.token is None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0]
            if host not in LOOPBACK_HOSTS:
                response = PlainTextResponse("dbosify ui: unknown Host", 400)
        else:
            given = request.query_params.get("token")
            auth = request.headers.get("authorization", "")
            presented = given or request.cookies.get(COOKIE) or auth.removeprefix("Bearer ")
            if not hmac.compare_digest(presented.encode(), self.token.encode()):
                response = PlainTextResponse(
                    "dbosify ui: a token is needed: open the address that `dbosify ui` printed", 401)
            elif given:  # trade the token in the address for a cookie
                rest = [(k, v) for k, v in parse_qsl(request.url.query) if k != "token"]
                url = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response = RedirectResponse(url, 303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        if response is None and request.method == "POST" and request.headers.get("x-dbosify") != "1":
            response = PlainTextResponse("dbosify ui: missing X-Dbosify header", 403)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def make_app(conn: Conn, token: str | None) -> ASGIApp:
    from dbosify.ui.app import build

    return Gate(build(conn), token)


def serve(conn: Conn, *, host: str, port: int, token: str | None) -> None:
    app = make_app(conn, token)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=1,  # live history streams never end on their own
    )
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"dbosify ui: {address} (namespace {conn.namespace}); Ctrl-C stops", err=True)
    asyncio.run(server.serve())

