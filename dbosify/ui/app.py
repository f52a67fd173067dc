"""The web view's routes: pages, the live history stream, and the run actions.

Bad input is a 4xx with one line: identifiers are checked before any call (no NUL, at most
1,000 bytes of UTF-8, as Temporal's frontend), and a Temporal error maps to an HTTP status
(`http_status`); nothing a client sends makes a 500 or shows a driver's text.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from temporalio.api.enums.v1 import workflow_pb2
from temporalio.client import (
    Client,
    RPCError,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCStatusCode

from dbosify._store import limits
from dbosify.cli import payloads, task_queue
from dbosify.cli.common import Conn, connect, status_name
from dbosify.ui import pages
from dbosify.ui.streams import STREAMS_PER_CLIENT, STREAMS_TOTAL, Cap, Feeds

STATIC = Path(__file__).parent / "static"
STACK_TIMEOUT = timedelta(seconds=3)
ID_LIMIT = limits.Limits().max_id_length  # bytes, as Temporal's frontend
BODY_LIMIT = 1 << 20  # an action's JSON body
log = logging.getLogger("dbosify.ui")

_STATUS = {
    RPCStatusCode.NOT_FOUND: 404, RPCStatusCode.ALREADY_EXISTS: 409,
    RPCStatusCode.FAILED_PRECONDITION: 409, RPCStatusCode.PERMISSION_DENIED: 403,
    RPCStatusCode.RESOURCE_EXHAUSTED: 429, RPCStatusCode.UNAVAILABLE: 503,
    RPCStatusCode.DEADLINE_EXCEEDED: 504,
}


class BadRequest(Exception):
    """A request the view refuses before calling anything: a 400 with this message."""


def http_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and one-line message for a failed call."""
    if isinstance(exc, BadRequest):
        return 400, str(exc)
    if isinstance(exc, RPCError):
        line = (exc.message or exc.status.name if exc.status else "failed").splitlines()
        return _STATUS.get(exc.status, 400), pages.cut(line[0] if line else "", 300)
    # Not a Temporal status: never show its text (it may be a driver's); the log has it.
    log.warning("dbosify ui: refused a request: %r", exc, exc_info=exc)
    return 400, "the request was refused (invalid input)"


def ident(value: Any, what: str, *, required: bool = True) -> str:
    text = "" if value is None else str(value)
    if not text:
        if required:
            raise BadRequest(f"{what} is required")
        return text
    problem = limits.id_problem(text, ID_LIMIT)
    if problem == limits.NUL:
        raise BadRequest(f"{what} must not contain NUL")
    if problem == limits.NOT_UTF8:
        raise BadRequest(f"{what} is not valid UTF-8")
    if problem == limits.TOO_LONG:
        raise BadRequest(f"{what} is longer than {ID_LIMIT:,} bytes")
    return text


