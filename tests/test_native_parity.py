"""Signature parity of ``dbosify._native`` with temporalio's native module.

The import hook serves ``dbosify._native`` as ``temporalio.bridge.temporal_sdk_bridge``
instead of the wheel's compiled extension. This test loads that extension straight
from its file under a private module name, so it works whether or not the hook is
active in this process (conftest.py activates it), and compares the two modules:

* public names, both ways, at the top level and in the ``envconfig`` submodule;
* kinds: a class for a class, a callable for a function, a module for a module, a
  value of the same type for a value; an exception class for an exception class,
  deriving from the same builtin exception classes;
* each class's public members, both ways: a method for a method, and for a native
  property a property or an attribute (instance attributes count: they are read
  from the class's source);
* parameter names, kinds, order and whether each has a default, for every function,
  method and constructor whose native signature pyo3 makes introspectable;
* what the wheel's own Python code uses: ``temporalio/bridge/{client,worker,runtime,
  metric,testing}.py``, and any other temporalio module importing the native one,
  are parsed; every native name they reference and every member they use on a
  native object (``self._ref.x``, ``ref.x``, ``meter._ref.x``, typed from
  annotations, assignments and the small :data:`NATIVE_RETURNS` table) must exist
  on our side; a member awaited there must be a coroutine function on our side,
  one whose result is discarded must not be.

Deliberate differences are in ``native_parity_ledger.toml``, each with a reason; an
entry that no longer holds fails too. A temporalio release that adds or changes
native API therefore fails here until dbosify follows or the ledger says why not.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

NATIVE = "temporalio.bridge.temporal_sdk_bridge"
# Name under which the extension is loaded here. Its init function is found from the
# last component, so that must stay "temporal_sdk_bridge"; the package part keeps it
# apart from anything the import system knows. Nothing is put in sys.modules.
PRIVATE_NAME = "_dbosify_parity_probe.temporal_sdk_bridge"
OURS = "dbosify._native"
LEDGER_PATH = Path(__file__).with_name("native_parity_ledger.toml")
LEDGER_SECTIONS = ("missing", "extra", "signature")
BRIDGE_MODULES = ("client", "worker", "runtime", "metric", "testing")

# What the native functions and members that temporalio keeps a result of return, so
# that method calls on those results can be typed (see temporalio/bridge/src/*.rs).
NATIVE_RETURNS = {
    "connect_client": "ClientRef",
    "init_runtime": "RuntimeRef",
    "new_metric_meter": "MetricMeterRef",
    "new_worker": "WorkerRef",
    "start_dev_server": "EphemeralServerRef",
    "start_test_server": "EphemeralServerRef",
    "MetricMeterRef.default_attributes": "MetricAttributesRef",
    "MetricMeterRef.new_counter": "MetricCounterRef",
    "MetricMeterRef.new_gauge": "MetricGaugeRef",
    "MetricMeterRef.new_gauge_float": "MetricGaugeFloatRef",
    "MetricMeterRef.new_histogram": "MetricHistogramRef",
    "MetricMeterRef.new_histogram_duration": "MetricHistogramDurationRef",
    "MetricMeterRef.new_histogram_float": "MetricHistogramFloatRef",
    "MetricAttributesRef.with_additional_attributes": "MetricAttributesRef",
}

# Uses the analysis must find; guards against it silently finding nothing.
EXPECTED_USES = {
    "connect_client",
    "init_runtime",
    "new_worker",
    "CustomSlotSupplier",
    "PollShutdownError",
    "envconfig.load_client_config",
    "ClientRef.call_workflow_service",
    "ClientRef.update_metadata",
    "RuntimeRef.retrieve_buffered_metrics",
    "WorkerRef.poll_workflow_activation",
    "WorkerRef.finalize_shutdown",
    "WorkerRef.record_activity_heartbeat",
    "MetricMeterRef.default_attributes",
    "MetricCounterRef.add",
    "EphemeralServerRef.target",
    "EphemeralServerRef.shutdown",
}

_ABSENT: Any = object()


# --------------------------------------------------------------------------- loading


def _bridge_dirs() -> list[Path]:
    spec = importlib.util.find_spec("temporalio.bridge")
    assert spec is not None and spec.submodule_search_locations is not None
    return [Path(p) for p in spec.submodule_search_locations]


@cache
def _load_native() -> types.ModuleType | None:
    """The wheel's compiled module, loaded from its file without any import hook."""
    for location in _bridge_dirs():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = location / ("temporal_sdk_bridge" + suffix)
            if not path.is_file():
                continue
            loader = importlib.machinery.ExtensionFileLoader(PRIVATE_NAME, str(path))
            spec = importlib.util.spec_from_file_location(PRIVATE_NAME, path, loader=loader)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            return module
    return None


