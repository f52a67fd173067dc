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
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cli_app
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DBOSIFY_")}


async def _start_ui(*args: str, port: int) -> tuple[asyncio.subprocess.Process, float]:
    """``dbosify ui ARGS --port PORT``, and the seconds until it answered."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbosify", "ui", *args, "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
    )
    deadline = started + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            err = (await proc.stderr.read()).decode() if proc.stderr else ""
            raise AssertionError(f"dbosify ui exited {proc.returncode}: {err}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc, time.monotonic() - started
        except OSError:
            await asyncio.sleep(0.02)
    proc.kill()
    raise AssertionError("dbosify ui did not answer within 30 s")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


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


async def test_ui_needs_a_token_off_loopback(browser: Any, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the token rules do not depend on the database")
    port = _free_port()
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbosify", "ui", "--db", db_url, "--ip", "0.0.0.0", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
    )
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 1
    assert err.decode().strip() == (
        "Error: refusing to serve on 0.0.0.0 without a token: pass --token or set"
        " DBOSIFY_UI_TOKEN (or bind 127.0.0.1)"
    )

    proc, _ = await _start_ui("--db", db_url, "--ip", "0.0.0.0", "--token", "s3cret", port=port)
    try:
        page = await browser.new_page()
        response = await page.goto(f"http://127.0.0.1:{port}/")
        assert response.status == 401
        await page.goto(f"http://127.0.0.1:{port}/?token=s3cret")
        assert page.url == f"http://127.0.0.1:{port}/"  # the token went into a cookie
        await page.wait_for_selector("#runs")
        response = await page.goto(f"http://127.0.0.1:{port}/?token=wrong")
        assert response.status == 401
    finally:
        await _stop(proc)
