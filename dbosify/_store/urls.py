"""Where the data goes: resolving a connect target to a database URL, and reading that URL.

``Client.connect(target)`` accepts a Postgres URL (``postgresql://``, ``postgres://`` or
``postgresql+psycopg://``), a ``sqlite://`` URL (a directory of embedded SQLite files), or a
plain ``host:port`` such as ``localhost:7233``: an ordinary Temporal target, which means the
database in ``DBOSIFY_DATABASE_URL``, or else the embedded SQLite default. Anything else is
refused with an `InvalidURL` that says what is accepted; no message ever shows a password.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from dbosify._store.errors import StoreError

ENV_DATABASE_URL = "DBOSIFY_DATABASE_URL"
ENV_HOME = "DBOSIFY_HOME"
SERVER_PARAM = "dbosify_server"  # URL query parameter: one isolated "dev server" in a database

PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SQLITE_SCHEME = "sqlite"

_DATABASE_FORMS = (
    "a Postgres URL (postgresql://, postgres:// or postgresql+psycopg://) or a sqlite:// URL"
    " (a directory of embedded SQLite files)"
)
ACCEPTED_TARGETS = (
    f"Client.connect accepts {_DATABASE_FORMS}, or a plain host:port such as localhost:7233,"
    f" which means the database in {ENV_DATABASE_URL}, or else the embedded SQLite default"
)
ACCEPTED_DATABASE_URLS = f"{ENV_DATABASE_URL} accepts {_DATABASE_FORMS}"

# A Temporal-style target: a host name, IPv4 address or [IPv6] literal, an optional port.
_HOST = r"\[[0-9A-Za-z:.%_-]+\]|\w(?:[\w.-]*[\w.])?"
_HOST_PORT = re.compile(rf"(?P<host>{_HOST})(?::(?P<port>[^/@\s]*))?/?")
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('[^']*'|[^&\s]*)", re.IGNORECASE)


class InvalidURL(StoreError, ValueError):
    """A connect target or database URL dbosify cannot use; the message says what it accepts.

    A `ValueError`, as the native client's "invalid target URL" is, and a `StoreError`.
    """


def mask_url(url: str) -> str:
    """The URL (or any text meant as one) with its password replaced by ``***``.

    Errs on the side of hiding: see `_userinfo_end`; the value of a ``password=`` parameter
    goes too. The one masking function: every message and log line that shows a URL uses it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = _userinfo_end(rest)
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        if colon:
            rest = f"{user}:***{rest[at:]}"
    return scheme + sep + _PASSWORD_PARAM.sub(r"\g<1>***", rest)


def url_secrets(url: str) -> list[str]:
    """The passwords ``url`` holds, as written and percent-decoded: what `mask_url` hides, for
    scrubbing them from text that quotes them some other way (a driver's message)."""
    _scheme, sep, rest = url.partition("://")
    if not sep:
        rest = url
    found: list[str] = []
    at = _userinfo_end(rest)
    if at >= 0:
        _user, colon, password = rest[:at].partition(":")
        if colon:
            found.append(password)
    for m in _PASSWORD_PARAM.finditer(rest):
        found.append(m.group(2).strip("'"))
    return sorted({v for s in found for v in (s, unquote(s)) if v}, key=len, reverse=True)


# What a '/', '?' or '#' is followed by in a real path or query (a ``key=``), rather than in a
# password written without percent-encoding.
_QUERYISH = re.compile(r"[?&][^=&@/]*=")
_PLAIN_HOSTS = re.compile(r"(?:\[[^\]]*\]|[^:@,\[\]]*)(?::\d*)?(?:,(?:\[[^\]]*\]|[^:@,\[\]]*)(?::\d*)?)*")


def _userinfo_end(rest: str) -> int:
    """Where the user information of ``rest`` (a URL after its ``scheme://``) ends: its ``@``, or -1.

    Normally the last ``@`` before the first ``/``, ``?`` or ``#``. A password with one of those
    unencoded puts its ``@`` later: the last ``@`` counts, unless the text before the first of
    those characters is a plain ``host[:port]`` list (the ``@`` is in the path or the query),
    or the user information ended earlier and a query parameter (``?key=``) comes between.
    """
    end = min((i for i in (rest.find(d) for d in "/?#") if i >= 0), default=len(rest))
    before = rest.rfind("@", 0, end)
    last = rest.rfind("@")
    if last < end:
        return before
    if before < 0:
        return -1 if _PLAIN_HOSTS.fullmatch(rest[:end]) else last
    return before if _QUERYISH.search(rest[end:last]) else last


