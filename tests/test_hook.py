"""Tests of the import hook, its activation paths and the ``dbosify run`` command.

Almost everything here runs in fresh interpreters (subprocesses of the test
venv's Python, where dbosify is installed editable together with its
``dbosify-activate.pth``), because activation is about interpreter start-up and
about which modules get loaded at all.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import dbosify._hook as hook

REPO = Path(__file__).resolve().parent.parent
PTH_NAME = "dbosify-activate.pth"
NATIVE = "temporalio.bridge.temporal_sdk_bridge"

# Code run in a child interpreter: prints what it found as one JSON line.
PROBE = textwrap.dedent(
    """
    import json, os, sys
    dbosify_preloaded = "dbosify" in sys.modules
    import temporalio.client, temporalio.worker
    native = sys.modules["temporalio.bridge.temporal_sdk_bridge"]
    bridge_dir = os.path.join(os.path.dirname(temporalio.__file__), "bridge")
    so_files = sorted(
        f for f in (getattr(m, "__file__", None) for m in list(sys.modules.values()))
        if f and f.startswith(bridge_dir) and not f.endswith((".py", ".pyc"))
    )
    try:
        with open("/proc/self/maps") as fh:
            mapped = "temporal_sdk_bridge" in fh.read()
    except OSError:
        mapped = None
    print(json.dumps({
        "dbosify_preloaded": dbosify_preloaded,
        "is_dbosify": native is sys.modules.get("dbosify._native"),
        "native_file": getattr(native, "__file__", None),
        "so_files": so_files,
        "mapped": mapped,
        "env": os.environ.get("DBOSIFY_ACTIVATE"),
    }))
    """
)


def _env(activate: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(hook.ENV_VAR, None)
    env.pop("PYTHONPATH", None)
    if activate is not None:
        env[hook.ENV_VAR] = activate
    env.update(extra)
    return env


def _run(
    args: list[str],
    *,
    activate: str | None = None,
    cwd: Path | None = None,
    check: bool = True,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args,
        env=_env(activate, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args!r} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def _py(code: str, *, activate: str | None = None, cwd: Path | None = None) -> Any:
    """Run ``code`` in a fresh interpreter and return its last stdout line as JSON."""
    proc = _run([sys.executable, "-c", code], activate=activate, cwd=cwd)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", autouse=True)
def _pth_installed() -> None:
    """These tests need dbosify installed (``scripts/test`` does ``pip install -e``)."""
    found = [Path(d) / PTH_NAME for d in site.getsitepackages() if (Path(d) / PTH_NAME).exists()]
    if not found:
        pytest.fail(
            f"{PTH_NAME} is not installed in {sys.prefix}; run the tests with scripts/test "
            "(which installs dbosify editable into .venv)"
        )


# ---------------------------------------------------------------- the .pth file


def test_pth_file_installed_matches_repo() -> None:
    installed = [
        Path(d) / PTH_NAME for d in site.getsitepackages() if (Path(d) / PTH_NAME).exists()
    ]
    assert installed
    assert installed[0].read_text() == (REPO / PTH_NAME).read_text()


def test_pth_is_a_single_import_line_agreeing_with_the_hook() -> None:
    lines = (REPO / PTH_NAME).read_text().splitlines()
    assert len(lines) == 1
    line = lines[0]
    # site only executes lines starting with "import" + space/tab.
    assert line.startswith("import ")
    assert f'"{hook.ENV_VAR}"' in line
    assert repr(hook.ACTIVATE_VALUES).replace("'", '"') in line
    assert ".strip().lower()" in line
    assert "install_from_env" in line


def test_pth_sorts_after_editable_path_files() -> None:
    editable_names = [
        "_editable_impl_dbosify.pth",
        "_dbosify.pth",
        "__editable__.dbosify-0.1.0.pth",
    ]
    for name in editable_names:
        assert sorted([PTH_NAME, name]) == [name, PTH_NAME]


@pytest.mark.parametrize("value", [None, "", "0", "false", "no", "yes"])
def test_inactive_costs_no_import(value: str | None) -> None:
    out = _py(
        "import json, sys; print(json.dumps(["
        "'dbosify' in sys.modules, any(type(f).__module__.startswith('dbosify') "
        "for f in sys.meta_path)]))",
        activate=value,
    )
    assert out == [False, False]


# ---------------------------------------------------------------- activation by environment


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True", " true "])
def test_env_activation_serves_dbosify_native(value: str) -> None:
    out = _py(PROBE, activate=value)
    assert out["dbosify_preloaded"] is True
    assert out["is_dbosify"] is True
    assert out["so_files"] == []
    assert out["mapped"] in (False, None)
    assert out["native_file"] is not None and "dbosify" in out["native_file"]


def test_unset_loads_real_native_module() -> None:
    out = _py(PROBE)
    assert out["dbosify_preloaded"] is False
    assert out["is_dbosify"] is False
    assert out["native_file"].endswith(".so")
    if out["mapped"] is not None:
        assert out["mapped"] is True


def test_identity_and_envconfig_submodule() -> None:
    out = _py(
        textwrap.dedent(
            """
            import json, sys
            import temporalio.envconfig
            import temporalio.bridge.temporal_sdk_bridge.envconfig as via_import
            import dbosify._native as n
            m = sys.modules
            print(json.dumps({
                "same": m["temporalio.bridge.temporal_sdk_bridge"] is m["dbosify._native"],
                "attr": temporalio.bridge.temporal_sdk_bridge is n,
                "envconfig_attr": temporalio.envconfig._bridge_envconfig is n.envconfig,
                "envconfig_import": via_import is n.envconfig,
                "envconfig_modules": m["temporalio.bridge.temporal_sdk_bridge.envconfig"]
                    is n.envconfig,
                "envconfig_plain": not hasattr(n.envconfig, "__path__"),
                "own_name": n.__name__,
                "own_spec": n.__spec__.name,
                "first": type(sys.meta_path[0]).__name__,
            }))
            """
        ),
        activate="1",
    )
    assert out == {
        "same": True,
        "attr": True,
        "envconfig_attr": True,
        "envconfig_import": True,
        "envconfig_modules": True,
        "envconfig_plain": True,
        "own_name": "dbosify._native",
        "own_spec": "dbosify._native",
        "first": out["first"],
    }


def test_install_is_idempotent_and_moves_finder_first() -> None:
    out = _py(
        textwrap.dedent(
            """
            import importlib.abc, json, sys
            import dbosify, dbosify._hook as h
            class Other(importlib.abc.MetaPathFinder):
                def find_spec(self, *a, **k): return None
            dbosify.activate()
            sys.meta_path.insert(0, Other())
            dbosify.activate(); h.install()
            import temporalio.client
            dbosify.activate()
            print(json.dumps([
                sum(isinstance(f, h.DbosifyFinder) for f in sys.meta_path),
                isinstance(sys.meta_path[0], h.DbosifyFinder),
                h.is_installed(),
            ]))
            """
        )
    )
    assert out == [1, True, True]


def test_explicit_activate_without_env() -> None:
    out = _py("import dbosify; dbosify.activate()\n" + PROBE)
    assert out["is_dbosify"] is True
    assert out["so_files"] == []


# ---------------------------------------------------------------- children inherit


def test_subprocess_child_inherits(tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(PROBE)
    parent = tmp_path / "parent.py"
    parent.write_text(
        textwrap.dedent(
            f"""
            import subprocess, sys
            out = subprocess.run([sys.executable, {str(child)!r}], capture_output=True,
                                 text=True, check=True)
            print(out.stdout.strip().splitlines()[-1])
            """
        )
    )
    # Started with the variable set in the environment...
    out = json.loads(_run([sys.executable, str(parent)], activate="1").stdout.splitlines()[-1])
    assert out["is_dbosify"] is True and out["so_files"] == []
    # ...and started through `python -m dbosify run`, which must export it.
    proc = _run([sys.executable, "-m", "dbosify", "run", str(parent)])
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["is_dbosify"] is True and out["env"] == "1"


SPAWN_SCRIPT = """
import json, multiprocessing, sys

