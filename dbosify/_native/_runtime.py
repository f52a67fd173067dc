"""The native runtime, metrics and test-server surfaces: small, and mostly inert."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dbosify._engine import core_logs
from dbosify._metrics import meter_for
from dbosify._metrics.meter import Meter
from dbosify._store import ENV_DATABASE_URL, SERVER_PARAM, files, limits
from dbosify._store.threads import in_thread
from dbosify._store.urls import parse_url

logger = logging.getLogger("dbosify")


class RuntimeRef:
    """Core runtime handle: its log forwarding (see `core_logs`) and its metric meter (see
    `dbosify._metrics`: Prometheus, OpenTelemetry or a buffer), closed with the runtime."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.log_forwarder = core_logs.Forwarder.of(options)
        self.pid = os.getpid()
        self.meter, self._buffer = meter_for(options)
        if self.meter is not None:
            weakref.finalize(self, self.meter.close)

    def assert_same_process(self, action: str) -> None:
        """Like Core: a runtime, and its clients and workers, belong to the process that made it
        (after os.fork the child has none of its threads or connections)."""
        if self.pid != os.getpid():
            raise AssertionError(
                f"Cannot {action} across forks (original runtime PID is {self.pid}, current is {os.getpid()})"
            )

    def retrieve_buffered_metrics(self, durations_as_seconds: bool) -> Sequence[Any]:
        if self._buffer is None:
            raise RuntimeError("Attempting to retrieve buffered metrics without buffer")
        return self._buffer.retrieve(durations_as_seconds)  # type: ignore[no-any-return]

    def write_test_info_log(self, message: str, extra_data: str) -> None:
        core_logs.emit(self, logging.INFO, core_logs.RUNTIME_TARGET, message, extra_data=extra_data)

    def write_test_debug_log(self, message: str, extra_data: str) -> None:
        core_logs.emit(self, logging.DEBUG, core_logs.RUNTIME_TARGET, message, extra_data=extra_data)


def init_runtime(options: Any) -> RuntimeRef:
    return RuntimeRef(options)


def raise_in_thread(thread_id: int, exc: Any) -> bool:
    """Raise ``exc`` (an exception class) asynchronously in a thread (used for deadlock detection)."""
    res = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))
    return bool(res == 1)


def new_metric_meter(runtime_ref: Any) -> Meter | None:
    """The runtime's meter; None without metrics (temporalio then uses its no-op meter)."""
    return runtime_ref.meter  # type: ignore[no-any-return]


class _Inert:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


BufferedLogEntry = _Inert


class EphemeralServerRef:
    """What ``WorkflowEnvironment.start_local()`` gets instead of a dev server process.

    Like a dev server's in-memory database, what the environment stored goes with it: on
    shutdown its store is closed and the isolated schemas (Postgres) or the temporary directory
    (SQLite) that `start_dev_server` made for it are removed. Nothing else is touched.
    """

    def __init__(
        self, target: str, drop_on_shutdown: bool = False, created_dir: Path | None = None
    ) -> None:
        self.target = target
        self.has_test_service = False
        self._drop = drop_on_shutdown
        self._created_dir = created_dir

    async def shutdown(self) -> None:
        from dbosify._store import forget_store

        store = forget_store(self.target)  # closes it: no connection is left on the files
        if self._drop and store is not None:
            await in_thread(store.drop_server)
        if self._created_dir is not None:
            created, self._created_dir = self._created_dir, None
            await in_thread(_remove_tree, created)


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.warning("dbosify: could not remove the finished environment's %s: %s", path, err)


def _search_attribute_args(args: Any) -> dict[str, int]:
    """The dev server's ``--search-attribute NAME=Type`` arguments (start_local's search_attributes)."""
    from dbosify._engine.search_attributes import TYPE_NAMES

    by_name = {v: k for k, v in TYPE_NAMES.items()}
    out: dict[str, int] = {}
    items = [a for a in (args or ()) if isinstance(a, str)]
    for flag, value in zip(items, items[1:], strict=False):
        if flag == "--search-attribute" and "=" in value:
            name, _, type_name = value.rpartition("=")
            if type_name not in by_name:
                raise ValueError(f"unknown search attribute type {type_name!r} for {name!r}")
            out[name] = by_name[type_name]
    return out


async def _register_search_attributes(target: str, namespace: str, attrs: dict[str, int]) -> None:
    from dbosify._engine.search_attributes import add
    from dbosify._engine.visibility_sql import SYSTEM_ATTRIBUTES
    from dbosify._store import get_store, resolve_url

    store = get_store(resolve_url(target))
    await store.transact(namespace, lambda tx: add(tx, attrs, SYSTEM_ATTRIBUTES))


def _dynamic_config(args: Any, key: str) -> str | None:
    """A dev server ``--dynamic-config-value KEY=VALUE`` (or bare ``KEY=VALUE``) argument."""
    for arg in args or ():
        if isinstance(arg, str) and arg.startswith(f"{key}="):
            return arg.split("=", 1)[1]
    return None


