"""What every verb shares: where the runs are, the client, errors and output.

The verbs are built on temporalio's own `Client`, served by dbosify's hook exactly as in an app:
`connect` activates the hook before the first ``import temporalio``, so a verb sees what the
app sees (the same data converter, the same errors).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dbosify.cli import failures
from dbosify.cli.output import echo, escape

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.converter import DataConverter

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TARGET = "localhost:7233"  # under the hook: DBOSIFY_DATABASE_URL, else embedded SQLite


class CliError(click.ClickException):
    """A failure reported in one line, ``Error: ...``, with exit code 1 (see `failures`);
    with ``--debug``, the traceback of what caused it first."""

    exit_code = 1

    def format_message(self) -> str:
        return failures.error_line(self.message)

    def show(self, file: Any = None) -> None:
        if failures.debug():
            failures.print_traceback(self.__cause__ or self)
        super().show(file)


@dataclass
class Conn:
    address: str
    namespace: str
    output: str
    data_converter: str | None

    @property
    def json(self) -> bool:
        return self.output == "json"


def activate() -> None:
    """The hook, before anything imports temporalio (as `dbosify run` does)."""
    import dbosify

    dbosify.activate()
    # Client.connect warns that a target with a scheme (our database URLs) is deprecated on
    # Temporal; here it is how a database is named.
    warnings.filterwarnings("ignore", message="Target host as URL", category=UserWarning)


def load_converter(spec: str | None) -> DataConverter:
    """``--data-converter module:attr``: a DataConverter, or a callable returning one."""
    from temporalio.converter import DataConverter

    if not spec:
        return DataConverter.default
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"--data-converter must be module:attribute, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`, the current directory's modules
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CliError(f"can't load data converter {spec!r}: {exc}") from None
    if not isinstance(obj, DataConverter) and callable(obj):
        obj = obj()
    if not isinstance(obj, DataConverter):
        raise CliError(f"{spec!r} is not a temporalio DataConverter (got {type(obj).__name__})")
    return obj


async def connect(conn: Conn) -> Client:
    activate()
    from temporalio.client import Client

    from dbosify._store.urls import mask_url, parse_url, resolve_url

    failures.given_url(conn.address)
    where = f"failed connecting to {mask_url(conn.address)!r}"
    converter = load_converter(conn.data_converter)
    try:
        target = parse_url(resolve_url(conn.address))
    except ValueError as exc:  # an unusable target; the message says what is accepted
        raise CliError(f"{where}: {exc}") from exc
    failures.given_url(target.url, target.sqlite_dir)
    if target.sqlite_dir is not None:
        problem = failures.sqlite_problem(target.sqlite_dir)
        if problem:
            raise CliError(f"{where}: {problem}")
    try:
        return await Client.connect(
            conn.address, namespace=conn.namespace, data_converter=converter
        )
    except ValueError as exc:  # an unusable target; the message says what is accepted
        raise CliError(f"{where}: {exc}") from exc
    except RuntimeError as exc:  # the database cannot be reached: the message says why
        message = str(exc).removeprefix("Failed client connect: ")
        raise CliError(f"{where}: {failures.with_sqlite_path(message)}") from exc


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=failures.set_debug,
    help=failures.DEBUG_HELP,
)


def client_options(f: F) -> F:
    """``--address``/``--db``, ``--namespace``, ``--output`` and ``--data-converter``."""

    @click.option(
        "--address", "--db", "address", envvar="DBOSIFY_DATABASE_URL", default=DEFAULT_TARGET,
        show_default="$DBOSIFY_DATABASE_URL, else the embedded SQLite default",
        help="Database URL (postgresql://... or sqlite:///dir), or host:port for the default.",
    )
    @click.option("--namespace", "-n", default="default", show_default=True, help="Temporal namespace.")
    @click.option(
        "--output", "-o", type=click.Choice(["table", "text", "json"]), default="table",
        show_default=True, help="Output format (text is table).",
    )
    @click.option(
        "--data-converter", metavar="MODULE:ATTR", default=None,
        help="A temporalio DataConverter (or a function returning one) to decode payloads.",
    )
    @debug_option
    @functools.wraps(f)
    def wrapper(
        address: str, namespace: str, output: str, data_converter: str | None, **kwargs: Any
    ) -> Any:
        conn = Conn(address or DEFAULT_TARGET, namespace, output, data_converter)
        return f(conn=conn, **kwargs)

    return wrapper  # type: ignore[return-value]


def run(action: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run one verb's coroutine; any failure becomes ``Error: <action>: <message>``."""
    from temporalio.client import RPCError
    from temporalio.service import RPCStatusCode

    try:
        return asyncio.run(coro)
    except RPCError as exc:
        message = exc.message
        if exc.status == RPCStatusCode.UNIMPLEMENTED:
            message = f"not supported by dbosify: {message}"
        raise CliError(f"{action}: {failures.with_sqlite_path(message)}") from exc
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except KeyboardInterrupt:
        raise click.Abort() from None
    except Exception as exc:  # a driver's or the SDK's: its first line, the traceback with --debug
        raise CliError(f"{action}: {failures.with_sqlite_path(failures.one_line(exc))}") from exc


# -- output ------------------------------------------------------------------------------------


def fmt_time(t: datetime | None) -> str:
    if t is None:
        return ""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_name(status: Any) -> str:
    """A workflow status as the ``temporal`` CLI shows it: ``Running``, ``ContinuedAsNew``."""
    if status is None:
        return ""
    return "".join(w.capitalize() for w in str(status.name).split("_"))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows under their headers, aligned; each cell's control characters escaped."""
    cells = [[escape(str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for line in [list(headers), *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def section(title: str | None, pairs: Sequence[tuple[str, Any]]) -> None:
    """``Key  value`` lines, aligned, under an optional title."""
    if title:
        click.echo(title)
    shown = [(k, v) for k, v in pairs if v not in (None, "")]
    width = max((len(k) for k, _ in shown), default=0)
    for k, v in shown:
        echo(f"  {k.ljust(width)}  {v}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | None, flag: str) -> timedelta | None:
    """Go-style durations as the ``temporal`` CLI takes them: ``10s``, ``1m30s``, ``2h``."""
    if not text:
        return None
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise CliError(f"invalid {flag} {text!r}: expected a duration such as 10s, 5m or 1h30m")
    return timedelta(seconds=total)


def parse_key_values(values: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=JSON`` pairs (``--memo``, ``--search-attribute``)."""
    import json

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CliError(f"invalid {flag} {item!r}: expected KEY=VALUE with a JSON value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CliError(f"invalid {flag} {item!r}: the value is not JSON ({exc})") from None
    return out