def probe(_):
    import temporalio.worker
    mod = sys.modules["temporalio.bridge.temporal_sdk_bridge"]
    return [mod is sys.modules.get("dbosify._native"), getattr(mod, "__file__", "")]

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        print(json.dumps(pool.map(probe, [0])[0]))
"""


def test_multiprocessing_spawn_child_inherits(tmp_path: Path) -> None:
    script = tmp_path / "spawner.py"
    script.write_text(SPAWN_SCRIPT)
    out = json.loads(_run([sys.executable, str(script)], activate="1").stdout.splitlines()[-1])
    assert out[0] is True
    proc = _run([sys.executable, "-m", "dbosify", "run", str(script)], cwd=tmp_path)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out[0] is True
    # Control: without activation the spawn child loads the compiled module.
    out = json.loads(_run([sys.executable, str(script)]).stdout.splitlines()[-1])
    assert out[0] is False and out[1].endswith(".so")


# ---------------------------------------------------------------- activation errors


def test_activate_after_real_import_raises_clear_error() -> None:
    out = _py(
        textwrap.dedent(
            """
            import json, temporalio.client, dbosify, dbosify._hook as h
            try:
                dbosify.activate()
            except RuntimeError as e:
                print(json.dumps([type(e).__name__, str(e), h.is_installed()]))
            """
        )
    )
    assert out[0] == "ActivatedTooLateError"
    assert out[1] == (
        "temporalio was imported before dbosify was activated; set DBOSIFY_ACTIVATE=1 in the "
        "environment before the interpreter starts, or call dbosify.activate() before "
        "importing temporalio"
    )
    assert out[2] is False


def test_unsupported_version_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hook, "_installed_temporalio_version", lambda: "1.36.0")
    with pytest.raises(hook.UnsupportedTemporalioError, match=r"temporalio 1\.36\.0 is installed"):
        hook._check_temporalio()
    monkeypatch.setattr(hook, "_installed_temporalio_version", lambda: "1.34.9")
    with pytest.raises(ImportError, match=r">=1\.35\.0,<1\.36"):
        hook._check_temporalio()
    monkeypatch.setattr(hook, "_installed_temporalio_version", lambda: None)
    with pytest.raises(ImportError, match="temporalio is not installed"):
        hook._check_temporalio()
    monkeypatch.setattr(hook, "_installed_temporalio_version", lambda: "1.35.2")
    hook._check_temporalio()


def test_installed_version_is_read_from_metadata() -> None:
    import importlib.metadata

    assert hook._installed_temporalio_version() == importlib.metadata.version("temporalio")


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("1.35.0", True),
        ("1.35", True),
        ("1.35.7", True),
        ("1.35.1.post2", True),
        ("1.35.0+local", True),
        ("1.35.0rc1", False),
        ("1.34.99", False),
        ("1.36.0", False),
        ("1.36.0rc1", False),
        ("1.36.0.dev0", False),
        ("2.0.0", False),
    ],
)
def test_version_range(version: str, ok: bool) -> None:
    assert hook.version_in_range(version, hook.SUPPORTED_TEMPORALIO) is ok


def test_failed_env_activation_prints_one_line_and_blocks_native() -> None:
    proc = _run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import dbosify._hook as h
                h._installed_temporalio_version = lambda: "9.9.9"
                print(h.install_from_env({"DBOSIFY_ACTIVATE": "1"}))
                try:
                    import temporalio.client
                except ImportError as e:
                    print("ImportError:", e)
                else:
                    print("imported")
                """
            ),
        ]
    )
    assert proc.stdout.splitlines()[0] == "False"
    assert proc.stdout.splitlines()[1].startswith(
        "ImportError: dbosify: DBOSIFY_ACTIVATE is set but dbosify could not be activated: "
        "dbosify supports temporalio>=1.35.0,<1.36, but temporalio 9.9.9 is installed"
    )
    assert proc.stderr.strip().splitlines() == [
        "dbosify: DBOSIFY_ACTIVATE is set but dbosify could not be activated: dbosify supports "
        "temporalio>=1.35.0,<1.36, but temporalio 9.9.9 is installed; install a supported "
        "temporalio or a dbosify release that supports 9.9.9"
    ]