class CappedStream(StreamingResponse):
    """A stream that holds one place under the `Cap` until it ends."""

    def __init__(self, cap: Cap, client: str, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.cap = cap
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cap.release(self.client)


class Views:
    def __init__(self, namespace: str, cap: Cap) -> None:
        self.ns = namespace
        self.client: Client  # connected at startup (`build`'s lifespan)
        self.cap = cap
        self.feeds = Feeds(self._sse_failure)

    def _html(self, body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status)

    def _message(self, exc: BaseException, title: str) -> HTMLResponse:
        status, message = http_status(exc)
        return self._html(pages.message_page(self.ns, title, message), status)

    # -- list ---------------------------------------------------------------------------------

    async def list_page(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        try:
            size = max(1, min(500, int(request.query_params.get("size", "25"))))
        except ValueError:
            size = 25
        token_text = request.query_params.get("next") or ""
        try:
            token = base64.urlsafe_b64decode(token_text) if token_text else None
        except (binascii.Error, ValueError):
            token = None
        try:
            if "\x00" in query:
                raise BadRequest("invalid query: a filter must not contain NUL")
            it = self.client.list_workflows(query or None, page_size=size, next_page_token=token)
            await it.fetch_next_page()
        except Exception as exc:
            status, message = http_status(exc)
            return self._html(pages.list_page(self.ns, query, [], error=message, next_token=None,
                                              first=True, size=size), status)
        rows = [
            pages.Row(status_name(wf.status), wf.id, wf.run_id, wf.workflow_type, wf.start_time,
                      wf.close_time)
            for wf in it.current_page or []
        ]
        nxt = base64.urlsafe_b64encode(it.next_page_token).decode() if it.next_page_token else None
        return self._html(pages.list_page(self.ns, query, rows, error=None, next_token=nxt,
                                          first=token is None, size=size))

    # -- one run ------------------------------------------------------------------------------

    def _handle(self, params: Any) -> WorkflowHandle[Any, Any]:
        wid = ident(params.get("wid"), "the workflow id")
        rid = ident(params.get("rid"), "the run id", required=False)
        return self.client.get_workflow_handle(wid, run_id=rid or None)

    async def _summary(self, handle: WorkflowHandle[Any, Any]) -> pages.Summary:
        desc = await handle.describe()
        raw = desc.raw_description
        info = raw.workflow_execution_info
        parent = None
        if info.HasField("parent_execution") and info.parent_execution.workflow_id:
            parent = (info.parent_execution.workflow_id, info.parent_execution.run_id)
        s = pages.Summary(
            desc.id, desc.run_id or "", desc.workflow_type, status_name(desc.status),
            desc.task_queue, desc.start_time, desc.close_time, desc.history_length, parent,
        )
        conv = self.client.data_converter
        for pa in raw.pending_activities:
            p: dict[str, Any] = {
                "activityId": pa.activity_id, "type": pa.activity_type.name, "attempt": pa.attempt,
                "state": payloads.enum_words(
                    workflow_pb2.PendingActivityState.Name(pa.state), "PENDING_ACTIVITY_STATE_"),
            }
            if pa.HasField("last_failure"):
                p["lastFailure"] = (await payloads.decoded(pa.last_failure, conv)).get("message", "")
            s.pending.append(p)
        if desc.close_time is not None:
            run_handle = self.client.get_workflow_handle(desc.id, run_id=desc.run_id)
            async for ev in run_handle.fetch_history_events(
                event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
            ):
                s.close_event_id = ev.event_id
                d = await payloads.event_details(ev, conv)
                for key in ("result", "failure", "reason", "details", "newExecutionRunId"):
                    if key in d:
                        v = d[key]
                        v = v[0] if key == "result" and isinstance(v, list) and len(v) == 1 else v
                        s.outcome.append((key, v if isinstance(v, str) else payloads.dumps(v, indent=2)))
        return s

    async def run_page(self, request: Request) -> Response:
        try:
            s = await self._summary(self._handle(request.query_params))
            handle = self.client.get_workflow_handle(s.workflow_id, run_id=s.run_id)
            events, inputs, children = [], [], []
            async for ev in handle.fetch_history_events():
                e = await self._event(ev, s.workflow_id, s.run_id)
                events.append(e)
                if ev.HasField("workflow_execution_started_event_attributes"):
                    inputs = e.details.get("input", [])
                child = _child(ev)
                if child:
                    children.append(child)
        except Exception as exc:
            return self._message(exc, "Run not found")
        summary = pages.summary_fragment(s)
        return self._html(pages.run_page(self.ns, s, summary, events, inputs, children))

    async def task_queue_page(self, request: Request) -> Response:
        """A task queue's backlog per type and the workers that polled it (DescribeTaskQueue)."""
        try:
            name = ident(request.query_params.get("name"), "the task queue name")
            described = await task_queue.describe(self.client, name, list(task_queue.DEFAULT_TYPES))
        except Exception as exc:
            return self._message(exc, "Task queue not shown")
        return self._html(pages.task_queue_page(self.ns, described))

    async def _event(self, ev: Any, workflow_id: str, run_id: str) -> pages.Event:
        return pages.Event(ev.event_id, payloads.event_time(ev), payloads.event_type(ev),
                           await payloads.event_details(ev, self.client.data_converter),
                           pages.event_url(workflow_id, run_id, ev.event_id))

    async def summary(self, request: Request) -> Response:
        try:
            return self._html(pages.summary_fragment(await self._summary(self._handle(request.query_params))))
        except Exception as exc:
            status, message = http_status(exc)
            return self._html(f'<p class="error">{pages.esc(message)}</p>', status)

    async def event_json(self, request: Request) -> Response:
        """One history event's details as JSON, in full (pages show a bounded preview)."""
        try:
            handle = self._handle(request.query_params)
            try:
                event_id = int(request.query_params.get("id", ""))
            except ValueError:
                raise BadRequest("id must be an event id") from None
            async for ev in handle.fetch_history_events():
                if ev.event_id == event_id:
                    details = await payloads.event_details(ev, self.client.data_converter)
                    return Response(payloads.dumps(details, indent=2), media_type="application/json")
            return JSONResponse({"error": f"no event {event_id} in this run"}, 404)
        except Exception as exc:
            status, message = http_status(exc)
            return JSONResponse({"error": message}, status)

    def _sse_failure(self, exc: BaseException) -> str:
        return f"event: failure\ndata: {json.dumps(http_status(exc)[1])}\n\n"

    async def events(self, request: Request) -> Response:
        """Server-sent events: each new history event as it is written, then ``closed``; one
        history long-poll per run, however many streams follow it (`streams.Feeds`)."""
        try:
            handle = self._handle(request.query_params)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            after = 0
        client = request.client.host if request.client else "?"
        refused = self.cap.acquire(client)
        if refused:
            return JSONResponse({"error": refused}, 429, headers={"Retry-After": "5"})
        wid, rid = handle.id, handle.run_id or ""

        async def render(ev: Any) -> str:
            e = await self._event(ev, wid, rid)
            data = {"id": ev.event_id, "type": e.event_type, "html": pages.event_item(e)}
            child = _child(ev)
            if child:
                data["child"] = pages.child_link(*child)
            return f"event: history\ndata: {json.dumps(data)}\n\n"

        try:
            stream = self.feeds.follow(
                (wid, rid), lambda: handle.fetch_history_events(wait_new_event=True), after, render)
            return CappedStream(self.cap, client, stream)
        except BaseException:
            self.cap.release(client)
            raise

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > BODY_LIMIT:
                raise BadRequest("request body too large")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    async def stack(self, request: Request) -> Response:
        """The ``__stack_trace`` query: it may wake and replay a run, so only a POST with the
        action header reaches it (`gate.Gate`)."""
        try:
            handle = self._handle(await self._body(request))
            trace = await handle.query("__stack_trace", rpc_timeout=STACK_TIMEOUT)
        except RPCError as exc:
            if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
                return JSONResponse({"error": "no worker answered (is one running for this task queue?)"})
            status, message = http_status(exc)
            return JSONResponse({"error": message}, status)
        except WorkflowQueryRejectedError as exc:
            return JSONResponse({"error": pages.cut(f"rejected: {exc}", 300)})
        except WorkflowQueryFailedError as exc:  # the worker's message
            return JSONResponse({"error": pages.cut(str(exc), 300)})
        except Exception as exc:
            status, message = http_status(exc)
            return JSONResponse({"error": message}, status)
        return JSONResponse({"stack": str(trace)})

    # -- actions ------------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        try:
            body = await self._body(request)
            handle = self._handle(body)
            if verb == "signal":
                text = str(body.get("input") or "").strip()
                args = [json.loads(text)] if text else []
                await handle.signal(ident(body.get("name"), "the signal name"), args=args)
            elif verb == "cancel":
                await handle.cancel()
            elif verb == "terminate":
                reason = str(body.get("reason") or "Terminated from dbosify ui")
                await handle.terminate(reason=reason.replace("\x00", ""))
            else:
                return JSONResponse({"error": f"unknown action {verb!r}"}, 404)
        except ValueError as exc:  # the signal's input is not JSON
            return JSONResponse({"error": pages.cut(f"bad request: {exc}", 300)}, 400)
        except Exception as exc:
            status, message = http_status(exc)
            return JSONResponse({"error": message}, status)
        return JSONResponse({"ok": True, "done": {"signal": "Signal sent", "cancel": "Cancellation requested",
                                                  "terminate": "Terminated"}[verb]})


def _child(ev: Any) -> tuple[str, str] | None:
    if ev.HasField("child_workflow_execution_started_event_attributes"):
        ex = ev.child_workflow_execution_started_event_attributes.workflow_execution
        return ex.workflow_id, ex.run_id
    return None


def build(conn: Conn, *, streams: int = STREAMS_TOTAL, streams_per_client: int = STREAMS_PER_CLIENT) -> Starlette:
    v = Views(conn.namespace, Cap(streams, streams_per_client))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        v.client = await connect(conn)
        yield

    return Starlette(lifespan=lifespan, routes=[
        Route("/", v.list_page),
        Route("/run", v.run_page),
        Route("/run/summary", v.summary),
        Route("/task-queue", v.task_queue_page),
        Route("/api/events", v.events),
        Route("/api/event", v.event_json),
        Route("/api/stack", v.stack, methods=["POST"]),
        Route("/api/{verb}", v.action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
