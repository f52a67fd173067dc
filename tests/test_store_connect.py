"""How an application's `Client.connect` fails on a store it cannot use: one line that names the
place, and as soon as the user asked (a URL's ``connect_timeout``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_cli_edges import _read_only

CONNECT = textwrap.dedent(
    """
    import asyncio, sys, time
    import dbosify
    dbosify.activate()
    from temporalio.client import Client

    async def main():
        started = time.monotonic()
        try:
            await Client.connect(sys.argv[1])
        except Exception as err:
            print(f"{time.monotonic() - started:.2f}")
            print(str(err).replace("\\n", " | "))
            return
        print("connected")

    asyncio.run(main())
    """
)


def _connect(url: str, prefix: tuple[str, ...] = (), home: Path | None = None) -> list[str]:
    env = {**os.environ, "DBOSIFY_HOME": str(home or Path("/nonexistent"))}
    env.pop("DBOSIFY_ACTIVATE", None)
    out = subprocess.run(
        [*prefix, sys.executable, "-c", CONNECT, url], capture_output=True, text=True, env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def test_a_read_only_sqlite_directory_is_named(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert _connect(f"sqlite:///{store}", home=tmp_path) == ["connected"]
    prefix = _read_only(store)
    if prefix is None:
        pytest.skip("no way to make a directory read-only here (neither chmod as a user nor unshare)")
    lines = _connect(f"sqlite:///{store}", prefix, home=tmp_path)
    assert len(lines) == 2, lines
    assert str(store) in lines[1] and "not writable" in lines[1], lines


def test_the_urls_connect_timeout_is_honoured(tmp_path: Path) -> None:
    # A port on loopback that accepts connections and never answers: libpq waits for the server.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        lines = _connect(f"postgresql://u:secret@127.0.0.1:{port}/db?connect_timeout=2", home=tmp_path)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert len(lines) == 2, lines
    assert float(lines[0]) < 6, lines  # 10 s before the URL's value was honoured
    assert took < 20
    assert "secret" not in lines[1] and f"127.0.0.1:{port}" in lines[1], lines