def test_env_requests_activation_values() -> None:
    for value in ("1", "true", "TRUE", "tRuE", " 1\n"):
        assert hook.env_requests_activation({hook.ENV_VAR: value})
    for value in ("", "0", "false", "yes", "on", "2"):
        assert not hook.env_requests_activation({hook.ENV_VAR: value})
    assert not hook.env_requests_activation({})
    assert hook.install_from_env({}) is False


# ---------------------------------------------------------------- what the finder claims


def test_finder_claims_only_mapped_names() -> None:
    finder = hook.DbosifyFinder()
    for name in (
        "temporalio",
        "temporalio.client",
        "temporalio.bridge",
        "temporalio.bridge.client",
        "temporalio.bridge.temporal_sdk_bridgex",
        "temporalio.contrib.foo",
        "temporalio.somethingelse",
        "temporalio_ext",
        "dbosify._native",
    ):
        assert finder.find_spec(name, None) is None, name
    spec = finder.find_spec(NATIVE, None)
    assert spec is not None and spec.name == NATIVE
    sub = finder.find_spec(NATIVE + ".envconfig", None)
    assert sub is not None and sub.name == NATIVE + ".envconfig"


def test_mapping_table() -> None:
    assert hook.MODULE_MAP[NATIVE] == "dbosify._native"
    assert hook._target_for(NATIVE) == "dbosify._native"
    assert hook._target_for(NATIVE + ".envconfig") == "dbosify._native.envconfig"
    assert hook._target_for(NATIVE + ".other.deep") == "dbosify._native.other.deep"
    assert hook._target_for("temporalio.bridge") is None