@pytest.fixture(scope="module")
def native() -> types.ModuleType:
    module = _load_native()
    if module is None:
        pytest.skip("the temporalio wheel has no temporal_sdk_bridge extension file")
    return module


@pytest.fixture(scope="module")
def ours() -> types.ModuleType:
    return importlib.import_module(OURS)


# --------------------------------------------------------------------------- ledger


@cache
def _ledger() -> dict[str, dict[str, str]]:
    """section -> {name: reason}."""
    data = tomllib.loads(LEDGER_PATH.read_text(encoding="utf-8"))
    unknown = set(data) - set(LEDGER_SECTIONS)
    assert not unknown, f"unknown ledger sections {sorted(unknown)}"
    out: dict[str, dict[str, str]] = {s: {} for s in LEDGER_SECTIONS}
    for section in LEDGER_SECTIONS:
        for group in data.get(section, []):
            assert set(group) == {"reason", "names"}, (
                f"[[{section}]] needs exactly reason and names"
            )
            reason = group["reason"]
            assert isinstance(reason, str) and reason.strip(), f"[[{section}]] has an empty reason"
            assert "\n" not in reason, f"[[{section}]] reason is not one line: {reason!r}"
            assert group["names"], f"[[{section}]] {reason!r} lists no names"
            for name in group["names"]:
                assert name not in out[section], f"{name} is listed twice in [[{section}]]"
                out[section][name] = reason
    return out


# --------------------------------------------------------------------------- surfaces


@dataclass(frozen=True)
class Item:
    """One public name of a module, or member of a class."""

    kind: str  # module, class, function, value, absent; members: method, property, attribute
    obj: Any  # the value; for members the class attribute, or _ABSENT for instance attributes
    owner: type | None = None  # for members, the class
    name: str = ""


def _is_builtin(cls: type) -> bool:
    return getattr(builtins, cls.__name__, None) is cls


def _value_kind(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    if isinstance(value, types.ModuleType):
        return "module"
    if isinstance(value, type):
        return "class"
    if callable(value):
        return "function"
    return "value"


def _member_kind(raw: Any) -> str:
    if isinstance(raw, (property, types.GetSetDescriptorType, types.MemberDescriptorType)):
        return "property"
    if isinstance(raw, (staticmethod, classmethod)) or callable(raw):
        return "method"
    return "value"


def _native_public_names(module: types.ModuleType) -> set[str]:
    return {name for name in dir(module) if not name.startswith("_")}


def _our_public_names(module: types.ModuleType) -> set[str]:
    """``__all__`` plus every public name the module defines itself (not imports)."""
    names = set(getattr(module, "__all__", ()))
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType):
            if value.__name__.startswith(module.__name__ + "."):
                names.add(name)
        elif isinstance(value, type) or callable(value):
            if str(getattr(value, "__module__", "")).split(".")[0] == "dbosify":
                names.add(name)
        elif type(value).__module__ == "builtins":
            names.add(name)
    return names


