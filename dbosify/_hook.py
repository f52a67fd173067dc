"""Import hook that serves temporalio's native core module from pure Python.

temporalio ships one compiled extension, ``temporalio.bridge.temporal_sdk_bridge``
(``temporal_sdk_bridge.abi3.so``), which talks to a Temporal server. dbosify
replaces exactly that module with :mod:`dbosify._native`; every other
``temporalio.*`` module is loaded unchanged from the installed wheel.

The hook is a :data:`sys.meta_path` finder placed first, so the compiled file is
never even looked at. For a name in :data:`MODULE_MAP` (or a submodule of one)
it imports the dbosify module and registers that *same* module object under the
temporalio name, so ``sys.modules["temporalio.bridge.temporal_sdk_bridge"] is
sys.modules["dbosify._native"]``. Every other name, including other
``temporalio.*`` names (third-party packages install into that namespace), is
left to the normal import system.

Activation happens in one of three ways, all ending in :func:`install`:

* the ``dbosify-activate.pth`` file installed into site-packages, when the
  environment variable ``DBOSIFY_ACTIVATE`` is ``1`` or ``true`` at start-up
  (see :func:`install_from_env`);
* ``sitecustomize_template`` copied in as ``sitecustomize.py``;
* an explicit :func:`dbosify.activate` call, or ``python -m dbosify run``.

This module is imported at interpreter start-up when activation is requested,
so it imports nothing heavy (no temporalio, no dbos) until a mapped module is
actually imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import re
import sys
import threading
import types
from collections.abc import Mapping, Sequence

__all__ = [
    "ENV_VAR",
    "MODULE_MAP",
    "NATIVE_MODULE",
    "SUPPORTED_TEMPORALIO",
    "ActivatedTooLateError",
    "DbosifyFinder",
    "UnsupportedTemporalioError",
    "env_requests_activation",
    "install",
    "install_from_env",
    "is_installed",
    "uninstall",
]

#: The temporalio distribution versions dbosify is tested against. The native
#: module's Python interface is private to temporalio, so this range is strict.
SUPPORTED_TEMPORALIO = ">=1.35.0,<1.36"

#: Environment variable read by the ``.pth`` file and ``sitecustomize``.
ENV_VAR = "DBOSIFY_ACTIVATE"

#: Values of :data:`ENV_VAR` (compared case-insensitively, surrounding blanks
#: ignored) that request activation. The ``.pth`` line repeats this test inline
#: so that nothing is imported when activation is not requested; a test keeps
#: the two in agreement.
ACTIVATE_VALUES = ("1", "true")

#: The compiled module that must never be loaded while the hook is active.
NATIVE_MODULE = "temporalio.bridge.temporal_sdk_bridge"

#: The single place that says which temporalio module names dbosify serves, and
#: from which dbosify module. A submodule of a mapped name (``A.x``) is served
#: by the same submodule of its target (``B.x``) even without its own entry;
#: entries are listed explicitly where temporalio is known to use them.
MODULE_MAP: Mapping[str, str] = types.MappingProxyType(
    {
        NATIVE_MODULE: "dbosify._native",
        # temporalio/envconfig.py does
        # ``from temporalio.bridge.temporal_sdk_bridge import envconfig``.
        NATIVE_MODULE + ".envconfig": "dbosify._native.envconfig",
    }
)

_TOO_LATE_MESSAGE = (
    "temporalio was imported before dbosify was activated; set DBOSIFY_ACTIVATE=1 in "
    "the environment before the interpreter starts, or call dbosify.activate() before "
    "importing temporalio"
)


class UnsupportedTemporalioError(ImportError):
    """temporalio is not installed, or its version is outside :data:`SUPPORTED_TEMPORALIO`."""


class ActivatedTooLateError(RuntimeError):
    """The compiled temporalio native module was imported before activation."""


# --------------------------------------------------------------------------- mapping


def _target_for(fullname: str) -> str | None:
    """The dbosify module name serving ``fullname``, or None if it is not ours."""
    target = MODULE_MAP.get(fullname)
    if target is not None:
        return target
    # Longest mapped prefix wins, so nested entries can override their parent.
    best: str | None = None
    for source in MODULE_MAP:
        if fullname.startswith(source + ".") and (best is None or len(source) > len(best)):
            best = source
    if best is None:
        return None
    return MODULE_MAP[best] + fullname[len(best) :]


# Module objects already served, keyed by the temporalio name, and their own
# specs. Kept here rather than looked up in sys.modules so that an import made
# while sys.modules is swapped (temporalio's workflow sandbox does that) still
# gets the one and only module object instead of a second copy.
_served: dict[str, types.ModuleType] = {}
_own_specs: dict[str, importlib.machinery.ModuleSpec] = {}
_served_lock = threading.RLock()


def _import_target(target: str) -> types.ModuleType:
    """Import the dbosify module ``target``.

    A target that is not a real submodule but a module object set as an
    attribute of its parent package (``dbosify._native.envconfig = <module>``)
    is accepted too.
    """
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name != target or "." not in target:
            raise
        parent_name, _, attr = target.rpartition(".")
        value = getattr(importlib.import_module(parent_name), attr, None)
        if isinstance(value, types.ModuleType):
            return value
        raise


class _ServingLoader(importlib.abc.Loader):
    """Loader that returns an existing dbosify module object for a temporalio name."""

    def __init__(self, fullname: str, target: str) -> None:
        self.fullname = fullname
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        with _served_lock:
            module = _served.get(self.fullname)
            if module is None:
                module = _import_target(self.target)
                own = getattr(module, "__spec__", None)
                if isinstance(own, importlib.machinery.ModuleSpec):
                    _own_specs[self.fullname] = own
                _served[self.fullname] = module
            # Give the spec the target's own shape (package or plain module), so
            # the import system does not add a __path__ to a plain module.
            own = _own_specs.get(self.fullname)
            if own is not None:
                spec.submodule_search_locations = own.submodule_search_locations
            return module

    def exec_module(self, module: types.ModuleType) -> None:
        # Nothing to execute: the target was fully imported in create_module.
        # The import system has just set module.__spec__ to the temporalio-named
        # spec (and on reload() also __name__, __loader__, __package__, __path__);
        # put the module's own identity back so that relative imports, pickling
        # and reloads inside dbosify keep working.
        own = _own_specs.get(self.fullname)
        if own is None:
            return
        module.__spec__ = own
        module.__name__ = own.name
        module.__package__ = own.parent
        if own.loader is not None:
            module.__loader__ = own.loader
        locations = own.submodule_search_locations
        if locations is not None and module.__dict__.get("__path__") != list(locations):
            module.__path__ = list(locations)


class DbosifyFinder(importlib.abc.MetaPathFinder):
    """``sys.meta_path`` finder serving :data:`MODULE_MAP` names from dbosify."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        dbosify_name = _target_for(fullname)
        if dbosify_name is None:
            return None
        # Whether the target is a package is only known once it is imported
        # (create_module corrects the spec then); assume a package until then.
        own = _own_specs.get(fullname)
        return importlib.machinery.ModuleSpec(
            fullname,
            _ServingLoader(fullname, dbosify_name),
            origin=f"dbosify ({dbosify_name})",
            is_package=own is None or own.submodule_search_locations is not None,
        )

    def __repr__(self) -> str:
        return "<dbosify import hook>"