# ---------------------------------------------------------------- dbosify run


RUN_SCRIPT = """
import json, os, sys
print(json.dumps({
    "argv": sys.argv,
    "name": __name__,
    "main_is_me": sys.modules["__main__"].__dict__ is globals(),
    "env": os.environ.get("DBOSIFY_ACTIVATE"),
    "hook": any(type(f).__name__ == "DbosifyFinder" for f in sys.meta_path),
    "path0": sys.path[0],
}))
import temporalio.client
print(json.dumps(
    sys.modules["temporalio.bridge.temporal_sdk_bridge"] is sys.modules["dbosify._native"]
))
"""


def test_python_m_dbosify_run_script(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(RUN_SCRIPT)
    proc = _run([sys.executable, "-m", "dbosify", "run", str(script), "a", "b"], cwd=REPO)
    first, second = proc.stdout.strip().splitlines()[-2:]
    info = json.loads(first)
    assert info == {
        "argv": [str(script), "a", "b"],
        "name": "__main__",
        "main_is_me": True,
        "env": "1",
        "hook": True,
        "path0": str(tmp_path),
    }
    assert json.loads(second) is True


def test_python_m_dbosify_run_module(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(RUN_SCRIPT)
    proc = _run(
        [sys.executable, "-m", "dbosify", "run", "-m", "mypkg.app", "x", "--y"], cwd=tmp_path
    )
    info = json.loads(proc.stdout.strip().splitlines()[-2])
    assert info["argv"] == [str(pkg / "app.py"), "x", "--y"]
    assert info["name"] == "__main__"
    assert info["hook"] is True and info["env"] == "1"
    assert json.loads(proc.stdout.strip().splitlines()[-1]) is True


def test_console_script_run(tmp_path: Path) -> None:
    exe = shutil.which("dbosify", path=str(Path(sys.executable).parent))
    assert exe is not None, "the dbosify console script is not installed next to python"
    script = tmp_path / "app.py"
    script.write_text(RUN_SCRIPT)
    proc = _run([exe, "run", str(script), "--flag"], cwd=REPO)
    info = json.loads(proc.stdout.strip().splitlines()[-2])
    assert info["argv"] == [str(script), "--flag"]
    assert info["path0"] == str(tmp_path)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) is True


def test_run_propagates_exit_code_and_reports_usage_errors(tmp_path: Path) -> None:
    script = tmp_path / "exit3.py"
    script.write_text("import sys; sys.exit(3)\n")
    assert _run([sys.executable, "-m", "dbosify", "run", str(script)], check=False).returncode == 3
    missing = _run([sys.executable, "-m", "dbosify", "run", str(tmp_path / "nope.py")], check=False)
    assert missing.returncode == 2 and "can't open file" in missing.stderr
    assert _run([sys.executable, "-m", "dbosify"], check=False).returncode == 2
    assert _run([sys.executable, "-m", "dbosify", "bogus"], check=False).returncode == 2
    assert "usage:" in _run([sys.executable, "-m", "dbosify", "--help"]).stdout


# ---------------------------------------------------------------- sitecustomize template


def test_sitecustomize_template_activates(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text((REPO / "sitecustomize_template").read_text())
    # Run the template without the .pth having acted (variable unset at start-up),
    # then with it set the way sitecustomize would see it.
    out = _py(
        textwrap.dedent(
            f"""
            import json, os, runpy, sys
            before = "dbosify" in sys.modules
            runpy.run_path({str(tmp_path / "sitecustomize.py")!r})
            idle = "dbosify" in sys.modules
            os.environ["DBOSIFY_ACTIVATE"] = "TRUE"
            runpy.run_path({str(tmp_path / "sitecustomize.py")!r})
            import temporalio.client
            print(json.dumps([before, idle,
                sys.modules["temporalio.bridge.temporal_sdk_bridge"] is sys.modules["dbosify._native"]]))
            """
        )
    )
    assert out == [False, False, True]
    # As a real sitecustomize on PYTHONPATH, together with the .pth: still one finder.
    proc = _run(
        [
            sys.executable,
            "-c",
            "import sys, sitecustomize, dbosify._hook as h; "
            "print(sitecustomize.__file__, sum(isinstance(f, h.DbosifyFinder) for f in sys.meta_path))",
        ],
        activate="1",
        PYTHONPATH=str(tmp_path),
    )
    path, count = proc.stdout.split()
    assert path == str(tmp_path / "sitecustomize.py") and count == "1"
    assert proc.stderr == ""
