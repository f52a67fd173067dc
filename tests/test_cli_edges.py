"""``dbosify`` at its edges, run as a subprocess: what an operator sees when the input is bad.

- No password in any output, however the URL is written (an unencoded ``@``, a ``?password=``
  parameter, a bad port, a scheme that is not supported), with ``--debug`` too.
- Control characters of workflow data (ids, type names, task queues, memos, reasons) never
  reach the terminal raw in table and text output; JSON output stays JSON.
- Every failure is one ``Error: ...`` line and exit code 1; ``--debug`` adds the traceback.
- A file error names its path.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import new_namespace
from temporalio.client import Client

from dbosify._store.urls import mask_url

pytestmark = pytest.mark.timeout(120)

PASSWORD = "Pw-7d2xq"


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return self.err.splitlines()

    def one_error(self) -> str:
        """The single ``Error: ...`` line of a failure, checked."""
        assert self.rc == 1, (self.rc, self.out, self.err)
        assert len(self.error_lines) == 1, self.err
        assert self.error_lines[0].startswith("Error: "), self.err
        return self.error_lines[0]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOSIFY_")}
    env.update(extra or {})
    return env


async def dbosify(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "dbosify", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(env),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return Result(proc.returncode or 0, out.decode(), err.decode())


def _with_password(url: str, database: str | None = None) -> str:
    """``url`` (a Postgres URL) with PASSWORD as its password, and another database."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{PASSWORD}@{host}" + (f":{parts.port}" if parts.port else "")
    path = "/" + database if database else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


# -- passwords ---------------------------------------------------------------------------------

BAD_URLS = [
    f"mysql://app:{PASSWORD}@db-host/app",  # a scheme that is not supported
    f"postgresql://app:{PASSWORD}@db-host:99999/app",  # a bad port
    f"postgres://app:{PASSWORD}@db-host:5x/app",
    f"postgresql://app:{PASSWORD[:3]}@{PASSWORD[3:]}@127.0.0.1:1/app",  # an unencoded @
    f"postgresql://app:{PASSWORD[:3]}?k={PASSWORD[3:]}@127.0.0.1:1/app",  # an unencoded ?
    f"postgresql://app:{PASSWORD[:3]}/x={PASSWORD[3:]}@127.0.0.1:1/app",  # an unencoded /
    f"postgresql://127.0.0.1:1/app?password={PASSWORD}",  # unreachable, password as a parameter
    f"postgresql://app:{PASSWORD}@127.0.0.1:1/app",  # unreachable
]


@pytest.mark.parametrize("url", BAD_URLS)
async def test_no_password_in_any_output(url: str, tmp_path: Path) -> None:
    home = {"DBOSIFY_HOME": str(tmp_path)}
    for debug, r in (
        (False, await dbosify("workflow", "list", "--db", url, env=home)),
        (False, await dbosify("namespace", "list", env={**home, "DBOSIFY_DATABASE_URL": url})),
        (True, await dbosify("--debug", "workflow", "count", "--db", url, env=home)),
    ):
        assert r.rc == 1, r
        for secret in (PASSWORD, PASSWORD[3:], PASSWORD[:3] + "@"):
            assert secret not in r.out + r.err, r.err
        assert r.err.splitlines()[-1].startswith("Error: "), r.err
        if debug:
            assert "Traceback (most recent call last)" in r.err, r.err
        else:
            r.one_error()


MASKED = [
    ("postgresql://u:pa/ss=1@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p?a=b@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p@x/y@h/db", "postgresql://u:***@h/db"),
    # and no password where there is none, though an '@' comes later
    ("postgresql://h:5432/db?application_name=a@b", "postgresql://h:5432/db?application_name=a@b"),
    ("postgresql://[::1]:5432/db?x=a@b", "postgresql://[::1]:5432/db?x=a@b"),
    ("postgresql://u:pw@h/db?application_name=a@b", "postgresql://u:***@h/db?application_name=a@b"),
]


def test_mask_url_with_unencoded_characters() -> None:
    assert [mask_url(url) for url, _ in MASKED] == [masked for _, masked in MASKED]


async def test_a_store_error_names_no_password(db_url: str, tmp_path: Path) -> None:
    """A store that answers, with an error: one line, no password (Postgres: a database that
    does not exist, on a URL with a password; SQLite: a file that is not a database)."""
    if db_url.startswith("sqlite"):
        directory = Path(db_url.removeprefix("sqlite:///"))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "catalog.sqlite").write_bytes(b"not a database, " * 64)
        url = db_url
    else:
        url = _with_password(db_url, database="dbosify_missing_database")
    plain = await dbosify("workflow", "list", "--db", url, env={"DBOSIFY_HOME": str(tmp_path)})
    line = plain.one_error()
    assert PASSWORD not in plain.out + plain.err
    if db_url.startswith("sqlite"):
        assert str(directory) in line, line
    else:
        assert "dbosify_missing_database" in line, line
    traced = await dbosify("--debug", "workflow", "list", "--db", url,
                           env={"DBOSIFY_HOME": str(tmp_path)})
    assert traced.rc == 1 and "Traceback (most recent call last)" in traced.err, traced.err
    assert traced.err.splitlines()[-1] == line
    assert PASSWORD not in traced.out + traced.err


# -- control characters -----------------------------------------------------------------------