class _BlockingFinder(importlib.abc.MetaPathFinder):
    """Installed when activation from the environment failed.

    Makes any import of the native module fail with the activation error rather
    than silently loading the compiled module and talking to a Temporal server.
    """

    def __init__(self, message: str) -> None:
        self.message = message

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if _target_for(fullname) is None:
            return None
        raise ImportError(
            f"dbosify: {ENV_VAR} is set but dbosify could not be activated: {self.message}",
            name=fullname,
        )

    def __repr__(self) -> str:
        return "<dbosify import hook (activation failed)>"


# --------------------------------------------------------------------------- checks


def _installed_temporalio_version() -> str | None:
    """The installed temporalio distribution's version, or None if absent."""
    try:
        return importlib.metadata.version("temporalio")
    except importlib.metadata.PackageNotFoundError:
        return None


_PRE_RELEASE = re.compile(r"[-_.]?(a|b|c|rc|alpha|beta|pre|preview|dev)", re.IGNORECASE)


def _parse_version(text: str) -> tuple[tuple[int, ...], bool]:
    """(release numbers without trailing zeros, is_final) for a PEP 440-ish version.

    Deliberately small: dbosify must not depend on ``packaging`` at start-up.
    Epochs are not supported; post and local releases count as final.
    """
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)(.*)$", text)
    if match is None:
        raise ValueError(f"cannot parse version {text!r}")
    release = [int(part) for part in match.group(1).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    is_final = _PRE_RELEASE.match(match.group(2)) is None
    return tuple(release), is_final


def version_in_range(version: str, specifier: str) -> bool:
    """Whether ``version`` satisfies ``specifier`` (comma-separated >=, >, <=, <, ==, !=)."""
    have_release, have_final = _parse_version(version)
    have = (have_release, have_final)
    for clause in specifier.split(","):
        clause = clause.strip()
        match = re.match(r"(>=|<=|==|!=|>|<)\s*(.+)$", clause)
        if match is None:
            raise ValueError(f"unsupported version specifier {clause!r}")
        op, bound_text = match.groups()
        bound_release, bound_final = _parse_version(bound_text)
        bound = (bound_release, bound_final)
        if op == ">=":
            ok = have >= bound
        elif op == ">":
            ok = have > bound
        elif op == "<=":
            ok = have <= bound
        elif op == "<":
            # As in PEP 440, "<1.36" also excludes pre-releases of 1.36.
            ok = have < bound and (have_release < bound_release or not bound_final)
        elif op == "==":
            ok = have == bound
        else:
            ok = have != bound
        if not ok:
            return False
    return True


def _check_temporalio() -> None:
    version = _installed_temporalio_version()
    if version is None:
        raise UnsupportedTemporalioError(
            f"dbosify needs temporalio{SUPPORTED_TEMPORALIO}, but temporalio is not installed "
            f"in this environment ({sys.prefix})",
            name="temporalio",
        )
    if not version_in_range(version, SUPPORTED_TEMPORALIO):
        raise UnsupportedTemporalioError(
            f"dbosify supports temporalio{SUPPORTED_TEMPORALIO}, but temporalio {version} is "
            f"installed; install a supported temporalio or a dbosify release that supports "
            f"{version}",
            name="temporalio",
        )


def _check_not_too_late() -> None:
    loaded = sys.modules.get(NATIVE_MODULE)
    if loaded is not None and loaded is not _served.get(NATIVE_MODULE):
        raise ActivatedTooLateError(_TOO_LATE_MESSAGE)


# --------------------------------------------------------------------------- activation

_finder = DbosifyFinder()
_install_lock = threading.Lock()


def is_installed() -> bool:
    """Whether the dbosify finder is on :data:`sys.meta_path`."""
    return _finder in sys.meta_path


def install() -> None:
    """Activate dbosify: put the finder first on :data:`sys.meta_path`.

    Idempotent. Raises :class:`UnsupportedTemporalioError` (an ImportError) if
    temporalio is missing or of an unsupported version, and
    :class:`ActivatedTooLateError` (a RuntimeError) if temporalio's compiled
    native module has already been imported in this interpreter.
    """
    with _install_lock:
        _check_not_too_late()
        if _finder in sys.meta_path:
            if sys.meta_path[0] is not _finder:
                sys.meta_path.remove(_finder)
                sys.meta_path.insert(0, _finder)
            return
        _check_temporalio()
        # A blocker from an earlier failed activation is no longer needed.
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BlockingFinder)]
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the finder. Modules already imported through it stay imported."""
    with _install_lock:
        while _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


def env_requests_activation(environ: Mapping[str, str] | None = None) -> bool:
    """Whether :data:`ENV_VAR` asks for activation (``1`` or ``true``, any case)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_VAR, "").strip().lower() in ACTIVATE_VALUES


