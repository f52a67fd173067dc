"""The web view's front door: the token and sessions, the rules for requests, and the headers
every response carries.

- With a token, a browser signs in once (the login form, or ``?token=`` in the address) and
  gets a cookie holding a random session id (``HttpOnly``, ``SameSite=Strict``, ``Secure`` when
  served over TLS); scripts may send ``Authorization: Bearer <token>`` instead. The token itself
  never travels in a cookie. Without a token (loopback only), only loopback Host names are served,
  so a DNS-rebinding page cannot reach the view.
- Anything that changes a run or replays it (signal, cancel, terminate, the stack trace) is a
  POST carrying ``X-Dbosify-Action: 1``: a page on another origin can send that header only after
  a CORS preflight, which the view never grants.
- The view's own requests (``/api/...``, the summary) are refused when the browser says they come
  from another origin (``Sec-Fetch-Site``).
- Every response forbids framing and allows only the view's own script and style sheet.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dbosify.ui import pages

COOKIE = "dbosify_ui_session"
ACTION_HEADER = "x-dbosify-action"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # an address holding ?token= never leaks to another site
    "Cross-Origin-Resource-Policy": "same-origin",
}
SESSION_IDLE = 12 * 3600.0  # seconds a session lives unused
SESSION_LIMIT = 1000  # sessions kept; the least recently used goes first
LOGIN_BODY_LIMIT = 4096


class SecurityHeaders:
    """Adds `HEADERS` to every HTTP response, whoever produced it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Sessions:
    """The signed-in browsers: random ids kept in memory (a restart signs everyone out)."""

    def __init__(self, idle: float = SESSION_IDLE, limit: int = SESSION_LIMIT) -> None:
        self.idle = idle
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def new(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._seen[sid] = time.monotonic()
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        seen = self._seen.get(sid)
        now = time.monotonic()
        if seen is None or now - seen > self.idle:
            self._seen.pop(sid, None)
            return False
        self._seen[sid] = now
        self._seen.move_to_end(sid)
        return True


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin (``Sec-Fetch-Site``,
    else ``Origin``); requests without either header (scripts, older browsers) pass."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is not None:
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return True


class Gate:
    """The rules of the module docstring, in front of the app."""

    def __init__(self, app: ASGIApp, token: str | None, *, secure: bool = False) -> None:
        self.app = app
        self.token = token
        self.secure = secure
        self.sessions = Sessions()

    def _token_ok(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _signed_in(self, target: str) -> Response:
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, self.sessions.new(), httponly=True, samesite="strict",
                            secure=self.secure, path="/")
        return response

    def _login_page(self, request: Request, failed: bool) -> Response:
        if request.url.path.startswith("/api/"):
            return PlainTextResponse("dbosify ui: sign in first (a session cookie or a Bearer token)", 401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return HTMLResponse(pages.login_page(target if target.startswith("/") else "/", failed), 401)

    async def _login(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > LOGIN_BODY_LIMIT:
                return PlainTextResponse("dbosify ui: request too large", 413)
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        nxt = form.get("next") or "/"
        if not nxt.startswith("/") or nxt.startswith("//") or nxt.startswith("/login"):
            nxt = "/"
        if not self._token_ok(form.get("token", "")):
            return HTMLResponse(pages.login_page(nxt, True), 401)
        return self._signed_in(nxt)

    async def _check(self, request: Request) -> Response | None:
        path = request.url.path
        if self.token is None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0]
            if host not in LOOPBACK_HOSTS:
                return PlainTextResponse("dbosify ui: unknown Host", 400)
        elif not path.startswith("/static/"):  # the style sheet and script are public
            if path == "/login" and request.method == "POST":
                if not _same_origin(request):
                    return PlainTextResponse("dbosify ui: cross-origin sign-in refused", 403)
                return await self._login(request)
            given = request.query_params.get("token")
            if given is not None:  # trade the token in the address for a session
                if not self._token_ok(given):
                    return self._login_page(request, True)
                rest = [(k, v) for k, v in parse_qsl(request.url.query) if k != "token"]
                return self._signed_in(path + (f"?{urlencode(rest)}" if rest else ""))
            auth = request.headers.get("authorization", "")
            bearer = auth.startswith("Bearer ") and self._token_ok(auth.removeprefix("Bearer "))
            if not bearer and not self.sessions.valid(request.cookies.get(COOKIE)):
                return self._login_page(request, False)
        if (path.startswith("/api/") or path == "/run/summary") and not _same_origin(request):
            return PlainTextResponse("dbosify ui: cross-origin request refused", 403)
        if request.method not in ("GET", "HEAD") and request.headers.get(ACTION_HEADER) != "1":
            return PlainTextResponse("dbosify ui: missing X-Dbosify-Action header", 403)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self._check(request)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