def _instance_attributes(cls: type) -> set[str]:
    """Public attributes that the class's own methods assign on ``self``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if _is_builtin(klass):
            continue
        names.update(n for n in vars(klass).get("__annotations__", {}) if not n.startswith("_"))
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and not node.attr.startswith("_")
            ):
                names.add(node.attr)
    return names


def _class_members(cls: type, ours: bool) -> dict[str, Item]:
    members: dict[str, Item] = {}
    for klass in reversed(cls.__mro__):
        if _is_builtin(klass):
            continue
        for name in vars(klass):
            if not name.startswith("_"):
                raw = inspect.getattr_static(cls, name)
                members[name] = Item(_member_kind(raw), raw, cls, name)
    if ours:
        for name in _instance_attributes(cls) - set(members):
            members[name] = Item("attribute", _ABSENT, cls, name)
    return members


def _surface(module: types.ModuleType, ours: bool) -> dict[str, Item]:
    """qualified name -> Item for every public name, recursing into submodules and classes."""
    items: dict[str, Item] = {}

    def add_module(mod: types.ModuleType, prefix: str) -> None:
        names = _our_public_names(mod) if ours else _native_public_names(mod)
        for name in sorted(names):
            value = getattr(mod, name, _ABSENT)
            item = Item(_value_kind(value), value, None, name)
            items[prefix + name] = item
            if item.kind == "module":
                add_module(value, prefix + name + ".")
            elif item.kind == "class":
                for member, member_item in _class_members(value, ours).items():
                    items[f"{prefix}{name}.{member}"] = member_item

    add_module(module, "")
    return items


def _parent(qualname: str) -> str:
    return qualname.rpartition(".")[0]


# --------------------------------------------------------------------------- signatures


def _params(item: Item, native: bool) -> list[inspect.Parameter] | None:
    """The parameters callers pass (no self), or None if not introspectable."""
    if item.kind == "class":
        if native and not getattr(item.obj, "__text_signature__", None):
            return None  # no constructor exposed to Python
        target, drop_first = item.obj, False
    elif item.owner is not None:
        target = getattr(item.owner, item.name)
        drop_first = isinstance(item.obj, (types.FunctionType, types.MethodDescriptorType))
    else:
        target, drop_first = item.obj, False
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        if native:
            return None
        raise
    params = list(signature.parameters.values())
    return params[1:] if drop_first else params


def _shape(params: list[inspect.Parameter]) -> list[tuple[str, inspect._ParameterKind, bool]]:
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in params]


def _render(params: list[inspect.Parameter]) -> str:
    shown = [
        p.replace(annotation=inspect.Parameter.empty, default=...)
        if p.default is not inspect.Parameter.empty
        else p.replace(annotation=inspect.Parameter.empty)
        for p in params
    ]
    return str(inspect.Signature(shown))


# --------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    native: dict[str, Item]
    ours: dict[str, Item]
    missing: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)
    signature: dict[str, str] = field(default_factory=dict)
    signatures_compared: set[str] = field(default_factory=set)


_COMPATIBLE_KINDS = {
    "property": {"property", "value", "attribute"},
}


def _compare_kinds(name: str, n: Item, o: Item, result: Comparison) -> bool:
    if o.kind not in _COMPATIBLE_KINDS.get(n.kind, {n.kind}):
        result.kind[name] = f"native is a {n.kind}, ours is a {o.kind}"
        return False
    if n.kind == "value" and type(n.obj) is not type(o.obj):
        result.kind[name] = (
            f"native is a {type(n.obj).__name__} value, ours a {type(o.obj).__name__}"
        )
        return False
    if n.kind == "class":
        native_bases = [b for b in n.obj.__mro__ if _is_builtin(b) and b is not object]
        lacking = [b.__name__ for b in native_bases if not issubclass(o.obj, b)]
        if lacking:
            result.kind[name] = f"native derives from {', '.join(lacking)}, ours does not"
            return False
        if issubclass(o.obj, BaseException) and not issubclass(n.obj, BaseException):
            result.kind[name] = "ours is an exception class, native is not"
            return False
    return True


@cache
def _compare() -> Comparison:
    native_module = _load_native()
    assert native_module is not None
    result = Comparison(
        _surface(native_module, ours=False), _surface(importlib.import_module(OURS), ours=True)
    )
    matched: set[str] = {""}  # names present on both sides with compatible kinds
    for name in sorted(result.native, key=lambda q: q.count(".")):
        n = result.native[name]
        if _parent(name) not in matched:
            continue  # reported at the parent
        o = result.ours.get(name)
        if o is None:
            result.missing[name] = f"native {n.kind}"
            continue
        if not _compare_kinds(name, n, o, result):
            continue
        matched.add(name)
        if n.kind in ("function", "method", "class"):
            native_params = _params(n, native=True)
            if native_params is None:
                continue
            our_params = _params(o, native=False)
            assert our_params is not None
            result.signatures_compared.add(name)
            if _shape(native_params) != _shape(our_params):
                result.signature[name] = (
                    f"native {_render(native_params)}, ours {_render(our_params)}"
                )
    for name, o in sorted(result.ours.items()):
        if name not in result.native and o.kind != "attribute" and _parent(name) in matched:
            result.extra[name] = f"our {o.kind}"
    return result


def _unlisted(found: dict[str, str], section: str) -> list[str]:
    listed = _ledger()[section]
    return [f"{name}: {what}" for name, what in sorted(found.items()) if name not in listed]


# --------------------------------------------------------------------------- tests: surface


def test_native_module_loaded_from_the_wheel_file(native: types.ModuleType) -> None:
    assert native.__name__ == PRIVATE_NAME
    assert native.__file__ and native.__file__.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )
    assert sys.modules.get(PRIVATE_NAME) is None
    # Independent of the hook: if it is active, the served name is ours, not this.
    served = sys.modules.get(NATIVE)
    assert served is None or served is not native
    assert isinstance(native.envconfig, types.ModuleType)


def test_every_native_name_exists_in_ours(native: types.ModuleType) -> None:
    problems = _unlisted(_compare().missing, "missing")
    assert not problems, (
        "native API that dbosify._native lacks (implement it, or add it to "
        f"{LEDGER_PATH.name} [[missing]] with a reason):\n  " + "\n  ".join(problems)
    )


def test_every_public_name_of_ours_exists_natively(native: types.ModuleType) -> None:
    problems = _unlisted(_compare().extra, "extra")
    assert not problems, (
        "public names of dbosify._native that the native module lacks (make them private, "
        f"or add them to {LEDGER_PATH.name} [[extra]] with a reason):\n  " + "\n  ".join(problems)
    )


def test_kinds_match(native: types.ModuleType) -> None:
    comparison = _compare()
    problems = [f"{name}: {what}" for name, what in sorted(comparison.kind.items())]
    assert not problems, "kind differs from the native module:\n  " + "\n  ".join(problems)
    # Spot checks that the surfaces were read as intended.
    assert comparison.native["ClientRef"].kind == "class"
    assert comparison.native["connect_client"].kind == "function"
    assert comparison.native["envconfig"].kind == "module"
    assert comparison.native["EphemeralServerRef.target"].kind == "property"
    assert comparison.native["WorkerRef.validate"].kind == "method"


def test_signatures_match(native: types.ModuleType) -> None:
    comparison = _compare()
    problems = _unlisted(comparison.signature, "signature")
    assert not problems, (
        "parameters differ from the native signature (names, kinds, order, defaults); fix "
        f"ours, or add to {LEDGER_PATH.name} [[signature]] with a reason:\n  "
        + "\n  ".join(problems)
    )
    # pyo3 exposes these; if it stopped doing so this test would compare nothing.
    for name in (
        "connect_client",
        "new_worker",
        "envconfig.load_client_connect_config",
        "ClientRef.update_metadata",
        "WorkerRef.request_workflow_eviction",
        "CustomSlotSupplier",
    ):
        assert name in comparison.signatures_compared, name


def test_ledger_entries_still_hold(native: types.ModuleType) -> None:
    comparison = _compare()
    ledger = _ledger()
    stale: list[str] = []
    for name in ledger["missing"]:
        if name not in comparison.native:
            stale.append(f"[[missing]] {name}: not in the native module")
        elif name not in comparison.missing:
            stale.append(f"[[missing]] {name}: dbosify._native has it now")
    for name in ledger["extra"]:
        if name not in comparison.extra:
            stale.append(f"[[extra]] {name}: no longer an extra public name of ours")
    for name in ledger["signature"]:
        if name not in comparison.signatures_compared:
            stale.append(f"[[signature]] {name}: not a compared signature")
        elif name not in comparison.signature:
            stale.append(f"[[signature]] {name}: the signatures match now")
    assert not stale, f"{LEDGER_PATH.name} entries that no longer apply:\n  " + "\n  ".join(stale)


# --------------------------------------------------------------------------- wheel usage


@dataclass(frozen=True)
class Use:
    name: str  # e.g. "connect_client", "envconfig.load_client_config", "WorkerRef.validate"
    where: str  # "temporalio/bridge/worker.py:180"
    how: str  # "await" (call awaited), "discard" (call result dropped), "call", or ""


def _temporalio_root() -> Path:
    return _bridge_dirs()[0].parent


def _files_using_native() -> list[Path]:
    root = _temporalio_root()
    files = {root / "bridge" / f"{name}.py" for name in BRIDGE_MODULES}
    for path in root.rglob("*.py"):
        if "temporal_sdk_bridge" in path.read_text(encoding="utf-8", errors="replace"):
            files.add(path)
    return sorted(files)


def _module_name(path: Path) -> str:
    rel = path.relative_to(_temporalio_root().parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class _StringAnnotations(ast.NodeTransformer):
    """Parse string annotations into expressions, so they are analysed like the rest."""

    @staticmethod
    def _parse(node: ast.expr | None) -> ast.expr | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                return ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return node
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = self._parse(node.annotation)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AnnAssign:
        self.generic_visit(node)
        node.annotation = self._parse(node.annotation) or node.annotation
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        node.returns = self._parse(node.returns)
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
        self.generic_visit(node)
        node.returns = self._parse(node.returns)
        return node


_Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class _File:
    path: Path
    module: str
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]
    aliases: dict[str, str]  # local name -> native path ("" is the module itself)


class _UsageAnalysis:
    """What temporalio's Python code uses of the native module.

    Types are strings: ``native:<Class>`` for a native class, ``py:<module>:<Class>``
    for a class defined in one of the analysed files. Attribute types come from
    ``self.x = ...`` assignments, parameter annotations, local assignments and
    :data:`NATIVE_RETURNS`, iterated to a fixed point.
    """

    def __init__(self, native_items: dict[str, Item]) -> None:
        self.native_items = native_items
        self.files = [self._read(path) for path in _files_using_native()]
        self.classes: dict[str, ast.ClassDef] = {}
        self.owner: dict[_Function, str] = {}  # method -> class key
        for f in self.files:
            for node in f.tree.body:
                if isinstance(node, ast.ClassDef):
                    key = f"{f.module}:{node.name}"
                    self.classes[key] = node
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self.owner[item] = key
        self.attr_types: dict[tuple[str, str], str] = {}
        self.uses: set[Use] = set()
        self.unresolved: list[str] = []
        self._solve()
        for f in self.files:
            self._collect(f)

    # -- parsing

    def _read(self, path: Path) -> _File:
        tree = _StringAnnotations().visit(ast.parse(path.read_text(encoding="utf-8")))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and (
                        alias.name == NATIVE or alias.name.startswith(NATIVE + ".")
                    ):
                        aliases[alias.asname] = alias.name[len(NATIVE) + 1 :]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == NATIVE or node.module.startswith(NATIVE + "."):
                    sub = node.module[len(NATIVE) + 1 :]
                    for alias in node.names:
                        aliases[alias.asname or alias.name] = ".".join(
                            filter(None, [sub, alias.name])
                        )
                elif node.module == "temporalio.bridge":
                    for alias in node.names:
                        if alias.name == "temporal_sdk_bridge":
                            aliases[alias.asname or alias.name] = ""
        return _File(path, _module_name(path), tree, parents, aliases)

    def _where(self, f: _File, node: ast.AST) -> str:
        rel = f.path.relative_to(_temporalio_root().parent)
        return f"{rel.as_posix()}:{getattr(node, 'lineno', 0)}"

    @staticmethod
    def _dotted(expr: ast.AST) -> list[str] | None:
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        parts.append(expr.id)
        return parts[::-1]

    def _native_path(self, f: _File, expr: ast.AST) -> str | None:
        parts = self._dotted(expr)
        if parts is None:
            return None
        dotted = ".".join(parts)
        if dotted == NATIVE or dotted.startswith(NATIVE + "."):
            return dotted[len(NATIVE) + 1 :]
        if parts[0] in f.aliases:
            return ".".join(filter(None, [f.aliases[parts[0]], *parts[1:]]))
        return None

    # -- typing

    def _annotation_type(self, f: _File, expr: ast.expr | None) -> str | None:
        if expr is None:
            return None
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):  # X | None
            return self._annotation_type(f, expr.left) or self._annotation_type(f, expr.right)
        if isinstance(expr, ast.Subscript):  # Optional[X]
            return self._annotation_type(f, expr.slice)
        path = self._native_path(f, expr)
        if path is not None:
            item = self.native_items.get(path)
            return f"native:{path}" if item is not None and item.kind == "class" else None
        parts = self._dotted(expr)
        if parts is None:
            return None
        key = f"{f.module}:{parts[0]}" if len(parts) == 1 else f"{'.'.join(parts[:-1])}:{parts[-1]}"
        return f"py:{key}" if key in self.classes else None

    def _returns(self, name: str) -> str | None:
        target = NATIVE_RETURNS.get(name)
        return f"native:{target}" if target else None

    def _expr_type(self, f: _File, expr: ast.AST, env: dict[str, str | None]) -> str | None:
        if isinstance(expr, ast.Await):
            return self._expr_type(f, expr.value, env)
        if isinstance(expr, ast.Name):
            return env.get(expr.id)
        if isinstance(expr, ast.Call):
            path = self._native_path(f, expr.func)
            if path is not None:
                return self._returns(path)
            if isinstance(expr.func, ast.Attribute):
                owner = self._expr_type(f, expr.func.value, env)
                if owner and owner.startswith("native:"):
                    return self._returns(f"{owner[7:]}.{expr.func.attr}")
            return self._annotation_type(f, expr.func)  # constructor of an analysed class
        if isinstance(expr, ast.Attribute):
            owner = self._expr_type(f, expr.value, env)
            if owner is None:
                return None
            if owner.startswith("native:"):
                return self._returns(f"{owner[7:]}.{expr.attr}")
            return self.attr_types.get((owner[3:], expr.attr))
        return None

    def _env(self, f: _File, fn: _Function) -> dict[str, str | None]:
        env: dict[str, str | None] = {}
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        owner = self.owner.get(fn)
        is_static = any(
            isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list
        )
        for index, arg in enumerate(args):
            if index == 0 and owner is not None and not is_static:
                env[arg.arg] = f"py:{owner}"
            else:
                env[arg.arg] = self._annotation_type(f, arg.annotation)
        # Local names bound once (or always to the same type).
        for node in self._body_nodes(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id not in {a.arg for a in args}:
                    typ = self._expr_type(f, node.value, env)
                    if target.id in env and env[target.id] != typ:
                        env[target.id] = None
                    else:
                        env[target.id] = typ
        return env

    @staticmethod
    def _body_nodes(fn: _Function) -> Iterator[ast.AST]:
        """Nodes of a function, not descending into nested functions or classes."""
        stack: list[ast.AST] = [*fn.args.defaults, *fn.body]
        while stack:
            node = stack.pop(0)
            yield node
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    stack.append(child)

    def _functions(self, f: _File) -> Iterator[_Function]:
        for node in ast.walk(f.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield node

    def _solve(self) -> None:
        for _ in range(20):
            found: dict[tuple[str, str], set[str | None]] = {}
            for f in self.files:
                for fn in self._functions(f):
                    owner = self.owner.get(fn)
                    if owner is None:
                        continue
                    env = self._env(f, fn)
                    for node in self._body_nodes(fn):
                        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
                            continue
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                        for target in targets:
                            if (
                                isinstance(target, ast.Attribute)
                                and isinstance(target.value, ast.Name)
                                and env.get(target.value.id) == f"py:{owner}"
                                and node.value is not None
                                and not (
                                    isinstance(node.value, ast.Constant)
                                    and node.value.value is None
                                )
                            ):
                                typ = self._expr_type(f, node.value, env)
                                if typ is None and isinstance(node, ast.AnnAssign):
                                    typ = self._annotation_type(f, node.annotation)
                                found.setdefault((owner, target.attr), set()).add(typ)
            solved = {k: next(iter(v)) for k, v in found.items() if len(v) == 1 and None not in v}
            solved = {k: v for k, v in solved.items() if v is not None}
            if solved == self.attr_types:
                return
            self.attr_types = solved
        raise AssertionError("attribute typing did not converge")

    # -- collecting uses

    def _how(self, f: _File, node: ast.AST) -> str:
        parent = f.parents.get(node)
        if isinstance(parent, ast.Call) and parent.func is node:
            grandparent = f.parents.get(parent)
            if isinstance(grandparent, ast.Await):
                return "await"
            if isinstance(grandparent, ast.Expr):
                return "discard"
            return "call"
        return ""

    def _collect(self, f: _File) -> None:
        # Static references: imports, and dotted names through the module or an alias.
        for node in ast.walk(f.tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == NATIVE or node.module.startswith(NATIVE + "."):
                    for alias in node.names:
                        name = f.aliases[alias.asname or alias.name]
                        self.uses.add(Use(name, self._where(f, node), ""))
        self._collect_static(f, f.tree)
        # Members used on native objects, typed per function.
        for fn in self._functions(f):
            env = self._env(f, fn)
            for node in self._body_nodes(fn):
                if not isinstance(node, ast.Attribute) or isinstance(node.ctx, ast.Store):
                    continue
                owner = self._expr_type(f, node.value, env)
                if owner is not None and owner.startswith("native:"):
                    self.uses.add(
                        Use(f"{owner[7:]}.{node.attr}", self._where(f, node), self._how(f, node))
                    )
                elif owner is None and self._looks_like_ref(node.value):
                    self.unresolved.append(
                        f"{self._where(f, node)}: {ast.unparse(node)} (add its type to NATIVE_RETURNS?)"
                    )

    def _collect_static(self, f: _File, node: ast.AST) -> None:
        if isinstance(node, (ast.Attribute, ast.Name)):
            path = self._native_path(f, node)
            if path is not None and not isinstance(getattr(node, "ctx", None), ast.Store):
                if path:
                    self.uses.add(Use(path, self._where(f, node), self._how(f, node)))
                return  # the longest dotted name through the module is the use
        for child in ast.iter_child_nodes(node):
            self._collect_static(f, child)

    @staticmethod
    def _looks_like_ref(expr: ast.AST) -> bool:
        """``x._ref`` or a name ``ref``: where temporalio keeps native objects by convention."""
        if isinstance(expr, ast.Attribute):
            return expr.attr == "_ref"
        return isinstance(expr, ast.Name) and expr.id == "ref"


def _our_object(name: str, comparison: Comparison) -> Any:
    item = comparison.ours.get(name)
    if item is None:
        return _ABSENT
    if item.owner is not None:
        return getattr(item.owner, item.name, _ABSENT)
    return item.obj


@cache
def _analysis() -> _UsageAnalysis:
    return _UsageAnalysis(_compare().native)


def test_wheel_python_code_uses_only_what_we_provide(
    native: types.ModuleType, ours: types.ModuleType
) -> None:
    comparison = _compare()
    analysis = _analysis()
    root = _temporalio_root()
    for name in BRIDGE_MODULES:
        assert (root / "bridge" / f"{name}.py").is_file(), f"temporalio/bridge/{name}.py is gone"

    assert not analysis.unresolved, (
        "uses of native objects whose type the analysis cannot derive:\n  "
        + "\n  ".join(analysis.unresolved)
    )
    used = {use.name for use in analysis.uses}
    assert EXPECTED_USES <= used, f"analysis missed {sorted(EXPECTED_USES - used)}"

    missing_ok = _ledger()["missing"]
    problems: list[str] = []
    for use in sorted(analysis.uses, key=lambda u: (u.name, u.where, u.how)):
        if use.name not in comparison.native:
            problems.append(f"{use.where}: {use.name} is not in the native module (analysis bug?)")
            continue
        if use.name in missing_ok:
            continue
        obj = _our_object(use.name, comparison)
        if obj is _ABSENT:
            if use.name not in comparison.ours:
                problems.append(f"{use.where}: uses {use.name}, which dbosify._native lacks")
            continue
        if use.how == "await" and not inspect.iscoroutinefunction(obj):
            problems.append(f"{use.where}: awaits {use.name}(), ours is not a coroutine function")
        if use.how == "discard" and inspect.iscoroutinefunction(obj):
            problems.append(
                f"{use.where}: drops the result of {use.name}(), ours is a coroutine function"
            )
    assert not problems, "\n".join(problems)


def test_native_returns_table_names_native_api(native: types.ModuleType) -> None:
    items = _compare().native
    for source, target in NATIVE_RETURNS.items():
        assert source in items, source
        assert items.get(target) is not None and items[target].kind == "class", target
