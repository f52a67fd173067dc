"""Connect targets and DBOSIFY_DATABASE_URL: what is accepted, and clear errors for the rest.

A bad target or database URL is refused with a `ValueError` (as the native client refuses an
invalid target URL) that says what is accepted and names the host, and no message ever shows
a password. A plain Temporal target such as ``localhost:7233`` keeps meaning "the configured
database, or else the embedded default".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import new_namespace
from temporalio.client import Client

from dbosify._store import mask_url

PASSWORD = "Pw-9f3kq"  # never in any message
ACCEPTED_BY_CONNECT = ("postgresql://", "postgres://", "postgresql+psycopg://", "sqlite://")


def _check_message(message: str, host: str, *, env: bool) -> None:
    assert PASSWORD not in message
    assert host in message, message
    for form in ACCEPTED_BY_CONNECT:
        assert form in message, message
    if env:
        assert "DBOSIFY_DATABASE_URL accepts" in message, message
    else:
        assert "host:port such as localhost:7233" in message, message
        assert "DBOSIFY_DATABASE_URL" in message, message


BAD_TARGETS = [
    # (target, host named in the error, what the error says)
    (f"mysql://app:{PASSWORD}@db-host:3306/app", "db-host", "the scheme 'mysql' is not supported"),
    ("not a url", "not a url", "neither a database URL"),
    ("host:notaport", "'host'", "the port 'notaport' of host 'host' is not a number"),
    ("db-host:70000", "'db-host'", "the port '70000' of host 'db-host' is not a number"),
    (f"app:{PASSWORD}@db-host:5432", "db-host", "neither a database URL"),
    (
        f"postgresql://app:{PASSWORD}@db-host:notaport/app",
        "'db-host'",
        "the port 'notaport' of host 'db-host' is not a number",
    ),
    (
        f"postgres://app:{PASSWORD}@db-host:5432,standby:x/app",
        "'standby'",
        "the port 'x' of host 'standby'",
    ),
    (f"postgresql://app:{PASSWORD}@my host/app", "my host", "contains a space"),
    (f"postgresql://app:{PASSWORD[:3]}/{PASSWORD[3:]}@db-host/app", "db-host", "percent-encoded"),
]


@pytest.mark.parametrize(("target", "host", "why"), BAD_TARGETS)
async def test_a_bad_target_is_refused_saying_what_is_accepted(
    target: str, host: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBOSIFY_HOME", str(tmp_path))
    monkeypatch.delenv("DBOSIFY_DATABASE_URL", raising=False)
    with pytest.raises(ValueError) as err:
        await Client.connect(target, namespace="default")
    message = str(err.value)
    assert message.startswith("invalid target "), message
    assert why in message, message
    _check_message(message, host, env=False)
    assert not list(tmp_path.iterdir())  # nothing was created in the embedded default


async def test_an_empty_target_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBOSIFY_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="invalid target '': it is empty"):
        await Client.connect("", namespace="default")


BAD_DATABASE_URLS = [
    (f"mysql://app:{PASSWORD}@db-host:3306/app", "db-host", "the scheme 'mysql' is not supported"),
    ("not a url", "not a url", "it is not a URL"),
    ("db-host:5432", "db-host", "it is not a URL"),
    (f"host=db-host password={PASSWORD} dbname=app", "db-host", "it is not a URL"),
    (
        f"postgresql://app:{PASSWORD}@db-host:notaport/app",
        "'db-host'",
        "the port 'notaport' of host 'db-host' is not a number",
    ),
    (f"postgresql://app@[::1:5432/app?password={PASSWORD}", "[::1:5432", "not a valid IPv6"),
]


@pytest.mark.parametrize(("url", "host", "why"), BAD_DATABASE_URLS)
async def test_a_bad_database_url_in_the_environment_is_refused(
    url: str, host: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBOSIFY_DATABASE_URL", url)
    with pytest.raises(ValueError) as err:
        await Client.connect("localhost:7233", namespace="default")
    message = str(err.value)
    assert message.startswith("invalid DBOSIFY_DATABASE_URL "), message
    assert why in message, message
    _check_message(message, host, env=True)


async def test_a_plain_host_port_means_the_configured_database(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = new_namespace(db_url, "urls-")
    monkeypatch.setenv("DBOSIFY_DATABASE_URL", db_url)
    via_target = await Client.connect("localhost:7233", namespace=ns)
    handle = await via_target.start_workflow("Anything", id="wf-1", task_queue="nobody")
    direct = await Client.connect(db_url, namespace=ns)
    assert (await direct.get_workflow_handle("wf-1").describe()).run_id == handle.result_run_id
    await handle.terminate()


async def test_a_plain_host_port_means_the_embedded_default_when_nothing_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBOSIFY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DBOSIFY_DATABASE_URL", raising=False)
    for target in ("localhost:7233", "127.0.0.1:7233", "[::1]:7233", "temporal.internal"):
        client = await Client.connect(target, namespace="default")
        assert await client.count_workflows() is not None
    assert (tmp_path / "home" / "catalog.sqlite").exists()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:secret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app@db/x?password=secret&sslmode=require",
         "postgresql://app@db/x?password=***&sslmode=require"),
        ("postgresql://app:se/cr?et@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app@db/x?application_name=a@b", "postgresql://app@db/x?application_name=a@b"),
        ("app:secret@db:5432", "app:***@db:5432"),
        ("postgresql://db/x", "postgresql://db/x"),
    ],
)
def test_mask_url_hides_every_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