def _namespace_args(config: Any) -> list[str]:
    """The namespaces a dev server starts with: start_local's ``namespace`` and every
    ``--namespace NAME`` (``-n NAME``, ``--namespace=NAME``) of its extra arguments; the
    environment's own first."""
    names = [getattr(config, "namespace", None) or "default"]
    items = [a for a in (getattr(config, "extra_args", None) or ()) if isinstance(a, str)]
    for i, flag in enumerate(items):
        if flag in ("--namespace", "-n") and i + 1 < len(items):
            names.append(items[i + 1])
        elif flag.startswith("--namespace="):
            names.append(flag.split("=", 1)[1])
    return list(dict.fromkeys(n for n in names if n))


async def start_dev_server(runtime_ref: Any, config: Any) -> EphemeralServerRef:
    server = await _start_dev_server(config)
    try:
        await _configure_dev_server(server, config)
    except BaseException:
        await server.shutdown()  # temporalio never sees it: nothing else would remove it
        raise
    return server


async def _configure_dev_server(server: EphemeralServerRef, config: Any) -> None:
    from dbosify._store import get_store, resolve_url

    store = get_store(resolve_url(server.target))
    # Registered, as the dev server registers its --namespace flags (default needs nothing).
    for name in _namespace_args(config):
        if name != "default":
            await in_thread(store.register_namespace, name)
    # A started dev server is ready to serve: the first start must not pay the store's setup.
    await in_thread(store.prepare_namespace, _namespace_args(config)[0])
    args = getattr(config, "extra_args", None)
    attrs = _search_attribute_args(args)
    if attrs:
        await _register_search_attributes(server.target, getattr(config, "namespace", "default"), attrs)
    # Temporal's limits (limit.blobSize.error, limit.historyCount.error, ...), as the dev server
    # takes them; see dbosify/_store/limits.py.
    for key in limits.DYNAMIC_CONFIG:
        value = _dynamic_config(args, key)
        if value is not None:
            limits.apply_dynamic_config(store.limits, key, value)


async def _start_dev_server(config: Any) -> EphemeralServerRef:
    """No server to start: the environment's client connects to the store.

    Like the dev server, each start gets a fresh store, gone when the environment shuts down:
    a temporary SQLite directory (under the configured one when ``DBOSIFY_DATABASE_URL`` is a
    ``sqlite://`` URL), or isolated schemas in the configured Postgres database.
    """
    # The dev server's dynamic config that shapes what workflows see, honoured where it applies.
    for arg in getattr(config, "extra_args", None) or ():
        if isinstance(arg, str) and arg.startswith("limit.historyCount.suggestContinueAsNew="):
            from dbosify._worker.driver import set_suggest_continue_as_new_after

            set_suggest_continue_as_new_after(int(arg.split("=", 1)[1]))
    url = os.environ.get(ENV_DATABASE_URL, "").strip()
    if url:
        target = parse_url(url, source=ENV_DATABASE_URL)  # InvalidURL says what is accepted
        if not target.is_sqlite:
            # Each environment is its own server, as each start_local() is on Temporal: its own
            # schemas in the configured database, dropped when the environment shuts down.
            server = uuid.uuid4().hex[:10]
            sep = "&" if "?" in url else "?"
            return EphemeralServerRef(f"{url}{sep}{SERVER_PARAM}={server}", drop_on_shutdown=True)
        assert target.sqlite_dir is not None
        files.private_dir(target.sqlite_dir)
        created = Path(tempfile.mkdtemp(prefix="dev-", dir=target.sqlite_dir))
    else:
        created = Path(tempfile.mkdtemp(prefix="dbosify-dev-"))
    return EphemeralServerRef("sqlite:///" + str(created), created_dir=created)


async def start_test_server(runtime_ref: Any, config: Any) -> EphemeralServerRef:
    """What ``WorkflowEnvironment.start_time_skipping()`` gets instead of the Java test server.

    A fresh store, as `start_dev_server` makes (gone at shutdown), whose clock is virtual: the
    environment's client and workers run on it, and the test service RPCs drive it (see
    `dbosify._store.virtual_clock` and `dbosify._server.time_skipping`).
    """
    from dbosify._store import get_store, resolve_url
    from dbosify._store.virtual_clock import VirtualClock

    server = await _start_dev_server(config)
    server.has_test_service = True
    store = get_store(resolve_url(server.target))
    store.use_clock(VirtualClock())
    store.open_namespaces = True  # the Java test server does not check namespaces
    # Set up before the environment is handed over, as a started test server is: otherwise the
    # first start pays it in real time while time skipping waits for it (seconds under load).
    await in_thread(store.prepare_namespace, _namespace_args(config)[0])
    return server