def install_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Activate if :data:`ENV_VAR` asks for it; used by the ``.pth`` file and sitecustomize.

    Returns whether dbosify is active afterwards.

    Failure policy. Python runs ``.pth`` lines while starting *every* interpreter
    of the environment (pip included). If an exception escapes a ``.pth`` line,
    ``site`` prints a traceback and carries on starting up without the hook, so
    a Temporal app would then silently load the real native module and try to
    reach a Temporal server. Aborting start-up instead would break every Python
    process in the environment, including the pip needed to fix it. So on an
    activation error this function:

    * prints one line, ``dbosify: DBOSIFY_ACTIVATE is set but dbosify could not
      be activated: <reason>``, to stderr;
    * installs a blocking finder so that importing temporalio's native module
      (which ``temporalio.client`` and ``temporalio.worker`` do) raises an
      ImportError with the same reason, so the app fails loudly instead of
      running against the wrong backend;
    * returns False without raising. Python programs that never import temporalio
      keep working.

    An *unexpected* exception (a bug, not an activation error) is handled the
    same way and then re-raised, so ``site`` also prints its traceback.
    """
    if not env_requests_activation(environ):
        return False
    try:
        install()
    except (UnsupportedTemporalioError, ActivatedTooLateError) as exc:
        _fail_activation(str(exc))
        return False
    except Exception as exc:
        _fail_activation(f"{type(exc).__name__}: {exc}")
        raise
    return True


def _fail_activation(reason: str) -> None:
    try:
        print(
            f"dbosify: {ENV_VAR} is set but dbosify could not be activated: {reason}",
            file=sys.stderr,
        )
    except Exception:  # stderr may be closed or missing at start-up
        pass
    if not any(isinstance(f, _BlockingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _BlockingFinder(reason))
