"""``dbosify ui`` over plain HTTP requests: headers, the stream cap, POST-only actions, the session
cookie, the token's secrecy, and bad input. The server is the ``dbosify ui`` command in a
subprocess; requests are raw HTTP/1.1 on sockets (a source address of 127.0.0.x per client)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from urllib.parse import quote

import cli_app
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from ui_support import banner, free_port, http, open_stream, start_ui, stop, tls_pair, ui_env

pytestmark = pytest.mark.timeout(120)
ACT = {"X-Dbosify-Action": "1", "Content-Type": "application/json"}


def _sqlite_only(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("these rules do not depend on the database")


async def test_every_response_forbids_framing_and_foreign_scripts(client: Client, db_url: str) -> None:
    _sqlite_only(db_url)
    await client.start_workflow(cli_app.Steps.run, args=["a", 1], id="one", task_queue=cli_app.TASK_QUEUE)
    port = free_port()
    proc, _ = await start_ui("--db", db_url, "-n", client.namespace, port=port)
    try:
        replies = [
            await http(port, "GET", "/"),
            await http(port, "GET", "/run?wid=one"),
            await http(port, "GET", "/run?wid=nobody"),
            await http(port, "GET", "/static/ui.js"),
            await http(port, "GET", "/api/events?wid=nobody"),  # a failure event, then the end
            await http(port, "POST", "/api/cancel", body=b'{"wid":"one"}'),
            await http(port, "GET", "/nowhere"),
        ]
        assert [r.status for r in replies] == [200, 200, 404, 200, 200, 403, 404]
        for r in replies:
            assert r.header("x-frame-options") == "DENY"
            csp = r.header("content-security-policy") or ""
            assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        for page in replies[:3]:  # the pages' only script is the view's file
            html = page.body.decode()
            assert html.count("<script") == 1 and '<script src="/static/ui.js" defer></script>' in html
            assert " on" + "click=" not in html and "javascript:" not in html
    finally:
        await stop(proc)


async def test_actions_and_the_stack_trace_only_by_post_with_the_header(client: Client, db_url: str) -> None:
    _sqlite_only(db_url)
    run = await client.start_workflow(cli_app.Steps.run, args=["a", 1], id="one", task_queue=cli_app.TASK_QUEUE)
    port = free_port()
    proc, _ = await start_ui("--db", db_url, "-n", client.namespace, port=port)
    body = json.dumps({"wid": "one"}).encode()
    try:
        assert (await http(port, "GET", "/api/stack?wid=one")).status == 405
        assert (await http(port, "GET", "/api/terminate?wid=one")).status == 405
        for path in ("/api/stack", "/api/terminate", "/api/cancel", "/api/signal"):
            for headers in ({}, {"X-Dbosify": "1"}, {"Content-Type": "application/json"}):
                reply = await http(port, "POST", path, headers=headers, body=body)
                assert reply.status == 403, (path, headers)
            # the header, but sent by a page of another origin (a browser says so)
            reply = await http(port, "POST", path, body=body, headers={**ACT, "Sec-Fetch-Site": "same-site"})
            assert reply.status == 403
        assert (await run.describe()).status == WorkflowExecutionStatus.RUNNING
        reply = await http(port, "POST", "/api/stack", headers=ACT, body=body)  # no worker: it says so
        assert reply.status == 200 and "no worker answered" in json.loads(reply.body)["error"]
        reply = await http(port, "POST", "/api/terminate", headers=ACT, body=body)
        assert reply.status == 200, reply.body
        assert (await run.describe()).status == WorkflowExecutionStatus.TERMINATED
        reply = await http(port, "POST", "/api/terminate", headers=ACT, body=body)
        assert reply.status == 404 and json.loads(reply.body)["error"]  # a closed run: one line
    finally:
        await stop(proc)


async def test_live_streams_are_capped_per_client_and_in_all(client: Client, db_url: str) -> None:
    _sqlite_only(db_url)
    await client.start_workflow(cli_app.Steps.run, args=["a", 1], id="one", task_queue=cli_app.TASK_QUEUE)
    port = free_port()
    proc, _ = await start_ui("--db", db_url, "-n", client.namespace, "--max-streams", "3",
                             "--max-streams-per-client", "2", port=port)
    path = "/api/events?wid=one"
    open_: list[asyncio.StreamWriter] = []
    try:
        for source, expected in [("127.0.0.1", 200), ("127.0.0.1", 200), ("127.0.0.1", 429),
                                 ("127.0.0.2", 200), ("127.0.0.3", 429)]:
            status, writer = await open_stream(port, path, source=source)
            open_.append(writer)
            assert status == expected, (source, status)
        reply = await http(port, "GET", path, source="127.0.0.3")
        assert reply.status == 429 and reply.header("retry-after")
        assert "too many live streams" in json.loads(reply.body)["error"]
        open_[0].close()  # a closed stream gives its place back
        for _ in range(100):
            status, writer = await open_stream(port, path, source="127.0.0.3")
            open_.append(writer)
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200
    finally:
        for w in open_:
            w.close()
        await stop(proc)


async def test_the_cookie_is_a_session_id_and_the_token_is_never_printed(db_url: str, tmp_path: Path) -> None:
    _sqlite_only(db_url)
    token = "the-token-4711"
    port = free_port()
    proc, _ = await start_ui("--db", db_url, port=port, env=ui_env(DBOSIFY_UI_TOKEN=token))
    try:
        line = await banner(proc)
        assert f"http://127.0.0.1:{port}/" in line and "DBOSIFY_UI_TOKEN" in line and token not in line
        assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert (await http(port, "GET", "/")).status == 401
        assert (await http(port, "GET", "/", headers={"Cookie": f"dbosify_ui_session={token}"})).status == 401
        assert (await http(port, "GET", "/", headers={"Cookie": f"dbosify_ui_token={token}"})).status == 401
        signed = await http(port, "GET", "/?token=" + token)
        assert signed.status == 303 and signed.header("location") == "/"
        cookie = signed.header("set-cookie") or ""
        assert token not in cookie
        parts = [p.strip() for p in cookie.split(";")]
        name, _, sid = parts[0].partition("=")
        assert name == "dbosify_ui_session" and len(sid) >= 40
        flags = {p.lower() for p in parts[1:]}
        assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags
        assert (await http(port, "GET", "/", headers={"Cookie": f"dbosify_ui_session={sid}"})).status == 200
        assert (await http(port, "GET", "/", headers={"Authorization": f"Bearer {token}"})).status == 200
        form = await http(port, "POST", "/login", body=f"next=%2F&token={token}".encode(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status == 303 and token not in (form.header("set-cookie") or "")
        assert (form.header("set-cookie") or "").split(";")[0] != parts[0]  # a new session
    finally:
        await stop(proc)

    # --token on the command line (where ps shows it) is refused with one line.
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbosify", "ui", "--db", db_url, "--token", token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ui_env())
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 1 and token not in err.decode()
    assert err.decode().strip() == (
        "Error: --token is not accepted (other users see it in ps): set DBOSIFY_UI_TOKEN or use --token-file")

    # Off loopback with TLS and no token: a new one, in a 0600 file whose path is printed.
    cert, key = tls_pair(tmp_path)
    home = tmp_path / "home"
    proc, _ = await start_ui("--db", db_url, "--ip", "0.0.0.0", "--tls-cert", str(cert), "--tls-key", str(key),
                             port=port, env=ui_env(DBOSIFY_HOME=str(home)))
    try:
        line = await banner(proc)
        token_file = home / "ui-token"
        made = token_file.read_text().strip()
        assert str(token_file) in line and made not in line and line.startswith("dbosify ui: https://")
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        signed = await http(port, "GET", "/?token=" + made, tls=True)
        assert signed.status == 303
        assert "secure" in {p.strip().lower() for p in (signed.header("set-cookie") or "").split(";")}
    finally:
        await stop(proc)

    # Behind a proxy that terminates TLS: plain HTTP, a Secure cookie; the token from a file.
    given = tmp_path / "token"
    given.write_text(token + "\n")
    os.chmod(given, 0o600)
    proc, _ = await start_ui("--db", db_url, "--ip", "0.0.0.0", "--tls-upstream", "--token-file", str(given),
                             port=port)
    try:
        line = await banner(proc)
        assert str(given) in line and token not in line
        signed = await http(port, "GET", "/?token=" + token)
        assert signed.status == 303
        assert "secure" in {p.strip().lower() for p in (signed.header("set-cookie") or "").split(";")}
    finally:
        await stop(proc)


async def test_bad_input_is_a_4xx_with_one_line(client: Client, db_url: str) -> None:
    await client.start_workflow(cli_app.Steps.run, args=["a", 1], id="one", task_queue=cli_app.TASK_QUEUE)
    port = free_port()
    proc, _ = await start_ui("--db", db_url, "-n", client.namespace, port=port)
    long_id = "w" * 1001
    try:
        for path in ("/run?wid=%00", "/run?wid=a%00b&rid=x", "/run/summary?wid=%00", f"/run?wid={long_id}",
                     "/api/event?wid=%00&id=1", "/api/events?wid=%00",
                     "/?q=" + quote("WorkflowId = 'a\x00'")):
            reply = await http(port, "GET", path)
            assert reply.status == 400, (path, reply.status)
        for verb, body in [("stack", {"wid": "a\x00"}), ("terminate", {"wid": "\x00"}),
                           ("signal", {"wid": "one", "name": "x\x00"}), ("cancel", {"wid": long_id}),
                           ("cancel", ["not", "an", "object"]), ("stack", {"rid": "x"})]:
            reply = await http(port, "POST", f"/api/{verb}", headers=ACT, body=json.dumps(body).encode())
            assert reply.status == 400, (verb, body, reply.status)
            error = json.loads(reply.body)["error"]
            assert "\n" not in error and "psycopg" not in error.lower() and "0x00" not in error
        reply = await http(port, "POST", "/api/cancel", headers=ACT, body=b"{not json")
        assert reply.status == 400
        reply = await http(port, "GET", "/run?wid=nobody")
        assert reply.status == 404
    finally:
        await stop(proc)


async def test_large_payloads_are_previewed_with_a_link_to_the_full_json(client: Client, db_url: str) -> None:
    _sqlite_only(db_url)
    big = "x" * 1_000_000  # under Temporal's 2 MiB blob limit
    await client.start_workflow(cli_app.Steps.run, args=[big, 1], id="big", task_queue=cli_app.TASK_QUEUE)
    port = free_port()
    proc, _ = await start_ui("--db", db_url, "-n", client.namespace, port=port)
    try:
        page = await http(port, "GET", "/run?wid=big")
        assert page.status == 200
        assert len(page.body) < 100_000, len(page.body)  # the input was shown twice in full: 2 MB
        html = page.body.decode()
        assert "Truncated: the first 16,384 of" in html
        link = html.split('class="full-json" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        assert link.startswith("/api/event?") and "id=1" in link
        full = await http(port, "GET", link)
        assert full.status == 200 and full.header("content-type") == "application/json"
        assert json.loads(full.body)["input"][0] == big
    finally:
        await stop(proc)