def default_sqlite_dir() -> Path:
    """Where the embedded SQLite default lives: ``$DBOSIFY_HOME`` or the user's state dir."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "dbosify"


def resolve_url(target: str | None) -> str:
    """The database URL for a ``Client.connect`` target (temporalio hands it over as a URL).

    A Postgres or ``sqlite://`` target is used as is; a plain ``host:port`` (the usual Temporal
    target) means ``DBOSIFY_DATABASE_URL``, or else an embedded SQLite directory. Raises
    `InvalidURL` for any other target, and for a ``DBOSIFY_DATABASE_URL`` it cannot use.
    """
    if target:
        url = _database_url_of_target(target)
        if url is not None:
            parse_url(url, source="target")
            return url
    env = os.environ.get(ENV_DATABASE_URL, "").strip()
    if env:
        parse_url(env, source=ENV_DATABASE_URL)
        return env
    return "sqlite:///" + str(default_sqlite_dir())


def _database_url_of_target(target: str) -> str | None:
    """The database URL a target names, or None for a plain host:port."""
    t = target.strip()
    for prefix in ("http://", "https://"):
        # temporalio turns `host:port` into `http://host:port` (`https://` with TLS), and passes
        # a target that has a scheme of its own unchanged.
        if t.lower().startswith(prefix):
            rest = t[len(prefix) :]
            if "://" in rest:
                t = rest
                break
            _check_host_port(rest)  # named without the scheme temporalio added
            return None
    scheme, sep, _ = t.partition("://")
    if not sep:
        _check_host_port(t)
        return None
    if scheme.lower() in (*PG_SCHEMES, SQLITE_SCHEME):
        return t
    raise _invalid("target", target, f"the scheme {scheme!r} is not supported")


def _check_host_port(text: str) -> None:
    m = _HOST_PORT.fullmatch(text)
    if m is None:
        why = (
            "it is empty"
            if not text
            else "it is neither a database URL (it has no scheme such as postgresql://)"
            " nor a host:port"
        )
        raise _invalid("target", text, why)
    _check_port(m.group("port"), m.group("host"), "target", text)


def _check_port(port: str | None, host: str, source: str, url: str) -> None:
    if port is None or port == "":
        return
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise _invalid(
            source, url, f"the port {port!r} of host {host!r} is not a number from 0 to 65535"
        )


def _invalid(source: str, url: str, why: str) -> InvalidURL:
    accepted = ACCEPTED_DATABASE_URLS if source == ENV_DATABASE_URL else ACCEPTED_TARGETS
    return InvalidURL(f"invalid {source} {mask_url(url)!r}: {why}. {accepted}")


@dataclass(frozen=True)
class Target:
    """A parsed database URL: an embedded SQLite directory, or a Postgres connection string."""

    url: str
    is_sqlite: bool
    sqlite_dir: Path | None = None
    pg_url: str | None = None
    server: str | None = None  # see SERVER_PARAM


def parse_url(url: str, source: str = "database URL") -> Target:
    """Read a database URL, as `resolve_url` returns it; `InvalidURL` if it is not one.

    ``source`` names where the URL came from in the error message.
    """
    scheme, sep, rest = url.partition("://")
    if url[: len(SQLITE_SCHEME) + 1].lower() == SQLITE_SCHEME + ":":
        path = url[len(SQLITE_SCHEME) + 1 :]
        while path.startswith("//"):
            path = path[1:]
        sqlite_dir = Path(unquote(path)) if path not in ("", "/") else default_sqlite_dir()
        if sqlite_dir.suffix in (".db", ".sqlite", ".sqlite3"):
            sqlite_dir = sqlite_dir.parent / sqlite_dir.stem
        return Target(url, True, sqlite_dir=sqlite_dir)
    if not sep:
        raise _invalid(source, url, "it is not a URL (it has no scheme such as postgresql://)")
    if scheme.lower() not in PG_SCHEMES:
        raise _invalid(source, url, f"the scheme {scheme!r} is not supported")
    pg_url = "postgresql://" + rest
    at = _userinfo_end(rest)
    if at >= 0 and any(d in rest[:at] for d in "/?#@"):
        raise _invalid(
            source, url, "a '/', '?', '#' or '@' in a user name or password must be"
            " percent-encoded (%2F, %3F, %23, %40)"
        )
    hosts = re.split(r"[/?#]", rest[at + 1 :], maxsplit=1)[0]
    if any(c.isspace() for c in hosts):
        raise _invalid(source, url, f"the host {hosts!r} contains a space")
    for hp in hosts.split(","):  # libpq takes several hosts, each with its own port
        if hp.startswith("["):
            host, bracket, port = hp.partition("]")
            if not bracket or (port and not port.startswith(":")):
                raise _invalid(source, url, f"the host {hp!r} is not a valid IPv6 literal")
            host, port = host + "]", port[1:] if port else ""
        else:
            host, _, port = hp.partition(":")
        _check_port(port, host, source, url)
    try:
        parts = urlsplit(pg_url)
    except ValueError as err:  # e.g. an unbalanced [ of an IPv6 literal
        raise _invalid(source, url, str(err)) from None
    # `?dbosify_server=ID` (what `WorkflowEnvironment.start_local()` hands out when the
    # database is configured) isolates its own schemas, as a separate dev server would be.
    query = parse_qsl(parts.query, keep_blank_values=True)
    server = [v for k, v in query if k == SERVER_PARAM]
    srv: str | None = None
    if server:
        if not re.fullmatch(r"[a-z0-9]{1,16}", server[0]):
            raise InvalidURL(
                f"invalid {SERVER_PARAM} in the {source} {mask_url(url)!r}: {server[0]!r}"
            )
        srv = server[0]
        rest_q = [(k, v) for k, v in query if k != SERVER_PARAM]
        pg_url = urlunsplit(parts._replace(query=urlencode(rest_q)))
    return Target(url, False, pg_url=pg_url, server=srv)
