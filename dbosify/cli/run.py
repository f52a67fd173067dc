"""``dbosify run app.py [args]`` / ``dbosify run -m module [args]``.

``run`` activates dbosify in this interpreter, sets ``DBOSIFY_ACTIVATE=1`` in
the environment (so child interpreters, including ``multiprocessing`` spawn
children, activate too through the installed ``.pth`` file), then runs the
script or module as ``__main__`` exactly as ``python app.py`` / ``python -m
module`` would.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence


def _error(message: str) -> int:
    print(f"dbosify: error: {message}", file=sys.stderr)
    print("run `dbosify --help` for usage", file=sys.stderr)
    return 2


def _activate() -> None:
    from dbosify._hook import ENV_VAR, install

    os.environ[ENV_VAR] = "1"
    install()


def run_main(rest: Sequence[str]) -> int:
    """``dbosify run ...`` with everything after ``run``; parsed by hand, as ``python`` would."""
    rest = list(rest)
    module: str | None = None
    if not rest:
        return _error("run needs a script path or -m MODULE")
    if rest[0] == "-m":
        if len(rest) < 2:
            return _error("-m needs a module name")
        module, script_args = rest[1], rest[2:]
    elif rest[0].startswith("-m") and len(rest[0]) > 2:
        module, script_args = rest[0][2:], rest[1:]
    elif rest[0] == "--":
        if len(rest) < 2:
            return _error("run needs a script path")
        target, script_args = rest[1], rest[2:]
    elif rest[0].startswith("-"):
        return _error(f"unknown option {rest[0]!r}")
    else:
        target, script_args = rest[0], rest[1:]

    if module is None and not os.path.exists(target):
        return _error(f"can't open file {target!r}: no such file or directory")

    try:
        _activate()
    except (ImportError, RuntimeError) as exc:
        print(f"dbosify: error: {exc}", file=sys.stderr)
        return 1

    if module is not None:
        # Like `python -m`: the current directory comes first on sys.path.
        sys.argv = [module, *script_args]  # runpy replaces argv[0] with the file path
        _set_path0(os.getcwd())
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        # Like `python script.py`: the script's directory comes first on sys.path.
        sys.argv = [target, *script_args]
        _set_path0(os.path.dirname(os.path.abspath(target)))
        runpy.run_path(target, run_name="__main__")
    return 0


def _set_path0(directory: str) -> None:
    # sys.path[0] is currently the directory of whatever started us: the
    # current directory for `python -m dbosify`, the bin directory for the
    # `dbosify` console script. Replace it as the interpreter would have, unless
    # safe-path mode (-P / PYTHONSAFEPATH) says not to add it at all.
    if getattr(sys.flags, "safe_path", False):
        return
    if sys.path:
        sys.path[0] = directory
    else:
        sys.path.insert(0, directory)
