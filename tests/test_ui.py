"""``dbosify ui`` in a real headless browser: Debian's Chromium driven by Playwright.

The server is the ``dbosify ui`` command in a subprocess; the worker runs in this process. The
test lists runs, filters and pages them, opens a run and watches its history grow live as the
run advances, terminates a run through its button, and checks the token rules. Without Chromium
(or Playwright) it is skipped with the reason, except on CI (``CI`` set), where it fails.
Set ``DBOSIFY_UPDATE_SCREENSHOT=1`` to rewrite docs/ui-run-page.png from the run page.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cli_app
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from ui_support import free_port as _free_port
from ui_support import start_ui as _start_ui
from ui_support import stop as _stop
from ui_support import tls_pair, ui_env

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "ui-run-page.png"

pytestmark = pytest.mark.timeout(180)


def _unavailable() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser_ok() -> None:
    why = _unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run on CI: {why}")
        pytest.skip(why)


@pytest.fixture
async def browser(browser_ok: None) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def test_ui_lists_filters_follows_and_terminates(
    browser: Any, client: Client, db_url: str
) -> None:
    from playwright.async_api import expect

    async with cli_app.worker(client):
        live = await client.start_workflow(cli_app.Steps.run, args=["ann", 2], id="live",
                                           task_queue=cli_app.TASK_QUEUE)
        victim = await client.start_workflow(cli_app.Steps.run, args=["vic", 2], id="victim",
                                             task_queue=cli_app.TASK_QUEUE)
        await client.start_workflow(cli_app.Broken.run, id="broken", task_queue=cli_app.TASK_QUEUE)
        await client.start_workflow(cli_app.Stuck.run, id="stuck", task_queue=cli_app.TASK_QUEUE)
        port = _free_port()
        proc, startup = await _start_ui("--db", db_url, "-n", client.namespace, port=port)
        print(f"dbosify ui answered after {startup:.2f} s")
        base = f"http://127.0.0.1:{port}"
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            # The list: every run, status colours.
            await page.goto(base + "/")
            await expect(page.locator("#runs tbody tr")).to_have_count(4)
            await expect(page.locator("#runs tr", has_text="broken").locator(".status-failed")).to_have_text(
                "Failed", timeout=10_000)
            assert await page.locator("#runs .status-running").count() >= 2
            # Filters, Temporal's language; a malformed one is reported.
            await page.fill("input[name=q]", "WorkflowType = 'Steps' AND ExecutionStatus = 'Running'")
            await page.click("form.filter button")
            await expect(page.locator("#runs tbody tr")).to_have_count(2)
            await page.fill("input[name=q]", "WorkflowType = ")
            await page.click("form.filter button")
            await expect(page.locator("#list-error")).to_contain_text("invalid query")
            # Paging.
            await page.goto(base + "/?size=3")
            await expect(page.locator("#runs tbody tr")).to_have_count(3)
            await page.click("#next-page")
            await expect(page.locator("#runs tbody tr")).to_have_count(1)

            # A pending activity with its attempts and last failure.
            await page.goto(base + "/run?wid=stuck")
            await expect(page.locator("#pending .failure")).to_have_text("the printer is broken")

            # Open a run from the list; its history grows as the run advances, without a reload.
            await page.goto(base + "/?q=" + "WorkflowId%20%3D%20'live'")
            await page.click("a.wid")
            await expect(page.locator("#live")).to_have_text("live")
            await expect(page.locator("#stack-trace")).to_contain_text("Stack for")
            await page.evaluate("window.stillHere = true")
            await live.signal(cli_app.Steps.advance)
            await expect(page.locator("#history li[data-type=ActivityTaskCompleted]")).to_have_count(
                1, timeout=15_000)
            await page.locator("#history li[data-type=ActivityTaskScheduled] summary").first.click()
            await expect(page.locator("#history li[data-type=ActivityTaskScheduled] pre")).to_contain_text(
                '"ann 0"')
            if os.environ.get("DBOSIFY_UPDATE_SCREENSHOT"):
                await page.screenshot(path=str(SCREENSHOT), full_page=True)
            await live.signal(cli_app.Steps.advance)
            await expect(page.locator("#summary .status")).to_have_text("Completed", timeout=15_000)
            await expect(page.locator("#outcome")).to_contain_text("done ann")
            await expect(page.locator("#live")).to_have_text("closed")
            assert await page.evaluate("window.stillHere") is True

            # Terminate through the button, after confirming.
            await page.goto(base + f"/run?wid=victim&rid={victim.result_run_id}")
            asked: list[str] = []

            async def accept(dialog: Any) -> None:
                asked.append(dialog.message)
                await dialog.accept()

            page.on("dialog", accept)
            await page.fill("#terminate-reason", "from the browser")
            await page.click("#terminate-button")
            await expect(page.locator("#summary .status")).to_have_text("Terminated", timeout=15_000)
            assert asked and "Terminate victim?" in asked[0]
            desc = await victim.describe()
            assert desc.status == WorkflowExecutionStatus.TERMINATED
            await expect(page.locator("#outcome")).to_contain_text("from the browser")
        finally:
            await _stop(proc)


async def test_ui_needs_tls_and_a_token_off_loopback(browser: Any, db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the token rules do not depend on the database")
    port = _free_port()
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbosify", "ui", "--db", db_url, "--ip", "0.0.0.0", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ui_env(DBOSIFY_UI_TOKEN="s3cret"),
    )
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 1
    assert err.decode().strip() == (
        "Error: refusing to serve on 0.0.0.0 over plain HTTP: give --tls-cert and --tls-key, or"
        " --tls-upstream behind a reverse proxy that terminates TLS (or bind 127.0.0.1)"
    )

    cert, key = tls_pair(tmp_path)
    proc, _ = await _start_ui("--db", db_url, "--ip", "0.0.0.0", "--tls-cert", str(cert), "--tls-key",
                              str(key), port=port, env=ui_env(DBOSIFY_UI_TOKEN="s3cret"))
    base = f"https://127.0.0.1:{port}"
    try:
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        response = await page.goto(base + "/run?wid=x")
        assert response.status == 401
        await page.fill("input[name=token]", "wrong")
        await page.click("form.login button")
        await page.wait_for_selector("#login-error")
        await page.fill("input[name=token]", "s3cret")
        await page.click("form.login button")
        await page.wait_for_selector("h1:has-text('Run not found')")
        assert page.url == base + "/run?wid=x"  # back where the sign-in was asked
        cookies = await context.cookies()
        assert [(c["name"], c["secure"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            ("dbosify_ui_session", True, True, "Strict")]
        assert "s3cret" not in cookies[0]["value"]
        await page.goto(base + "/?token=s3cret")
        assert page.url == base + "/"  # the token in the address became a session
        await page.wait_for_selector("#runs")
        response = await page.goto(base + "/?token=wrong")
        assert response.status == 401
    finally:
        await _stop(proc)


class _Other(BaseHTTPRequestHandler):
    """Another origin: one page that tries to frame the view and act on it."""

    page = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_origin() -> Iterator[tuple[int, type[_Other]]]:
    handler = type("Other", (_Other,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


ATTACK = """<!doctype html><html><body>
<iframe id="frame" src="{view}/run?wid=target" width="800" height="400"></iframe>
<img src="{view}/api/stack?wid=target">
<form id="form" method="post" action="{view}/api/cancel" target="sink" enctype="text/plain">
<input name='{{"wid":"target","x":"' value='"}}'></form><iframe name="sink"></iframe>
<script>
const view = "{view}";
const body = JSON.stringify({{wid: "target", reason: "from another origin"}});
const headers = {{"Content-Type": "application/json", "X-Dbosify-Action": "1", "X-Dbosify": "1"}};
window.results = {{}};
function attempt(name, url, init) {{
  return fetch(url, Object.assign({{credentials: "include"}}, init)).then(
    (r) => {{ window.results[name] = "answered " + r.status; }},
    () => {{ window.results[name] = "blocked"; }});
}}
document.getElementById("frame").addEventListener("load", () => {{ window.framed = true; }});
Promise.all([
  attempt("terminate", view + "/api/terminate", {{method: "POST", headers: headers, body: body}}),
  attempt("stack", view + "/api/stack", {{method: "POST", headers: headers, body: body}}),
  attempt("plain", view + "/api/terminate", {{method: "POST", mode: "no-cors", body: body}}),
  attempt("get-stack", view + "/api/stack?wid=target", {{mode: "no-cors"}}),
]).then(() => {{ document.getElementById("form").submit(); window.done = true; }});
</script></body></html>"""


async def test_ui_another_origin_can_neither_frame_nor_act(
    browser: Any, client: Client, db_url: str, other_origin: tuple[int, type[_Other]]
) -> None:
    """A page on another origin (another port of the same host: same site, so even a
    SameSite=Strict cookie goes along) cannot frame the view, nor terminate, cancel or replay a
    run in a signed-in browser: GETs of the stack trace are refused, and the action header
    needs a CORS preflight that the view never grants."""
    from playwright.async_api import expect

    target = await client.start_workflow(cli_app.Steps.run, args=["t", 1], id="target",
                                         task_queue=cli_app.TASK_QUEUE)  # no worker: it waits
    port = _free_port()
    view = f"http://127.0.0.1:{port}"
    other_port, handler = other_origin
    handler.page = ATTACK.format(view=view).encode()
    proc, _ = await _start_ui("--db", db_url, "-n", client.namespace, port=port,
                              env=ui_env(DBOSIFY_UI_TOKEN="t0ken"))
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(view + "/?token=t0ken")  # signed in
        await page.wait_for_selector("#runs")
        answered: list[tuple[str, int]] = []
        page.on("response", lambda r: answered.append((r.url, r.status)) if r.url.startswith(view) else None)
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "frame" in m.text else None)
        await page.goto(f"http://127.0.0.1:{other_port}/")
        await page.wait_for_function("window.done === true && window.framed === true", timeout=20_000)
        await asyncio.sleep(1)  # the form's POST
        results = await page.evaluate("window.results")
        assert results["terminate"] == "blocked" and results["stack"] == "blocked", results
        frame = next(f for f in page.frames if f.name != "sink" and f != page.main_frame)
        assert await frame.locator("#run").count() == 0, "the view was framed"
        assert any("frame-ancestors" in t or "X-Frame-Options" in t for t in blocked), blocked
        acted = [(u, s) for u, s in answered if "/api/" in u and 200 <= s < 300]
        assert acted == [], f"another origin reached an action or the stack trace: {acted}"
        assert (await target.describe()).status == WorkflowExecutionStatus.RUNNING
        # The view's own page still signs its requests and gets the stack trace's answer.
        await page.goto(view + "/run?wid=target")
        await expect(page.locator("#stack-trace")).to_contain_text("unavailable: ", timeout=15_000)
    finally:
        await _stop(proc)