OSC52 = "\x1b]52;c;aGVsbG8=\x07"  # writes the clipboard
TITLE = "\x1b]0;pwned\x07"  # sets the window title
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _no_raw_controls(text: str) -> None:
    for c in RAW:
        assert c not in text, repr(text)


async def test_control_characters_are_escaped(db_url: str) -> None:
    namespace = new_namespace(db_url)
    client = await Client.connect(db_url, namespace=namespace)
    wid = f"id{OSC52}\x9b\u202e"
    await client.start_workflow(
        f"Type{TITLE}", id=wid, task_queue="queue\x1b[31m", memo={"note": "\x1b[2J\x9b"},
    )
    handle = client.get_workflow_handle(wid)
    await handle.terminate(reason=f"reason{TITLE}")
    base = ("--db", db_url, "-n", namespace)

    listed = await dbosify("workflow", "list", *base)
    assert listed.rc == 0, listed.err
    _no_raw_controls(listed.out)
    assert "id\\x1b]52;c;aGVsbG8=\\x07\\x9b\\u202e" in listed.out
    assert "Type\\x1b]0;pwned\\x07" in listed.out

    for verb in ("describe", "show"):
        r = await dbosify("workflow", verb, "-w", wid, *base)
        assert r.rc == 0, r.err
        _no_raw_controls(r.out)
        assert "reason\\x1b]0;pwned\\x07" in r.out, r.out
    described = await dbosify("workflow", "describe", "-w", wid, *base)
    assert "queue\\x1b[31m" in described.out

    for verb, args in (("list", ()), ("describe", ("-w", wid)), ("show", ("-w", wid))):
        r = await dbosify("workflow", verb, *args, *base, "-o", "json")
        assert r.rc == 0, r.err
        _no_raw_controls(r.out)
        strings = set(_strings(json.loads(r.out)))  # still JSON, its values read back unchanged
        assert wid in strings or f"Type{TITLE}" in strings, r.out[:500]

    missing = await dbosify("workflow", "describe", "-w", f"nope{OSC52}", *base)
    line = missing.one_error()
    _no_raw_controls(missing.err)
    assert "nope\\x1b]52;c;aGVsbG8=\\x07" in line


# -- one line, and paths -----------------------------------------------------------------------


def _read_only(directory: Path) -> tuple[str, ...] | None:
    """A command prefix under which ``directory`` is read-only: chmod for a user, a read-only
    bind mount in a private mount namespace for root; None if neither is possible here."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return ()
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", f"mount --bind -o ro '{directory}' '{directory}'"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    script = f"mount --bind -o ro '{directory}' '{directory}' && exec \"$@\""
    return (unshare, "-m", "sh", "-c", script, "sh")


async def test_sqlite_file_errors_name_the_path(tmp_path: Path) -> None:
    env = {"DBOSIFY_HOME": str(tmp_path / "home")}

    # A store created, then its directory made read-only.
    store = tmp_path / "store"
    assert (await dbosify("workflow", "list", "--db", f"sqlite:///{store}", env=env)).rc == 0
    prefix = _read_only(store)
    if prefix is not None:
        r = await dbosify("workflow", "list", "--db", f"sqlite:///{store}", env=env, prefix=prefix)
        assert str(store) in r.one_error(), r.err
        store.chmod(0o755)

    # A read-only directory without a store yet.
    empty = tmp_path / "empty"
    empty.mkdir()
    prefix = _read_only(empty)
    if prefix is not None:
        r = await dbosify("workflow", "list", "--db", f"sqlite:///{empty}", env=env, prefix=prefix)
        assert str(empty) in r.one_error(), r.err
        empty.chmod(0o755)

    # A file where the store's directory or one of its files should be.
    (tmp_path / "file").write_text("x")
    for directory in (tmp_path / "file", tmp_path / "file" / "sub"):
        r = await dbosify("workflow", "list", "--db", f"sqlite:///{directory}", env=env)
        assert str(directory) in r.one_error(), r.err
    odd = tmp_path / "odd"
    (odd / "catalog.sqlite").mkdir(parents=True)
    r = await dbosify("workflow", "list", "--db", f"sqlite:///{odd}", env=env)
    assert str(odd / "catalog.sqlite") in r.one_error(), r.err
    # The embedded default, through DBOSIFY_HOME.
    r = await dbosify("workflow", "list", env={"DBOSIFY_HOME": str(odd)})
    assert str(odd / "catalog.sqlite") in r.one_error(), r.err


async def test_debug_is_a_flag_of_every_verb(db_url: str, tmp_path: Path) -> None:
    """``--debug`` before or after the verb; without it, no traceback."""
    if db_url.startswith("sqlite"):
        bad = str(tmp_path / "file")
        (tmp_path / "file").write_text("x")
    else:
        bad = _with_password(db_url, database="dbosify_missing_database")
    for args in (("--debug", "workflow", "count"), ("workflow", "count", "--debug"),
                 ("--debug", "schedule", "list"), ("namespace", "list", "--debug")):
        target = bad if bad.startswith("postgres") else f"sqlite:///{bad}"
        r = await dbosify(*args, "--db", target, env={"DBOSIFY_HOME": str(tmp_path)})
        assert r.rc == 1 and "Traceback (most recent call last)" in r.err, (args, r.err)
        assert r.err.splitlines()[-1].startswith("Error: "), r.err
        assert PASSWORD not in r.err
