"""The web view's routes: pages, the live history stream, and the run actions."""

from __future__ import annotations

import base64
import binascii
import json
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
from temporalio.api.enums.v1 import workflow_pb2
from temporalio.client import (
    Client,
    RPCError,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCStatusCode

from dbosify.cli import payloads
from dbosify.cli.common import Conn, connect, status_name
from dbosify.ui import pages

STATIC = Path(__file__).parent / "static"
STACK_TIMEOUT = timedelta(seconds=3)


class Views:
    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.client: Client  # connected at startup (`build`'s lifespan)

    def _html(self, body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status)

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
        it = self.client.list_workflows(query or None, page_size=size, next_page_token=token)
        try:
            await it.fetch_next_page()
        except RPCError as exc:
            return self._html(pages.list_page(self.ns, query, [], error=exc.message, next_token=None,
                                              first=True, size=size), 400)
        rows = [
            pages.Row(status_name(wf.status), wf.id, wf.run_id, wf.workflow_type, wf.start_time,
                      wf.close_time)
            for wf in it.current_page or []
        ]
        nxt = base64.urlsafe_b64encode(it.next_page_token).decode() if it.next_page_token else None
        return self._html(pages.list_page(self.ns, query, rows, error=None, next_token=nxt,
                                          first=token is None, size=size))

    # -- one run ------------------------------------------------------------------------------

    def _handle(self, request: Request) -> WorkflowHandle[Any, Any]:
        wid = request.query_params.get("wid") or ""
        return self.client.get_workflow_handle(wid, run_id=request.query_params.get("rid") or None)

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
                d = await payloads.event_details(ev, conv)
                for key in ("result", "failure", "reason", "details", "newExecutionRunId"):
                    if key in d:
                        v = d[key]
                        v = v[0] if key == "result" and isinstance(v, list) and len(v) == 1 else v
                        s.outcome.append((key, v if isinstance(v, str) else payloads.dumps(v, indent=2)))
        return s

    async def run_page(self, request: Request) -> Response:
        handle = self._handle(request)
        try:
            s = await self._summary(handle)
        except RPCError as exc:
            return self._html(pages.message_page(self.ns, "Run not found", exc.message), 404)
        handle = self.client.get_workflow_handle(s.workflow_id, run_id=s.run_id)
        events, inputs, children = [], [], []
        async for ev in handle.fetch_history_events():
            e = await self._event(ev)
            events.append(e)
            if ev.HasField("workflow_execution_started_event_attributes"):
                inputs = e.details.get("input", [])
            child = _child(ev)
            if child:
                children.append(child)
        summary = pages.summary_fragment(s)
        return self._html(pages.run_page(self.ns, s, summary, events, inputs, children))

    async def _event(self, ev: Any) -> pages.Event:
        return pages.Event(ev.event_id, payloads.event_time(ev), payloads.event_type(ev),
                           await payloads.event_details(ev, self.client.data_converter))

    async def summary(self, request: Request) -> Response:
        try:
            return self._html(pages.summary_fragment(await self._summary(self._handle(request))))
        except RPCError as exc:
            return self._html(f'<p class="error">{pages.esc(exc.message)}</p>', 404)

    async def events(self, request: Request) -> Response:
        """Server-sent events: each new history event as it is written, then ``closed``."""
        handle = self._handle(request)
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            after = 0

        async def stream() -> AsyncIterator[str]:
            yield ": live\n\n"  # opens the stream at once
            try:
                async for ev in handle.fetch_history_events(wait_new_event=True):
                    if ev.event_id <= after:
                        continue
                    e = await self._event(ev)
                    data = {"id": ev.event_id, "type": e.event_type, "html": pages.event_item(e)}
                    child = _child(ev)
                    if child:
                        data["child"] = pages.child_link(*child)
                    yield f"event: history\ndata: {json.dumps(data)}\n\n"
                yield "event: closed\ndata: {}\n\n"
            except RPCError as exc:
                yield f"event: failure\ndata: {json.dumps(exc.message)}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def stack(self, request: Request) -> Response:
        try:
            trace = await self._handle(request).query("__stack_trace", rpc_timeout=STACK_TIMEOUT)
        except RPCError as exc:
            if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
                return JSONResponse({"error": "no worker answered (is one running for this task queue?)"})
            return JSONResponse({"error": exc.message})
        except WorkflowQueryRejectedError as exc:
            return JSONResponse({"error": f"rejected: {exc}"})
        except Exception as exc:  # a failed query: the worker's message
            return JSONResponse({"error": str(exc)})
        return JSONResponse({"stack": str(trace)})

    # -- actions ------------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        try:
            body = await request.json()
            handle = self.client.get_workflow_handle(str(body["wid"]), run_id=body.get("rid") or None)
            if verb == "signal":
                text = str(body.get("input") or "").strip()
                args = [json.loads(text)] if text else []
                await handle.signal(str(body["name"]), args=args)
            elif verb == "cancel":
                await handle.cancel()
            elif verb == "terminate":
                await handle.terminate(reason=str(body.get("reason") or "Terminated from dbosify ui"))
            else:
                return JSONResponse({"error": f"unknown action {verb!r}"}, 404)
        except RPCError as exc:
            return JSONResponse({"error": exc.message}, 400)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, 400)
        return JSONResponse({"ok": True, "done": {"signal": "Signal sent", "cancel": "Cancellation requested",
                                                  "terminate": "Terminated"}[verb]})


def _child(ev: Any) -> tuple[str, str] | None:
    if ev.HasField("child_workflow_execution_started_event_attributes"):
        ex = ev.child_workflow_execution_started_event_attributes.workflow_execution
        return ex.workflow_id, ex.run_id
    return None


def build(conn: Conn) -> Starlette:
    v = Views(conn.namespace)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        v.client = await connect(conn)
        yield

    return Starlette(lifespan=lifespan, routes=[
        Route("/", v.list_page),
        Route("/run", v.run_page),
        Route("/run/summary", v.summary),
        Route("/api/events", v.events),
        Route("/api/stack", v.stack),
        Route("/api/{verb}", v.action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
